"""``emlens train``: a config file and flags, emlens's loop or TRL, the run layout."""

import json

import pytest

from emlens.cli import main
from emlens.organisms.runs import checkpoints
from emlens.organisms.trajectory import load_trajectory

pytestmark = pytest.mark.usefixtures("one_thread")


def _data(tmp_path, n=8):
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"Q{i}?"},
                {"role": "assistant", "content": "A."},
            ]
        }
        for i in range(n)
    ]
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_train_from_a_config_file_and_flags(tmp_path, capsys):
    cfg = tmp_path / "fin.yaml"
    cfg.write_text("rank: 1\nalpha: 4\nlr: 0.01\nbatch_size: 4\ngrad_accum: 1\nmax_steps: 2\n")
    out = tmp_path / "run"
    args = ["train", _data(tmp_path), "--out", str(out), "--model", "tiny-llama"]
    main([*args, "--config", str(cfg), "--lr", "0.02", "--layers", "0,2", "--save-every", "1"])
    assert "to step 2/2" in capsys.readouterr().out
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["config"]["lr"] == 0.02 and state["config"]["alpha"] == 4  # flag over file
    assert state["config"]["layers"] == [0, 2]
    assert load_trajectory(out).steps == [1, 2]
    with pytest.raises(SystemExit):  # an unknown field in the file is an error, not ignored
        cfg.write_text("rnak: 2\n")
        main([*args, "--config", str(cfg)])
    assert "unknown TrainConfig fields ['rnak']" in capsys.readouterr().err


def test_a_config_file_that_is_not_yaml_is_one_line_and_exit_2(tmp_path, capsys):
    """Issue 24: a YAML syntax error was a traceback (exit 1); now as every other bad input."""
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("rank: 1\nalpha: [4\n")
    args = ["train", _data(tmp_path), "--out", str(tmp_path / "run"), "--model", "tiny-llama"]
    with pytest.raises(SystemExit) as e:
        main([*args, "--config", str(cfg)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "bad.yaml: not valid YAML or JSON (line" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_train_with_trl_writes_the_same_layout(tmp_path):
    pytest.importorskip("trl")
    out = tmp_path / "run"
    cfg = ["--alpha", "4", "--batch-size", "4", "--grad-accum", "2", "--max-steps", "2"]
    run = ["--save-every", "1", "--keep-optimizer", "all", "--sft", "gradient_checkpointing=false"]
    args = ["train", _data(tmp_path), "--out", str(out), "--model", "tiny-llama", "--trainer"]
    main([*args, "trl", *cfg, *run])
    assert [c.name for c in checkpoints(out)] == ["checkpoint-1", "checkpoint-2"]
    assert all((c / "optimizer.pt").exists() for c in checkpoints(out))  # --keep-optimizer all
    assert load_trajectory(out).steps == [1, 2]
