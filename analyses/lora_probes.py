"""Finding 4: do the organism's LoRA scalars tell misaligned from aligned answers?

    .venv/bin/python analyses/lora_probes.py   # writes docs/results/lora_probes.*
    .venv/bin/python analyses/lora_probes.py --model tiny-llama --adapter /tmp/pc/run \\
        --out /tmp/probes                       # a smoke run on a phase_change.py smoke run

It probes the organism of analyses/phase_change.py (``--adapter``, default
out/phase_change/run), and runs that script first (about 30 min) when the default organism is
not there.

The scalar A . x of the rank-1 adapter at every answer token of emlens's general questions,
misaligned vs aligned answers (none of them in the narrow training data), then the L1
logistic-regression probe of ``emlens.organisms.probe_lora_scalars``, per token (split by
conversation) and per answer (mean scalar), against the untrained adapter (the run's step-1
checkpoint) as a control.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import _common as common

import emlens as eml
from emlens.organisms import checkpoints, load_unmerged, lora_scalars, probe_lora_scalars
from emlens.report import markdown_table

RUN = common.ROOT / "out/phase_change/run"


def options(p: argparse.ArgumentParser) -> None:
    p.set_defaults(adapter=str(RUN))
    p.add_argument("--control", default="checkpoint-1", help="the control, inside --adapter")


def main(run: common.Analysis) -> None:
    a = run.args
    organism = Path(a.adapter)
    if not (organism / "adapter_config.json").exists():
        if organism != RUN:
            raise SystemExit(f"no adapter at {organism} (a rank-1 run of analyses/phase_change.py)")
        print(f"no organism at {RUN}: training it with analyses/phase_change.py", flush=True)
        script = Path(__file__).with_name("phase_change.py")
        cmd = [sys.executable, str(script), "--model", a.model, "--run", str(RUN)]
        subprocess.run(cmd, check=True)
    pairs = eml.general_questions()
    mis = [eml.Conversation(p.question, p.misaligned) for p in pairs]
    ali = [eml.Conversation(p.question, p.aligned) for p in pairs]

    def probes(folder: Path) -> list[dict]:
        peft_model, tok = load_unmerged(a.model, folder, device=a.device, dtype=run.dtype)
        pos = lora_scalars(peft_model, tok, mis, progress=False)
        neg = lora_scalars(peft_model, tok, ali, progress=False)
        return [row(probe_lora_scalars(pos, neg, per_token=t), t) for t in (True, False)]

    step = checkpoints(organism)[-1].name.removeprefix("checkpoint-")
    rows = {
        f"trained (step {step})": run.stage("trained", lambda: probes(organism)),
        f"control: {a.control.replace('checkpoint-', 'step ')}": run.stage(
            "control", lambda: probes(organism / a.control)
        ),
    }
    render(run, rows, len(pairs))


def row(r, per_token: bool) -> dict:
    return {
        "unit": "token" if per_token else "answer",
        "accuracy": f"{r.accuracy:.3f} ± {r.accuracy_std:.3f}",
        "auc": f"{r.auc:.3f} ± {r.auc_std:.3f}",
        "coef": round(float(r.coef[0]), 3),
        "n_test": r.n_test,
    }


def render(run: common.Analysis, rows: dict[str, list[dict]], n_pairs: int) -> None:
    table = [{"adapter": name} | r for name, rs in rows.items() for r in rs]
    meta = run.meta(run=str(Path(run.args.adapter)).replace(f"{common.ROOT}/", ""), pairs=n_pairs)
    md = [
        f"{run.made_by()} (organism of `analyses/phase_change.py`; {n_pairs} general questions, "
        "misaligned vs aligned answers).",
        "",
        *markdown_table(table),
    ]
    run.write_beside({"meta": meta, "rows": table}, md)


if __name__ == "__main__":
    main(common.start(__file__, __doc__, options))
