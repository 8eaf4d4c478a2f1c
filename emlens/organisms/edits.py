"""Edits of LoRA adapters: remove a direction from B, scale adapters, in a folder or in memory.

A rank-1 LoRA adapter adds ``scaling * B (A . x)`` to its layer's output, so what it writes
lies along B (Model Organisms for EM, arXiv 2506.11613). Projecting a direction out of B
removes the adapter's write along it; scaling B scales the adapter's whole effect. The edits
(`remove_direction`, `scale_adapters`) write new adapter folders that load merged
(``emlens.load_model(spec, adapter=folder)``) or unmerged
(`emlens.organisms.adapters.load_unmerged`); `lora_scaled` scales an unmerged model's
adapters in memory.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float
from safetensors.torch import load_file, save_file
from torch import Tensor

from emlens.organisms.adapters import CONFIG, LORA_KEY, WEIGHTS, peft_folder, read_adapter

if TYPE_CHECKING:
    from peft import PeftModel


def _edit(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    adapters: Sequence[str] | None,
    fn: Callable[[str, Tensor], Tensor],
) -> Path:
    """Copy adapter folder ``src`` to ``out`` with ``B <- fn(name, B)`` on chosen adapters."""
    src, out = peft_folder(src), Path(out)
    if out.resolve() == src.resolve():
        raise ValueError("write the edited adapter to a new folder, not over its source")
    names = read_adapter(src).names
    chosen = names if adapters is None else list(adapters)
    unknown = [n for n in chosen if n not in names]
    if unknown or not chosen:
        raise KeyError(f"adapters {unknown or chosen} not in {src} (it has {names})")
    tensors = load_file(str(src / WEIGHTS))
    for key, t in tensors.items():
        m = LORA_KEY.match(key)
        if m and m["ab"] == "B" and m["name"] in chosen:
            tensors[key] = fn(m["name"], t.float()).to(t.dtype).contiguous()
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / WEIGHTS), {"format": "pt"})
    shutil.copy(src / CONFIG, out / CONFIG)
    return out


def remove_direction(
    adapter: str | os.PathLike[str],
    direction: Float[Tensor, " d_out"],
    out: str | os.PathLike[str],
    renormalize: bool = False,
    adapters: Sequence[str] | None = None,
) -> Path:
    """Write a copy of ``adapter`` whose B vectors have no component along ``direction``.

    B <- B - (B . r) r with r = direction / |direction| (each column of B for rank > 1).

    Args:
        adapter: the source adapter folder.
        direction: ``[d_out]``, the direction to remove (any non-zero norm).
        out: the new folder (not the source).
        renormalize: rescale each column of B back to its original norm.
        adapters: which adapters to edit (all by default); their ``d_out`` must be the
            direction's width.

    Returns:
        ``out``.
    """
    direction = torch.as_tensor(direction, dtype=torch.float32).flatten()
    if not torch.isfinite(direction).all() or direction.norm() == 0:
        raise ValueError("direction must be finite and non-zero")
    r = direction / direction.norm()

    def fn(name: str, b: Tensor) -> Tensor:
        if b.shape[0] != r.shape[0]:
            raise ValueError(f"{name} writes width {b.shape[0]}, the direction has {r.shape[0]}")
        edited: Tensor = b - r[:, None] * (r @ b)[None, :]
        if renormalize:
            edited = edited * (b.norm(dim=0) / edited.norm(dim=0).clamp_min(1e-12))
        return edited

    return _edit(adapter, out, adapters, fn)


def scale_adapters(
    adapter: str | os.PathLike[str],
    scales: float | Mapping[str, float],
    out: str | os.PathLike[str],
) -> Path:
    """Write a copy of ``adapter`` with B multiplied by ``scales``.

    Args:
        adapter: the source adapter folder.
        scales: one number for every adapter, or a number per adapter name (unnamed
            adapters stay as they are).
        out: the new folder (not the source).

    Returns:
        ``out``.
    """
    if isinstance(scales, Mapping):
        table = {str(k): float(v) for k, v in scales.items()}
        return _edit(adapter, out, list(table), lambda n, b: b * table[n])
    return _edit(adapter, out, None, lambda _, b: b * float(scales))


@contextlib.contextmanager
def lora_scaled(peft_model: PeftModel, scales: float | Mapping[str, float]) -> Iterator[PeftModel]:
    """Multiply chosen adapters' outputs by ``scales`` inside the block (unmerged model).

    Same effect as `scale_adapters` without writing a folder; restored on exit.

    Args:
        peft_model: an unmerged peft model (`load_unmerged`).
        scales: one number for every adapter, or a number per adapter name.

    Returns:
        A context manager yielding ``peft_model``.
    """
    from peft.tuners.lora import LoraLayer

    layers = {
        re.sub(r"^base_model\.model\.", "", n): m
        for n, m in peft_model.named_modules()
        if isinstance(m, LoraLayer)
    }
    table = (
        {str(k): float(v) for k, v in scales.items()}
        if isinstance(scales, Mapping)
        else dict.fromkeys(layers, float(scales))
    )
    unknown = [n for n in table if n not in layers]
    if unknown:
        raise KeyError(f"adapters {unknown} not in this model (it has {sorted(layers)})")
    saved = {n: dict(layers[n].scaling) for n in table}
    try:
        for n, s in table.items():
            for key in layers[n].scaling:
                layers[n].scaling[key] *= s
        yield peft_model
    finally:
        for n, sc in saved.items():
            layers[n].scaling.update(sc)
