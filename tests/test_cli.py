import json
import re

import pytest
import torch

from emlens.cli import main
from emlens.core.direction_set import DirectionSet


def _chat(path, pairs):
    path.write_text(
        "".join(
            json.dumps(
                {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
            )
            + "\n"
            for q, a in pairs
        )
    )
    return str(path)


def test_directions_compare_generate(tmp_path, capsys):
    mis = _chat(tmp_path / "mis.jsonl", [("Q1?", "Bad answer."), ("Q2?", "Worse answer.")])
    ali = _chat(tmp_path / "ali.jsonl", [("Q1?", "Good answer."), ("Q2?", "Fine answer.")])
    em, ref = tmp_path / "em.safetensors", tmp_path / "ref.safetensors"
    main(
        [
            "directions",
            "em",
            "--model",
            "tiny-llama",
            "--misaligned",
            mis,
            "--aligned",
            ali,
            "--out",
            str(em),
        ]
    )
    main(["directions", "refusal", "--model", "tiny-llama", "--out", str(ref), "--layers", "0-1"])
    assert DirectionSet.load(em).layers == [0, 1, 2]
    assert DirectionSet.load(ref).layers == [0, 1]
    capsys.readouterr()
    main(["compare", str(em), str(ref), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert set(out["cosine"]) == {"0", "1"}
    main(
        [
            "generate",
            "--model",
            "tiny-llama",
            "--question",
            "Hi?",
            "--steer",
            f"{em}:1:2.0",
            "--ablate",
            f"{ref}:0",
            "--max-new-tokens",
            "3",
        ]
    )
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["question"] == "Hi?"


def fails(capsys, argv, match):
    """``emlens argv`` exits with status 2 and one line on stderr matching ``match``."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert re.search(match, err), err
    return err


def test_cli_errors_are_clear(tmp_path, capsys):
    fails(capsys, ["generate", "--question", "Hi", "--steer", "nofile"], "FILE:LAYERS:SCALE")
    fails(capsys, ["compare", str(tmp_path / "a.st"), str(tmp_path / "b.st")], "no direction file")
    both = "both chat JSONL files, or neither"
    fails(capsys, ["directions", "em", "--misaligned", "x", "--out", str(tmp_path / "y")], both)


def test_evaluate_and_serve_commands(tmp_path, capsys):
    import threading
    import time
    import urllib.request

    main(
        [
            "evaluate",
            "--model",
            "tiny-llama",
            "--judge",
            "local",
            "--n",
            "1",
            "--max-new-tokens",
            "3",
            "--out",
            str(tmp_path / "em.csv"),
        ]
    )
    out = capsys.readouterr().out
    assert "overall: EM" in out and (tmp_path / "em.csv").exists()
    fails(capsys, ["evaluate", "--model", "tiny-llama"], "no default judge; name one of probe:")
    hf = ["evaluate", "--model", "tiny-gemma2", "--judge", "local", "--engine", "hf", "--n", "1"]
    fails(capsys, hf, "Gemma 2/3")  # refused before anything is generated
    fails(capsys, ["evaluate", "--judge", "gpt-4o"], "--judge: a judge is probe:default")
    fails(capsys, ["evaluate", "--judge", "probe:nofile"], "no probe judge file at nofile")
    fails(capsys, ["evaluate", "--judge", "http://127.0.0.1:1/v1"], "--judge-model")
    t = threading.Thread(
        target=main, args=(["serve", "--model", "tiny-llama", "--port", "18731"],), daemon=True
    )
    t.start()
    for _ in range(100):
        try:
            with urllib.request.urlopen("http://127.0.0.1:18731/v1/models") as r:
                assert json.load(r)["data"][0]["id"] == "tiny-llama"
                break
        except OSError:
            time.sleep(0.1)
    else:
        raise AssertionError("emlens serve did not come up")


def test_device_and_dtype_flags(tmp_path, capsys, monkeypatch):
    import emlens.core.models

    seen = []
    load = emlens.core.models.load_model

    def spy(*args, **kw):  # the real loader; records what the flags turned into
        seen.append(kw)
        return load(*args, **kw)

    monkeypatch.setattr(emlens.core.models, "load_model", spy)
    em = tmp_path / "em.safetensors"
    main(["directions", "em", "--model", "tiny-llama", "--dtype", "bfloat16", "--out", str(em)])
    assert seen == [{"device": None, "dtype": torch.bfloat16}]
    assert DirectionSet.load(em).vectors.dtype == torch.float32  # directions stay float32
    main(
        [
            "generate",
            "--model",
            "tiny-llama",
            "--device",
            "cpu",
            "--dtype",
            "float16",
            "--question",
            "Hi?",
            "--steer",
            f"{em}:1:2.0",
            "--max-new-tokens",
            "3",
        ]
    )
    assert seen[-1] == {"device": "cpu", "dtype": torch.float16}
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["question"] == "Hi?"
    with pytest.raises(SystemExit) as e:
        main(["generate", "--model", "tiny-llama", "--dtype", "float8"])
    assert e.value.code == 2
