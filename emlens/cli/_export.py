"""``emlens export``: an intervention baked into plain weights, as a folder any engine runs.

::

    emlens export --model unsloth/Qwen2.5-7B-Instruct --dtype bfloat16 \\
        --steer em.safetensors:15:4 --out out/steered      # a down_proj bias at block 15
    emlens export --model smollm2 --ablate em.safetensors:15 --out out/ablated
    vllm serve out/steered                                  # stock transformers / vLLM
"""

from __future__ import annotations

import argparse
from typing import Any

from emlens.cli._checks import interventions, out_folder
from emlens.cli._models import intervention_args, load, model_args


def add_parsers(sub: Any) -> None:
    """Register ``emlens export``."""
    x = sub.add_parser("export", help="write a steered or ablated model as a plain HF folder")
    model_args(x)
    intervention_args(x)  # --ablate FILE:LAYER: that layer's direction at every layer
    x.add_argument("--out", required=True, help="the folder to write")
    x.set_defaults(fn=cmd_export)


def cmd_export(a: argparse.Namespace) -> None:
    from emlens.core.export import export_hf

    if not a.steer and not a.ablate:
        raise ValueError("give --steer FILE:LAYERS:SCALE or --ablate FILE:LAYER to export")
    out_folder(a.out)
    model = load(a)
    out = export_hf(model, interventions(a, model), a.out)
    print(f"wrote {out}: loads in stock transformers; serve it with `vllm serve {out}`")
