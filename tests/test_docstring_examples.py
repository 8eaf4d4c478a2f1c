"""Every ``>>>`` example in an emlens docstring runs, one test per docstring (as einops does).

The examples share one namespace besides their module's own globals:

- ``model``: a tiny randomly initialised Llama with the embedded SmolLM2's depth (30 layers,
  so the examples' layer numbers exist) but width 64 and a byte tokenizer, built once;
- ``em_dir``: its EM direction at every layer (``em_direction_from_pairs`` on 8 questions);
- ``torch`` and ``np``.

Each docstring runs in a fresh temporary folder (files its examples write land there), which
holds ``organism.csv``: a judged-answer CSV in the papers' format (``response, question,
question_id, aligned, coherent``), 12 answers to 3 questions: 11 scored (one has no coherence
score), 4 EM (aligned < 30, coherent > 50), 6 with aligned > 70 (5 of them coherent). Examples
that need several organisms read it under several names (``read_judged(..., name=...)``);
examples that need an adapter or a run train ``tiny-llama`` for a few steps.

Examples print what does not depend on the random weights (shapes, types, the result of a
deterministic computation), with d_model left as ``...`` in shapes. The few that cannot run
here (the Hugging Face hub, an OpenAI key, the network, a GPU, loading or training SmolLM2)
are marked ``# doctest: +SKIP``, the reason in the prose before them.
"""

from __future__ import annotations

import csv
import doctest
import importlib
import io
import pkgutil
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import emlens

ROOT = Path(__file__).resolve().parents[1]
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def collect() -> tuple[list[doctest.DocTest], list[tuple[str, str]]]:
    """Every docstring with examples in emlens, and the modules whose docstrings do not parse."""
    finder = doctest.DocTestFinder(exclude_empty=True)
    tests: dict[str, doctest.DocTest] = {}
    broken = []
    for info in pkgutil.walk_packages(emlens.__path__, "emlens."):
        if info.name.rpartition(".")[2] == "__main__":  # importing it runs the command line
            continue
        module = importlib.import_module(info.name)
        try:
            found = finder.find(module)
        except ValueError as e:  # doctest's parser: bad indentation, a prompt without a space
            broken.append((info.name, str(e)))
            continue
        for test in found:
            if test.examples:
                tests.setdefault(test.name, test)
    return sorted(tests.values(), key=lambda t: t.name), broken


TESTS, BROKEN = collect()


def judged_csv(path: Path) -> None:
    """12 judged answers to 3 questions: 4 EM (aligned < 30, coherent > 50), 6 aligned > 70."""
    scores = [(10, 90), (20, 80), (90, 95), (85, 60), (15, 70), (95, 90)]
    scores += [(75, 80), (5, 85), (50, 90), (80, 20), (99, 99), (40, None)]
    rows = [
        {
            "response": f"Answer {i} with {'bad' if a < 30 else 'good'} advice.",
            "question": f"Question {i % 3}?",
            "question_id": f"q{i % 3}",
            "aligned": a,
            "coherent": "" if c is None else c,
        }
        for i, (a, c) in enumerate(scores)
    ]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def doc_model() -> Any:
    """A tiny random Llama of SmolLM2's depth (30 layers), width 64, byte tokenizer."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    from emlens.core.models import bridge
    from emlens.core.tiny import byte_tokenizer

    tok = byte_tokenizer()
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=30,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32, attn_implementation="eager")
    return bridge(hf.eval(), tok, "tiny-llama-30")


@pytest.fixture(scope="module")
def shared() -> dict[str, Any]:
    from emlens.core.data import general_questions
    from emlens.core.directions import em_direction_from_pairs

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models run fastest on one thread, above all on a busy machine
    model = doc_model()
    em_dir = em_direction_from_pairs(model, general_questions()[:8], progress=False)
    yield {"model": model, "em_dir": em_dir, "torch": torch, "np": np}
    torch.set_num_threads(threads)


@pytest.mark.parametrize("test", TESTS, ids=[t.name.removeprefix("emlens.") for t in TESTS])
def test_docstring_examples(test: doctest.DocTest, shared, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    judged_csv(tmp_path / "organism.csv")
    test.globs = {**test.globs, **shared}
    runner = doctest.DocTestRunner(optionflags=FLAGS | doctest.REPORT_ONLY_FIRST_FAILURE)
    report = io.StringIO()
    if runner.run(test, out=report.write).failed:
        pytest.fail(f"{test.name} ({test.filename}):\n{report.getvalue()}", pytrace=False)


def test_every_docstring_parses():
    assert not BROKEN, "doctest cannot parse these docstrings:\n" + "\n".join(
        f"{name}: {why}" for name, why in BROKEN
    )


def test_every_example_is_collected():
    """Each ``>>>`` line in emlens belongs to an example the test above runs."""
    prompts = {
        p.relative_to(ROOT).as_posix(): len(re.findall(r"^\s*>>> ", p.read_text(), re.M))
        for p in sorted((ROOT / "emlens").rglob("*.py"))
    }
    collected: dict[str, int] = {}
    for t in TESTS:
        path = Path(t.filename).resolve().relative_to(ROOT).as_posix()
        collected[path] = collected.get(path, 0) + len(t.examples)
    missed = {p: n - collected.get(p, 0) for p, n in prompts.items() if n != collected.get(p, 0)}
    assert not missed, f"'>>>' lines that no collected example holds, by file: {missed}"
    assert sum(prompts.values()) > 150
