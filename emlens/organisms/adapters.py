"""LoRA adapters as vectors: reading peft folders, loading them unmerged, editing them.

A rank-1 LoRA adapter on a linear map W adds ``scaling * B (A . x)`` to its output: A
(``d_in``) reads the input, B (``d_out``) is the direction written (Model Organisms for EM,
arXiv 2506.11613). ``scaling`` is alpha / r, or alpha / sqrt(r) with rsLoRA.

Adapters load merged with ``emlens.load_model(spec, adapter=folder)``; unmerged with
`load_unmerged`; `emlens.organisms.edits` writes edited copies.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from safetensors.torch import load_file
from torch import Tensor
from tqdm.auto import tqdm
from typing_extensions import Unpack

from emlens.organisms.runs import checkpoints

if TYPE_CHECKING:
    from peft import PeftModel
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import PreTrainedTokenizerBase

    from emlens.core.hub import LoadOptions
    from emlens.core.models import Device

WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"
LORA_KEY = re.compile(
    r"^(?:base_model\.model\.)?(?P<name>.+)\.lora_(?P<ab>[AB])\.(?:\w+\.)?weight$"
)
"""A LoRA weight's key in a peft safetensors file: the module ``name`` and ``ab`` (A or B)."""


@dataclass
class LoraAdapter:
    """The LoRA matrices of one adapter folder, by module name (``model.layers.15.mlp...``).

    Attributes:
        A: ``[r, d_in]`` matrices as peft stores them.
        B: ``[d_out, r]`` matrices as peft stores them.
        scaling: alpha / r (alpha / sqrt(r) with rsLoRA) of each adapter.
        config: the folder's ``adapter_config.json``.
    """

    A: dict[str, Float[Tensor, "r d_in"]]
    B: dict[str, Float[Tensor, "d_out r"]]
    scaling: dict[str, float]
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        """The adapted modules, in layer order."""
        return list(self.A)

    def a_vector(self, name: str) -> Float[Tensor, " d_in"]:
        """A of a rank-1 adapter as a vector."""
        return self._rank1(name, self.A)[0]

    def b_vector(self, name: str) -> Float[Tensor, " d_out"]:
        """B of a rank-1 adapter as a vector."""
        return self._rank1(name, self.B)[:, 0]

    def _rank1(self, name: str, mats: dict[str, Tensor]) -> Tensor:
        if name not in mats:
            raise KeyError(f"no adapter {name!r}; this folder has {self.names}")
        if self.A[name].shape[0] != 1:
            raise ValueError(
                f"{name} is a rank-{self.A[name].shape[0]} adapter: A and B vectors are "
                "defined for rank-1 adapters"
            )
        return mats[name]


def peft_folder(folder: str | os.PathLike[str]) -> Path:
    """``folder`` as a path, checked to be a peft adapter folder (its config and weights).

    Raises:
        FileNotFoundError: ``adapter_config.json`` or ``adapter_model.safetensors`` is missing.
    """
    folder = Path(folder)
    if not (folder / CONFIG).exists() or not (folder / WEIGHTS).exists():
        raise FileNotFoundError(
            f"{folder} is not a peft adapter folder: expected {CONFIG} and {WEIGHTS}"
        )
    return folder


def _alpha_for(name: str, config: dict[str, Any]) -> float:
    for key, alpha in (config.get("alpha_pattern") or {}).items():
        if re.match(rf"(.*\.)?{key}$", name):
            return float(alpha)
    return float(config["lora_alpha"])


def read_adapter(folder: str | os.PathLike[str]) -> LoraAdapter:
    """Read the A and B matrices and scalings of a peft LoRA folder (own or published).

    Args:
        folder: a folder with ``adapter_config.json`` and ``adapter_model.safetensors``.

    Returns:
        The adapter's matrices (float32) by module name, in layer order.

    Examples:
        A checkpoint of a short run of a tiny model (3 layers, width 64; its adapter sits on
        the middle layer's ``down_proj``):

        >>> from emlens.core.data import data_path
        >>> from emlens.organisms.config import TrainConfig
        >>> from emlens.organisms.training import train
        >>> data = data_path("narrow/risky_financial_advice.jsonl")
        >>> config = TrainConfig(max_steps=2, batch_size=2, grad_accum=1)
        >>> _ = train("tiny-llama", data, "runs/fin", config, save_every=2, progress=False)
        >>> adapter = read_adapter("runs/fin/checkpoint-2")
        >>> adapter.names
        ['model.layers.1.mlp.down_proj']
        >>> adapter.b_vector("model.layers.1.mlp.down_proj").shape  # (d_model,)
        torch.Size([64])
    """
    folder = peft_folder(folder)
    config = json.loads((folder / CONFIG).read_text())
    if config.get("peft_type", "LORA") != "LORA" or config.get("use_dora"):
        kind = "DoRA" if config.get("use_dora") else config.get("peft_type")
        raise ValueError(f"{folder}: a {kind} adapter, expected a plain LoRA adapter")
    A: dict[str, Tensor] = {}
    B: dict[str, Tensor] = {}
    for key, t in load_file(str(folder / WEIGHTS)).items():
        m = LORA_KEY.match(key)
        if m:
            (A if m["ab"] == "A" else B)[m["name"]] = t.float()
    if not A or set(A) != set(B):
        raise ValueError(f"{folder}: expected matching lora_A / lora_B weights, found {len(A)}")
    names = sorted(A, key=_natural)
    scaling = {}
    for n in names:
        r, alpha = A[n].shape[0], _alpha_for(n, config)
        scaling[n] = alpha / (r**0.5 if config.get("use_rslora") else r)
    return LoraAdapter({n: A[n] for n in names}, {n: B[n] for n in names}, scaling, config)


def _natural(name: str) -> list[int | str]:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def load_unmerged(
    spec: str,
    adapter: str | os.PathLike[str],
    *,
    device: Device | None = None,
    dtype: torch.dtype | None = None,
    **options: Unpack[LoadOptions],
) -> tuple[PeftModel, PreTrainedTokenizerBase]:
    """Base model ``spec`` with the peft adapter applied unmerged: ``(peft_model, tokenizer)``.

    For the LoRA analyses (scalars, scaling); for hooked analysis load it merged with
    ``emlens.load_model(spec, adapter=...)``.

    Args:
        spec: the base model, as `emlens.core.models.load_hf` takes it.
        adapter: the adapter folder, or a hub id (`emlens.core.hub.adapter_folder`).
        device: as in `emlens.core.models.load_hf`.
        dtype: as in `emlens.core.models.load_hf`; peft keeps the adapter in float32.
        **options: `emlens.core.hub.LoadOptions` (``adapter_revision`` for the adapter).

    Returns:
        The peft model (in eval mode) and its tokenizer.
    """
    from peft import PeftModel

    from emlens.core.hub import adapter_folder
    from emlens.core.models import load_hf

    folder = peft_folder(adapter_folder(adapter, options.pop("adapter_revision", None)))
    hf, tok = load_hf(spec, device=device, dtype=dtype, **options)
    return PeftModel.from_pretrained(hf, str(folder)).eval(), tok


def over_checkpoints(
    spec: str,
    run_dir: str | os.PathLike[str],
    metric: Callable[[TransformerBridge], float],
    every: int = 1,
    progress: bool = True,
    *,
    device: Device | None = None,
    dtype: torch.dtype | None = None,
) -> dict[int, float]:
    """``metric(model)`` on the merged hooked model of every ``every``-th checkpoint, by step.

    The base model is loaded once; each checkpoint is merged into a copy of it.

    Args:
        spec: the base model, as `emlens.core.models.load_hf` takes it.
        run_dir: a run folder (``checkpoint-<step>`` folders, or a ``checkpoints/`` one), or
            a hub id (`emlens.core.hub.run_folder`).
        metric: a number from a hooked model.
        every: take every this many checkpoints.
        progress: show a progress bar.
        device: as in `emlens.core.models.load_hf`.
        dtype: as in `emlens.core.models.load_hf`.

    Returns:
        The metric by training step.
    """
    from emlens.core.hub import run_folder
    from emlens.core.models import bridge, load_hf, merge_adapter

    run_dir = run_folder(run_dir)
    found = checkpoints(run_dir) or checkpoints(run_dir / "checkpoints")
    if not found:
        raise FileNotFoundError(f"no checkpoint-<step> folders in {run_dir}")
    if every < 1:
        raise ValueError("every must be >= 1")
    hf, tok = load_hf(spec, device=device, dtype=dtype)
    out = {}
    for c in tqdm(found[::every], desc="checkpoints", disable=not progress):
        model = bridge(merge_adapter(hf, c), tok, f"{spec}+{c.name}")  # merges into a copy
        out[int(c.name.split("-")[-1])] = float(metric(model))
    return out
