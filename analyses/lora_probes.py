"""Finding 4: do the organisms' LoRA scalars tell misaligned from aligned answers?

    .venv/bin/python analyses/lora_probes.py   # writes docs/results/lora_probes.*
    .venv/bin/python analyses/lora_probes.py --model tiny-llama --runs /tmp/org/runs \\
        --out /tmp/probes                       # a smoke run on an organisms.py smoke run

It probes the 9-adapter organisms of analyses/organisms.py (``--runs``, default out/organisms;
that script is run with ``--train-only`` first when they are not there): the financial and
the medical organism, the aligned control fine-tune (good medical advice, same schedule), and
the financial organism's first saved checkpoint (early in training).

The scalar A . x of each rank-1 adapter at every answer token of emlens's general questions,
misaligned vs aligned answers (none of them in the narrow training data), then the L1
logistic-regression probe of ``emlens.organisms.probe_lora_scalars``, per token (split by
conversation) and per answer (mean scalar). With nine adapters the L1 penalty has something
to select: the table gives how many adapters keep a weight and the largest ones.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import _common as common
import organisms

import emlens as eml
from emlens.organisms import checkpoints, load_unmerged, lora_scalars, probe_lora_scalars
from emlens.report import markdown_table

RUNS = common.ROOT / "out/organisms"


def options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", default=str(RUNS), help="the organisms' folder (organisms.py)")
    p.add_argument("--C", type=float, default=1.0, help="inverse L1 strength of the probe")


def main(run: common.Analysis) -> None:
    a = run.args
    if a.adapter:
        raise SystemExit("lora_probes probes the organisms in --runs; --adapter is not read")
    folders = organisms.folders(a.runs)
    if any(not (f / "adapter_config.json").exists() for f in folders.values()):
        script = Path(__file__).with_name("organisms.py")
        cmd = [sys.executable, str(script), "--model", a.model, "--runs", a.runs, "--train-only"]
        print(f"organisms missing in {a.runs}: training them ({' '.join(cmd[1:])})", flush=True)
        subprocess.run(cmd, check=True)
    first = checkpoints(folders["financial"])[0]
    step = first.name.removeprefix("checkpoint-")
    targets = {
        "financial": folders["financial"],
        "medical": folders["medical"],
        "control: good medical": folders["good_medical"],
        f"financial, step {step}": first,
    }
    pairs = eml.general_questions()
    mis = [eml.Conversation(p.question, p.misaligned) for p in pairs]
    ali = [eml.Conversation(p.question, p.aligned) for p in pairs]

    def probes(folder: Path) -> list[dict]:
        peft_model, tok = load_unmerged(a.model, folder, device=a.device, dtype=run.dtype)
        pos = lora_scalars(peft_model, tok, mis, progress=False)
        neg = lora_scalars(peft_model, tok, ali, progress=False)
        return [row(probe_lora_scalars(pos, neg, per_token=t, C=a.C), t) for t in (True, False)]

    rows = {
        name: run.stage("probe_" + re.sub(r"\W+", "_", name), lambda f=f: probes(f))
        for name, f in targets.items()
    }
    render(run, rows, targets, len(pairs))


def short(name: str) -> str:
    """An adapter's module name as its layer: ``...layers.15.mlp.down_proj...`` -> ``L15``."""
    m = re.search(r"layers\.(\d+)\.", name)
    return f"L{m.group(1)}" if m else name


def row(r, per_token: bool) -> dict:
    """One probe: scores, how many adapters keep a weight under L1, and the largest three."""
    coef = {short(n): c for n, c in r.coefficients().items()}
    top = sorted(coef.items(), key=lambda kv: -abs(kv[1]))[:3]
    return {
        "unit": "token" if per_token else "answer",
        "accuracy": f"{r.accuracy:.3f} ± {r.accuracy_std:.3f}",
        "auc": f"{r.auc:.3f} ± {r.auc_std:.3f}",
        "adapters_weighted": f"{sum(c != 0 for c in coef.values())} of {len(coef)}",
        "largest_weights": ", ".join(f"{n} {c:+.2f}" for n, c in top),
        "coef": {n: round(c, 4) for n, c in coef.items()},
        "n_test": r.n_test,
    }


def render(run: common.Analysis, rows: dict[str, list[dict]], targets: dict, n: int) -> None:
    table = [
        {"adapter": name} | {k: v for k, v in r.items() if k != "coef"}
        for name, rs in rows.items()
        for r in rs
    ]
    coefficients = {name: {r["unit"]: r["coef"] for r in rs} for name, rs in rows.items()}
    where = {k: str(v).replace(f"{common.ROOT}/", "") for k, v in targets.items()}
    meta = run.meta(organisms=where, pairs=n, C=run.args.C)
    n_adapters = len(next(iter(rows.values()))[0]["coef"])
    md = [
        f"{run.made_by()} ({n_adapters}-adapter organisms of `analyses/organisms.py`; {n} general "
        f"questions, misaligned vs aligned answers; L1 probe, C = {run.args.C}; each adapter's "
        "weight in `lora_probes.json`).",
        "",
        *markdown_table(table),
    ]
    run.write_beside({"meta": meta, "rows": table, "coefficients": coefficients}, md)


if __name__ == "__main__":
    main(common.start(__file__, __doc__, options))
