import argparse
import json
from pathlib import Path

import pytest
import torch

from analyses._common import ROOT, Analysis, command_line, start
from emlens import DirectionSet


def test_command_line_re_makes_the_recorded_command():
    a = argparse.Namespace(
        model="smollm2", adapter=None, device=None, dtype=None,
        out=str(ROOT / "docs/results/elasticity"), slice=64, probe=32,
        positive=[0, 64, 192], negative=[0, 4, 8, 16, 32, 64], held_out=32, lr=0.0002,
        seed=0, threads=1, train_only=False,
    )  # fmt: skip
    recorded = json.loads((ROOT / "docs/results/elasticity/summary.json").read_text())
    assert command_line("analyses/elasticity.py", a, ROOT) == recorded["command"]
    a.train_only = True  # a true flag is written bare
    assert command_line("x.py", a, ROOT).endswith("--threads 1 --train-only")


def options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n", type=int, default=3)


def test_start_parses_the_common_options_and_the_out_folder_comes_from_the_repo(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # not from the working directory
    run = start("analyses/example.py", "Doc.\n", options, ["--n", "4", "--dtype", "bfloat16"])
    assert run.out == ROOT / "docs/results/example"
    assert run.dtype is torch.bfloat16 and run.args.n == 4
    assert run.command == (
        "python analyses/example.py --model smollm2 --dtype bfloat16 "
        "--out docs/results/example --n 4 --threads 2"
    )
    assert run.beside(".json") == ROOT / "docs/results/example.json"
    assert not run.out.exists()  # nothing is written before a stage is computed


def run_in(tmp_path: Path, *argv: str) -> Analysis:
    return start("analyses/example.py", "Doc.\n", options, ["--out", str(tmp_path), *argv])


def test_a_stage_is_computed_once_then_loaded_as_saved(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"1": [0.5, None], "name": "x"}

    first = run_in(tmp_path).stage("table", compute)
    again = run_in(tmp_path).stage("table", compute)
    assert first == again == {"1": [0.5, None], "name": "x"} and len(calls) == 1
    assert json.loads((tmp_path / "stages/table.json").read_text()) == first
    assert set(run_in(tmp_path).times()) == {"table"}
    assert not list(tmp_path.rglob("*.tmp"))  # written through a temporary file, then renamed


def test_stages_keep_tensors_and_direction_sets(tmp_path):
    run = run_in(tmp_path)
    t = torch.arange(6.0).reshape(2, 3)
    ds = DirectionSet(torch.randn(2, 4), [3, 5], provenance={"kind": "em"})
    assert torch.equal(run.stage("t", lambda: t), t)
    got = run.stage("ts", lambda: {"b": t, "a": t[0].long()})
    assert list(got) == ["b", "a"]  # in the order computed
    assert torch.equal(got["b"], t) and got["a"].dtype == torch.long
    loaded = run.stage("dirs/em", lambda: ds)
    assert isinstance(loaded, DirectionSet) and loaded.layers == [3, 5]
    assert torch.equal(loaded.vectors, ds.vectors) and loaded.provenance == {"kind": "em"}
    assert (tmp_path / "stages/dirs/em.safetensors").exists()
    with pytest.raises(TypeError):
        run.stage("bad", lambda: object())


def test_a_rerun_with_other_arguments_stops_instead_of_mixing_stages(tmp_path):
    run_in(tmp_path, "--n", "4").stage("x", lambda: 1)
    run_in(tmp_path, "--n", "4", "--threads", "1")  # threads do not change results
    with pytest.raises(SystemExit, match="other values of \\['n'\\]"):
        run_in(tmp_path, "--n", "5")


def test_the_short_command_names_only_the_options_that_differ_from_their_defaults():
    def inputs(p: argparse.ArgumentParser) -> None:
        options(p)
        p.add_argument("--reference")

    def short(*argv: str) -> str:
        return start("analyses/example.py", "Doc.\n", inputs, list(argv)).short_command

    assert (
        short() == short("--threads", "1", "--reference", "/data") == "python analyses/example.py"
    )
    assert short("--n", "4", "--dtype", "bfloat16") == (
        "python analyses/example.py --dtype bfloat16 --n 4"
    )


def test_the_coherence_temperature_rule_is_the_one_stated():
    """The highest temperature whose coherence interval lies wholly above 0.5, else none."""
    import sys

    sys.path.insert(0, str(ROOT / "analyses"))
    from analyses.coherence_temperature import choose

    def r(t, lo):
        return {"temperature": t, "coherent_ci95": [lo, min(1.0, lo + 0.2)]}

    assert choose([r(0.3, 0.8), r(0.5, 0.6), r(0.7, 0.5), r(1.0, 0.1)]) == 0.5
    assert choose([r(0.3, 0.7), r(1.0, 0.55)]) == 1.0
    assert choose([r(0.3, 0.4), r(1.0, 0.1)]) is None


def test_the_steering_em_rate_rule_is_the_one_stated():
    """A cell steers into EM only when it is as coherent as unsteered (at most 10 points
    less), above every random direction, and its interval lies above the unsteered rate."""
    import sys

    sys.path.insert(0, str(ROOT / "analyses"))
    from analyses.steering_em_rate import verdict

    base = {"em_rate": 0.05, "coherent": 0.95}
    randoms = [{"em_rate": x} for x in (0.04, 0.10, 0.12)]

    def cell(rate, lo, coherent):
        return {"em_rate": rate, "em_interval": [lo, rate + 0.1], "coherent": coherent}

    assert verdict(cell(0.30, 0.10, 0.90), randoms, base)["steers_into_em"]
    assert not verdict(cell(0.30, 0.10, 0.80), randoms, base)["steers_into_em"]  # incoherent
    assert not verdict(cell(0.11, 0.06, 0.95), randoms, base)["steers_into_em"]  # a random wins
    v = verdict(cell(0.30, 0.04, 0.95), randoms, base)  # interval reaches the unsteered rate
    assert v["above_every_random"] and not v["steers_into_em"]
