"""The tutorial notebooks in docs/tutorials run top to bottom and produce sane numbers.

Each notebook is executed with nbclient on a short path: the cell tagged ``parameters`` is
replaced by smaller values, and one cell is appended that prints the notebook's ``summary``
dictionary and the kernel's ``sys.prefix`` as a JSON line, which the test parses.

The kernel is ipykernel's native kernel launched with this process's interpreter
(``sys.executable``): kernel specs on the machine (a user-level ``python3`` pointing at
another Python) are ignored, so the notebooks run in the environment under test. The kernel
inherits this process's environment, with ``OMP_NUM_THREADS=1`` unless it is set: on a busy
2-core machine two torch threads per process were 3x slower (their OpenMP barriers wait for
cores another process holds), enough for the generation cell to pass 300 s.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import nbclient
import nbformat
from jupyter_client.kernelspec import NATIVE_KERNEL_NAME, KernelSpecManager
from jupyter_client.manager import AsyncKernelManager

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "docs" / "tutorials"
MARK = "EMLENS_TUTORIAL_RESULT "

SHORT = {
    "01_directions.ipynb": (
        "N = 8\nN_REFUSAL = 8\nN_HELD = 6\nMAX_NEW_TOKENS = 12\nLAYER = 15\nSCALE = 4.0\n"
    ),
    "02_organisms.ipynb": "STEPS = 3\nBATCH_SIZE = 2\nLR = 1e-4\nN = 6\nN_EVAL = 4\n",
    "03_em_rate.ipynb": (
        "N = 1\nTEMPERATURE = 0.7\nMAX_NEW_TOKENS = 12\nLAYER = 15\nSCALE = 4.0\nN_RANDOM = 1\n"
    ),
}


def _kernel_manager() -> AsyncKernelManager:
    """A kernel manager whose only kernel is ipykernel's native one, run by sys.executable."""
    specs = KernelSpecManager(kernel_dirs=[], ensure_native_kernel=True)
    spec = specs.get_kernel_spec(NATIVE_KERNEL_NAME)
    assert spec.argv[0] == sys.executable, spec.argv
    return AsyncKernelManager(kernel_name=NATIVE_KERNEL_NAME, kernel_spec_manager=specs)


def _run(name: str, parameters: str | None) -> tuple[nbformat.NotebookNode, dict]:
    nb = nbformat.read(TUTORIALS / name, as_version=4)
    assert all(c.get("outputs", []) == [] for c in nb.cells), f"{name} is stored with outputs"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{name} needs exactly one cell tagged 'parameters'"
    if parameters is not None:
        tagged[0].source = parameters
    nb.cells.append(
        nbformat.v4.new_code_cell(
            "import json as _json, sys as _sys\n"
            f"print({MARK!r} + _json.dumps({{'prefix': _sys.prefix, 'summary': summary}}))"
        )
    )
    client = nbclient.NotebookClient(
        nb,
        km=_kernel_manager(),
        timeout=300,
        kernel_name=NATIVE_KERNEL_NAME,
        resources={"metadata": {"path": str(ROOT)}},  # the kernel's working directory
    )
    env = {"OMP_NUM_THREADS": "1", **os.environ, "HF_HUB_OFFLINE": "1"}
    client.execute(env={**env, "TOKENIZERS_PARALLELISM": "false"})
    lines = [
        line
        for out in nb.cells[-1].outputs
        if out.get("name") == "stdout"
        for line in out.text.splitlines()
        if line.startswith(MARK)
    ]
    assert len(lines) == 1, nb.cells[-1].outputs
    return nb, json.loads(lines[0][len(MARK) :])


def _finite(x) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def test_directions_tutorial_runs():
    _, result = _run("01_directions.ipynb", SHORT["01_directions.ipynb"])
    assert result["prefix"] == sys.prefix  # the kernel ran in this environment
    s = result["summary"]
    cos = s["cosine_per_layer"]
    assert len(cos) == s["n_layers"] == 30
    assert all(_finite(c) and -1 <= c <= 1 for c in cos)
    assert 0 < s["null_q95"] < 0.2
    assert set(s["contrastive"]) == {"baseline", "EM steer", "random steer"}
    for name, value in s["contrastive"].items():
        lo, hi = s["contrastive_ci95"][name]
        assert _finite(value) and lo <= value <= hi, name
    # steering with the EM direction makes misaligned answers relatively more likely than
    # the baseline does (the direction is fitted on other questions)
    assert s["contrastive"]["EM steer"] > s["contrastive"]["baseline"]
    assert _finite(s["kl_em_ablation"]) and s["kl_em_ablation"] > 0
    assert _finite(s["kl_random_ablation"]) and s["kl_random_ablation"] >= 0
    answers = s["answers"]
    assert answers["EM steer"] != answers["baseline"]
    # greedy answers are text, not one token repeated (a broken KV cache gives "I-------")
    for a in answers["baseline"]:
        assert len(set(a.split())) >= 3, answers["baseline"]


def test_organisms_tutorial_runs():
    _, result = _run("02_organisms.ipynb", SHORT["02_organisms.ipynb"])
    assert result["prefix"] == sys.prefix
    s = result["summary"]
    assert s["steps"] == [1, 2, 3]
    assert s["adapter"] == "model.layers.15.mlp.down_proj"
    norms = s["b_norm"]
    assert len(norms) == 3 and all(_finite(x) and x >= 0 for x in norms)
    assert norms[-1] > norms[0]  # B starts at zero and grows
    assert _finite(s["loss_first_step"]) and _finite(s["loss_end"])
    assert all(_finite(v) for v in s["general_gap"].values())
    # three saved steps: only step 2 has k = 1 defined, so no interior peak
    assert s["phase_change_step"] is None
    cos = s["cosine_organism_vs_base"]
    assert len(cos) == s["n_layers"] == 30
    assert all(_finite(c) and c > 0.9 for c in cos)  # a few steps barely move the model
    assert _finite(s["cos_b_vs_em"]) and -1 <= s["cos_b_vs_em"] <= 1
    # base and organism on one model: the switch changed the score, so it was applied
    assert _finite(s["contrastive_base"]) and _finite(s["contrastive_organism"])
    assert s["contrastive_organism"] != s["contrastive_base"]


def test_em_rate_tutorial_runs():
    _, result = _run("03_em_rate.ipynb", SHORT["03_em_rate.ipynb"])
    assert result["prefix"] == sys.prefix
    s = result["summary"]
    assert list(s["conditions"]) == ["unsteered", "EM direction", "random 0"]
    for name, c in s["conditions"].items():
        assert c["n"] == 12, name  # 12 free-form questions, one answer each, all read
        assert 0 <= c["low"] <= c["em"] <= c["high"] <= 1, name
        assert c["judge_error"] > 0 and c["high"] - c["low"] >= c["judge_error"], name
        assert 0 <= c["coherent"] <= 1, name
    answers = s["answers"]
    assert answers["EM direction"] != answers["unsteered"]  # the steer was applied
    assert all(a.strip() for a in answers["unsteered"])
