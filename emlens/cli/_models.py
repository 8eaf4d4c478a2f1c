"""Command-line options for loading models as researchers have them: a hub revision, an
adapter's revision, the attention kernel, 4/8-bit quantisation, remote code (off unless asked).

They go to `emlens.core.models.load_hf` / ``load_model`` as `emlens.core.hub.LoadOptions`::

    emlens generate --model unsloth/Qwen2.5-7B-Instruct --device cuda --dtype bfloat16 \\
        --adapter ModelOrganismsForEM/Qwen2.5-7B-Instruct_risky-financial-advice --question Hi
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from emlens.cli._checks import ablate_spec, device, steer_spec


def model_args(s: argparse.ArgumentParser) -> None:
    """Add ``--model``, ``--adapter``, ``--device``, ``--dtype`` and the load options below."""
    s.add_argument("--model", default="smollm2", help="smollm2, tiny-llama, a folder, a hub name")
    s.add_argument("--adapter", help="a peft LoRA adapter to merge: a folder or hub id")
    s.add_argument("--device", type=device, help="cpu (default), cuda, cuda:1, or auto")
    s.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="default float32")
    add_load_options(s)


def intervention_args(s: argparse.ArgumentParser) -> None:
    """Add ``--steer FILE:LAYERS:SCALE`` and ``--ablate FILE:LAYER`` (files read when parsed)."""
    s.add_argument(
        "--steer",
        action="append",
        default=[],
        type=steer_spec,
        help="FILE:LAYERS:SCALE (FILE: a direction file, or reference: the shipped judged EM one)",
    )
    s.add_argument(
        "--ablate",
        action="append",
        default=[],
        type=ablate_spec,
        help="FILE:LAYER (FILE as --steer)",
    )


def add_load_options(s: argparse.ArgumentParser) -> None:
    """Add ``--revision``, ``--adapter-revision``, ``--attn-implementation``, ``--quantize``
    and ``--trust-remote-code`` to a command that loads a model."""
    s.add_argument("--revision", help="the model's hub branch, tag or commit")
    s.add_argument("--adapter-revision", help="the adapter's hub branch, tag or commit")
    s.add_argument("--attn-implementation", help="eager, sdpa, flash_attention_2, ...")
    s.add_argument("--quantize", choices=["4bit", "8bit"], help="bitsandbytes (GPU)")
    s.add_argument("--trust-remote-code", action="store_true", help="run the repo's own model code")


def dtype_of(a: argparse.Namespace) -> torch.dtype | None:
    """``--dtype`` as a torch dtype (``None``: the default, float32)."""
    return None if getattr(a, "dtype", None) is None else getattr(torch, a.dtype)


def load_options(a: argparse.Namespace) -> dict[str, Any]:
    """The `emlens.core.hub.LoadOptions` the parsed arguments ask for (absent ones left out)."""
    out: dict[str, Any] = {
        k: getattr(a, k, None)
        for k in ("revision", "adapter_revision", "attn_implementation")
        if getattr(a, k, None) is not None
    }
    if getattr(a, "trust_remote_code", False):
        out["trust_remote_code"] = True
    if getattr(a, "quantize", None):
        from transformers import BitsAndBytesConfig

        four = a.quantize == "4bit"
        out["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=four,
            load_in_8bit=not four,
            bnb_4bit_compute_dtype=dtype_of(a) or torch.bfloat16,
        )
    return out


def load(a: argparse.Namespace) -> Any:
    """The hooked model of ``--model``/``--adapter`` on ``--device`` in ``--dtype``, with the
    load options above (`emlens.core.models.load_model`)."""
    from emlens.core.models import load_model

    return load_model(a.model, a.adapter, device=a.device, dtype=dtype_of(a), **load_options(a))
