"""What defines a fine-tuning run: the papers' rank-1 LoRA set-up as a frozen dataclass.

Model Organisms for EM (arXiv 2506.11613) makes emergently misaligned models by supervised
fine-tuning on narrow chat data, often with a single rank-1 LoRA adapter (rsLoRA) on the MLP
down-projection of one middle layer. The defaults of `TrainConfig` are that set-up: rank 1,
alpha 256, rsLoRA, ``down_proj``, learning rate 2e-5, 5 warm-up steps then a linear decay,
batch 2 x 8 accumulation, one epoch, weight decay 0.01 (AdamW in fp32 here; the papers used
8-bit AdamW on GPU).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedModel


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (and must match when a run is resumed).

    One optimizer step sees ``batch_size * grad_accum`` conversations.

    Attributes:
        rank: LoRA rank r.
        alpha: LoRA alpha; the adapter's scaling is alpha / r (alpha / sqrt(r) with rsLoRA).
        rslora: rank-stabilised scaling.
        target_modules: names of the linear layers that get an adapter.
        layers: the blocks that get adapters; ``None`` is one middle layer (``n_layers // 2``).
        dropout: LoRA dropout.
        full: train every parameter instead (the LoRA fields are then ignored).
        lr: peak learning rate.
        warmup_steps: linear warm-up steps before the linear decay to 0.
        weight_decay: AdamW weight decay.
        max_grad_norm: gradient clipping norm (``None``: no clipping).
        batch_size: conversations per micro-batch.
        grad_accum: micro-batches per optimizer step.
        epochs: passes over the data (fractions allowed).
        max_steps: optimizer steps; overrides ``epochs`` when set.
        seed: seeds the adapter's initialisation, dropout and the data order.
    """

    rank: int = 1
    alpha: float = 256.0
    rslora: bool = True
    target_modules: tuple[str, ...] = ("down_proj",)
    layers: tuple[int, ...] | None = None
    dropout: float = 0.0
    full: bool = False
    lr: float = 2e-5
    warmup_steps: int = 5
    weight_decay: float = 0.01
    max_grad_norm: float | None = 1.0
    batch_size: int = 2
    grad_accum: int = 8
    epochs: float = 1.0
    max_steps: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "target_modules", tuple(self.target_modules))
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(int(x) for x in self.layers))
        checks = {
            "rank >= 1": self.rank >= 1,
            "alpha > 0": self.alpha > 0,
            "0 <= dropout < 1": 0 <= self.dropout < 1,
            "lr > 0": self.lr > 0,
            "warmup_steps >= 0": self.warmup_steps >= 0,
            "weight_decay >= 0": self.weight_decay >= 0,
            "max_grad_norm > 0 or None": self.max_grad_norm is None or self.max_grad_norm > 0,
            "batch_size >= 1": self.batch_size >= 1,
            "grad_accum >= 1": self.grad_accum >= 1,
            "epochs > 0": self.epochs > 0,
            "max_steps >= 1 or None": self.max_steps is None or self.max_steps >= 1,
            "target_modules non-empty": self.full or len(self.target_modules) > 0,
            "layers non-empty and >= 0": self.layers is None
            or (len(self.layers) > 0 and min(self.layers) >= 0),
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid TrainConfig: expected {', '.join(bad)}; got {self}")

    def to_dict(self) -> dict[str, Any]:
        """The config as JSON-ready values (tuples as lists), as ``trainer_state.json`` holds it."""
        d = dataclasses.asdict(self)
        d["target_modules"] = list(self.target_modules)
        d["layers"] = None if self.layers is None else list(self.layers)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        """The config `to_dict` wrote; unknown fields are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {sorted(unknown)}")
        values: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()}
        return cls(**values)


def resolve_layers(hf: PreTrainedModel, config: TrainConfig) -> TrainConfig:
    """``config`` with ``layers`` filled in (the middle layer) and checked against ``hf``.

    Args:
        hf: the model the run trains.
        config: the run's config, ``layers`` possibly ``None``.

    Returns:
        A copy of ``config`` whose ``layers`` are explicit and exist in ``hf``.
    """
    n = hf.config.num_hidden_layers
    layers = config.layers if config.layers is not None else (n // 2,)
    bad = [x for x in layers if x >= n]
    if bad:
        raise ValueError(f"layers {bad} out of range: the model has layers 0..{n - 1}")
    return dataclasses.replace(config, layers=layers)
