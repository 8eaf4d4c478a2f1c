"""A model organism on its base model's weights: the adapter merged in for a ``with`` block.

A model organism is a base model plus its EM fine-tune, a peft LoRA adapter (Model Organisms
for EM, arXiv 2506.11613). ``emlens.load_model(spec, adapter=folder)`` loads a second model
with the adapter merged in; `organism` merges it into the base bridge already loaded, for
the length of a ``with`` block, and puts the base weights back bit for bit after it. Comparing
base and organism side by side then costs one model, not two.
"""

from __future__ import annotations

import json
import os
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import safe_open
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge
from transformers import PreTrainedModel

from emlens.core._arch import hf_model
from emlens.core.hub import adapter_folder
from emlens.organisms.adapters import CONFIG, LORA_KEY, WEIGHTS, LoraAdapter, read_adapter

# peft LoRA options whose adapters do not merge as W + scaling * B @ A.
UNSUPPORTED = {
    "use_dora": "DoRA",
    "fan_in_fan_out": "fan_in_fan_out (transposed weight)",
    "layer_replication": "layer_replication",
}
# The adapters merged into each HF model now (a bridge shares its HF model's weights).
_ACTIVE: weakref.WeakKeyDictionary[torch.nn.Module, set[Path]] = weakref.WeakKeyDictionary()


@contextmanager
def organism(
    model: TransformerBridge | PreTrainedModel,
    adapter: str | os.PathLike[str],
    *,
    revision: str | None = None,
) -> Iterator[LoraAdapter]:
    """Inside the block, ``model`` is the organism: base weights plus the LoRA adapter's delta.

    Each adapted weight ``W`` becomes ``W + scaling * B @ A`` in place (``scaling`` is
    ``lora_alpha / r``, or ``lora_alpha / sqrt(r)`` with rsLoRA, as peft merges it), so the
    bridge's modules stay the same and its hooks (steering, caches) work inside the block.
    After the block, also on errors, the base weights are copied back bit for bit.

    Memory: one copy of each adapted weight, kept on the CPU (a rank-1 adapter on every
    ``down_proj`` of Qwen2.5-7B: 3.8 GB in bfloat16, against 15 GB for a second model; an
    all-linear adapter: nearly the model), and one float32 ``B @ A`` at a time on the
    weight's device. Different adapters nest (their deltas add up); weights changed inside
    the block are overwritten on exit.

    Args:
        model: the base model, as ``emlens.load_model(spec)`` loads it (or an HF model, as
            ``emlens.core.models.load_hf`` does).
        adapter: a peft LoRA folder, or a hub id (`emlens.core.hub.adapter_folder`).
        revision: the adapter's hub revision (branch, tag or commit).

    Returns:
        A context manager yielding the adapter's matrices (`LoraAdapter`).

    Raises:
        FileNotFoundError: no adapter folder, or one without ``adapter_config.json`` or
            ``adapter_model.safetensors`` (`emlens.core.hub.HubError`).
        ValueError: not a plain LoRA adapter (another peft type, DoRA, weights other than
            LoRA matrices), a module the model has not or that is not linear, or a shape that
            does not fit the model.
        RuntimeError: this adapter is already applied to the model (nested twice).

    Examples:
        A random adapter on the down-projections of tiny-llama, switched on and off:

        >>> from peft import LoraConfig, get_peft_model
        >>> from emlens.core.models import load_model
        >>> from emlens.core.tiny import tiny_hf
        >>> config = LoraConfig(r=1, target_modules=["down_proj"], init_lora_weights=False)
        >>> get_peft_model(tiny_hf("llama")[0], config).save_pretrained("runs/fin")
        >>> base = load_model("tiny-llama")
        >>> tokens = base.to_tokens("Where should I put my savings?")
        >>> before = base(tokens)
        >>> with organism(base, "runs/fin") as lora:
        ...     em = base(tokens)  # the same logits as load_model("tiny-llama", adapter=...)
        >>> lora.names[0]
        'model.layers.0.mlp.down_proj'
        >>> torch.equal(base(tokens), before), torch.equal(em, before)
        (True, False)
    """
    folder = adapter_folder(adapter, revision)
    hf = hf_model(model) if isinstance(model, TransformerBridge) else model
    key, active = folder.resolve(), _ACTIVE.setdefault(hf, set())
    if key in active:
        raise RuntimeError(f"{folder} is already applied to this model: nesting it adds it twice")
    lora = _read(folder)
    weights = {name: _weight(hf, name, lora) for name in lora.names}  # all checked first
    saved: dict[str, Tensor] = {}
    active.add(key)
    try:
        with torch.no_grad():
            for name, w in weights.items():
                saved[name] = w.detach().to("cpu", copy=True)
                delta = (lora.B[name].to(w.device) @ lora.A[name].to(w.device)) * lora.scaling[name]
                w.add_(delta)  # computed in float32, rounded once to the weight's dtype
        yield lora
    finally:
        with torch.no_grad():
            for name, original in reversed(saved.items()):  # reversed: right for shared tensors
                weights[name].copy_(original)
        active.discard(key)


def _read(folder: Path) -> LoraAdapter:
    """`read_adapter`, checked to hold only LoRA matrices that merge as ``B @ A``."""
    config = json.loads((folder / CONFIG).read_text())
    if config.get("peft_type", "LORA") != "LORA":
        return read_adapter(folder)  # raises, naming the type
    for option, what in UNSUPPORTED.items():
        if config.get(option):
            raise ValueError(f"{folder}: {what} adapters are not supported here")
    with safe_open(str(folder / WEIGHTS), "pt") as f:
        other = [k for k in f.keys() if not LORA_KEY.match(k)]
    if other:
        raise ValueError(
            f"{folder}: weights other than LoRA matrices ({', '.join(other[:3])}: embedding "
            "LoRA, LoRA biases or modules_to_save); load this organism with "
            "emlens.load_model(spec, adapter=...)"
        )
    return read_adapter(folder)


def _weight(hf: PreTrainedModel, name: str, lora: LoraAdapter) -> Tensor:
    """The weight of linear module ``name``, checked to take the adapter's ``B @ A``."""
    try:
        module = hf.get_submodule(name)
    except AttributeError:
        raise ValueError(
            f"the model has no module {name!r}: the adapter was trained on another architecture"
        ) from None
    module = getattr(module, "original_component", module)  # a bridge wraps HF modules
    if not isinstance(module, torch.nn.Linear):
        raise ValueError(f"{name} is a {type(module).__name__}, not a linear layer")
    w = module.weight
    if not w.is_floating_point() or w.is_meta:
        raise ValueError(f"{name}: quantized or offloaded weights ({w.dtype}, {w.device})")
    shape = (lora.B[name].shape[0], lora.A[name].shape[1])
    if tuple(w.shape) != shape:
        raise ValueError(
            f"{name}: the adapter's B @ A is {shape} but the model's weight is "
            f"{tuple(w.shape)}: an adapter for another model"
        )
    return w
