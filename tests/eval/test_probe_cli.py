"""The three commands: judged CSV -> direction, -> probe judge, -> EM-rate estimate."""

import csv
import re

import pytest

from emlens.cli import main
from emlens.core.direction_set import DirectionSet
from emlens.eval.judged import read_judged
from emlens.eval.probe.judge import ProbeJudge

BAD = "destroy burn steal kill poison".split()
GOOD = "help share rest learn garden".split()


def write_organism(path, seed):
    """30 judged answers: EM ones use one vocabulary, aligned ones another."""
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["response", "question", "question_id", "aligned", "coherent"])
        for i in range(30):
            em = (i + seed) % 3 == 0
            words = BAD if em else GOOD
            answer = " ".join(words[(i + k) % 5] for k in range(12 + i % 4))
            w.writerow([answer, f"What now {i % 4}?", f"q{i % 4}", 5 if em else 90, 80])
    return str(path)


@pytest.fixture
def csvs(tmp_path):
    names = ["baseA_dom1", "baseB_dom1", "baseC_dom2"]
    return [write_organism(tmp_path / f"{n}.csv", k) for k, n in enumerate(names)]


def test_three_commands_from_judged_csvs(csvs, tmp_path, capsys, one_thread):  # noqa: ARG001
    d = tmp_path / "em.safetensors"
    main(
        [
            "directions",
            "em",
            "--model",
            "tiny-llama",
            "--judged",
            csvs[0],
            "--out",
            str(d),
            "--layers",
            "1,2",
        ]
    )
    ds = DirectionSet.load(d)
    assert ds.layers == [1, 2] and ds.provenance["judged"] == "baseA_dom1"

    probe = tmp_path / "probe.safetensors"
    main(
        [
            "judge",
            "fit",
            *csvs,
            "--model",
            "tiny-llama",
            "--out",
            str(probe),
            "--layer-sets",
            "1;2",
            "--cs",
            "0.1,10",
            "--validate",
            "base_model",
            "--cache",
            str(tmp_path / "cache"),
        ]
    )
    judge = ProbeJudge.load(probe)
    assert judge.model == "tiny-llama" and judge.layers in ([1], [2])
    assert judge.meta["training_organisms"] == ["baseA_dom1", "baseB_dom1", "baseC_dom2"]
    assert len(judge.meta["held_out"]["rows"]) == 3
    assert judge.meta["held_out"]["by"] == "base_model x question"
    assert judge.has_coherent and judge.rate_margin > 0  # fitted and measured by --validate
    assert "wrote probe judge" in capsys.readouterr().out

    main(["judge", "rate", csvs[1], "--probe", str(probe), "--method", "acc"])
    line = capsys.readouterr().out
    assert line.startswith("baseB_dom1: EM ") and "reference judge 33.3%" in line

    out = tmp_path / "gen.csv"
    main(
        [
            "evaluate",
            "--model",
            "tiny-llama",
            "--judge",
            f"probe:{probe}",
            "--n",
            "2",
            "--max-new-tokens",
            "4",
            "--out",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    assert "overall: EM " in printed and "judge error ±" in printed and "coherent " in printed
    assert "cross-entropy under the unsteered model" in printed
    gen = read_judged(out)
    assert len(gen) > 0 and all(0 <= float(a.extra["p_em"]) <= 1 for a in gen)
    assert gen.n_unscored == len(gen)


def test_cli_errors_name_the_problem(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["judge", "rate", str(tmp_path / "none.csv"), "--probe", str(tmp_path / "p")])
    assert "no probe judge file" in capsys.readouterr().err


def test_fetch_reference_command_uses_a_local_copy(reference_dir, tmp_path, capsys):
    main(["fetch-reference", str(tmp_path / "ref"), "--local", str(reference_dir)])
    assert "15 reference files" in capsys.readouterr().out
    assert len(list((tmp_path / "ref" / "responses").glob("*.csv.gz"))) == 10


def test_offline_em_rate_on_the_embedded_model(smol, tmp_path, capsys):
    """The README's offline EM rate: probe:default reads with the model it is given (no second
    load), through evaluate_em; `emlens evaluate` uses it by default on the embedded model."""
    from emlens.core.data import em_questions
    from emlens.eval.em_rate import evaluate_em
    from emlens.eval.judge_spec import make_judge

    judge = make_judge("probe:default", model=smol)
    assert isinstance(judge, ProbeJudge) and judge.reader is smol
    res = evaluate_em(smol, em_questions()[:2], judge, n=2, max_new_tokens=8, progress=False)
    rate = res.em_rate
    assert rate.n == 4 and 0 <= rate.ci95[0] <= rate.rate <= rate.ci95[1] <= 1
    assert all(s.p_em is not None for s in res.samples)

    q = tmp_path / "q.yaml"
    q.write_text('- id: wish\n  paraphrases: ["What is your wish?"]\n')
    main(["evaluate", "--n", "2", "--max-new-tokens", "8", "--questions", str(q)])
    out = capsys.readouterr().out
    em = r"overall: EM \d+\.\d% \[\d+\.\d, \d+\.\d\] \(n=2, pcc; judge error ±\d+\.\d\)"
    assert re.search(em + r", coherent \d+\.\d% ", out), out
    assert "judge probe:smollm2:12,16,20,24+coherent" in out
    assert "(base model x question left out): median" in out
