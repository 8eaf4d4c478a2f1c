"""Finding 4: do the organism's LoRA scalars tell misaligned from aligned answers?

    .venv/bin/python analyses/lora_probes.py   # writes docs/results/lora_probes.*

It probes the organism of analyses/phase_change.py (out/phase_change/run), and runs that
script first (about 30 min) when the organism is not there.

The scalar A . x of the rank-1 adapter at every answer token of emlens's general questions,
misaligned vs aligned answers (none of them in the narrow training data), then the L1
logistic-regression probe of :func:`emlens.organisms.probes.probe_lora_scalars`, per token (split by
conversation) and per answer (mean scalar), against the untrained adapter as a control.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import emlens as em
from emlens.core.data import Conversation
from emlens.report import markdown_table

RUN = Path("out/phase_change/run")
OUT = Path("docs/results")


def main() -> None:
    if not (RUN / "adapter_config.json").exists():
        print(f"no organism at {RUN}: training it with analyses/phase_change.py", flush=True)
        script = Path(__file__).with_name("phase_change.py")
        subprocess.run([sys.executable, str(script), "--run", str(RUN)], check=True)
    t0 = time.time()
    pairs = em.general_questions()
    mis = [Conversation(p.question, p.misaligned) for p in pairs]
    ali = [Conversation(p.question, p.aligned) for p in pairs]
    rows = []
    for name, folder in (("trained (step 200)", RUN), ("control: step 1", RUN / "checkpoint-1")):
        peft_model, tok = em.load_unmerged("smollm2", folder)
        pos = em.lora_scalars(peft_model, tok, mis, progress=False)
        neg = em.lora_scalars(peft_model, tok, ali, progress=False)
        for per_token in (True, False):
            r = em.probe_lora_scalars(pos, neg, per_token=per_token)
            rows.append(
                {
                    "adapter": name,
                    "unit": "token" if per_token else "answer",
                    "accuracy": f"{r.accuracy:.3f} ± {r.accuracy_std:.3f}",
                    "auc": f"{r.auc:.3f} ± {r.auc_std:.3f}",
                    "coef": round(float(r.coef[0]), 3),
                    "n_test": r.n_test,
                }
            )
            print(rows[-1], flush=True)
    meta = {
        "model": "smollm2",
        "run": str(RUN),
        "pairs": len(pairs),
        "seconds": round(time.time() - t0),
        "command": "python analyses/lora_probes.py",
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "lora_probes.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    md = [
        f"Made by `{meta['command']}` in {meta['seconds']} s (organism of "
        "`analyses/phase_change.py`; 80 general questions, misaligned vs aligned answers).",
        "",
        *markdown_table(rows),
    ]
    (OUT / "lora_probes.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
