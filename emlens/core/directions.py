"""Direction sets: one vector per layer with its provenance, and the papers' directions.

- EM direction (Convergent Linear Representations of EM, arXiv 2506.11618): mean activation
  over answer tokens of misaligned answers minus that of aligned answers, per layer.
- Refusal direction (Arditi et al. 2024): mean activation at post-instruction positions of
  harmful instructions minus that of harmless ones, per layer.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any

import torch
from jaxtyping import Float
from safetensors.torch import load_file, save_file
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from emlens.core.activations import RESID_POST, ActivationSummary, collect_means
from emlens.core.data import Conversation, QAPair, dataset_hash
from emlens.core.models import model_name
from emlens.core.tokens import answer_tokens, post_instruction_tokens


@dataclass
class DirectionSet:
    """One direction per layer (``vectors[i]`` belongs to ``layers[i]``) with provenance."""

    vectors: Float[Tensor, "n_layers d_model"]
    layers: list[int]
    hook: str = RESID_POST
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.vectors = torch.as_tensor(self.vectors, dtype=torch.float32)
        self.layers = [int(x) for x in self.layers]
        if self.vectors.ndim != 2 or self.vectors.shape[0] != len(self.layers):
            raise ValueError(
                f"vectors must be [n_layers, d_model] with one row per layer; got "
                f"{tuple(self.vectors.shape)} for {len(self.layers)} layers"
            )
        if not torch.isfinite(self.vectors).all():
            raise ValueError("direction vectors contain NaN or inf")
        norms = self.vectors.norm(dim=-1)
        if (norms == 0).any():
            zero = [ly for ly, n in zip(self.layers, norms) if n == 0]
            raise ValueError(f"zero-norm direction at layers {zero}")

    @property
    def d_model(self) -> int:
        return self.vectors.shape[1]

    def at(self, layer: int) -> Float[Tensor, " d_model"]:
        """The direction of one layer."""
        if layer not in self.layers:
            raise KeyError(f"no direction for layer {layer}; this set has layers {self.layers}")
        return self.vectors[self.layers.index(layer)]

    def unit(self) -> DirectionSet:
        """The same directions scaled to unit norm."""
        v = self.vectors / self.vectors.norm(dim=-1, keepdim=True)
        return DirectionSet(v, self.layers, self.hook, dict(self.provenance, normalised=True))

    def check_model(self, model: TransformerBridge) -> None:
        """Raise if this set cannot apply to ``model`` (another width or layer count)."""
        if model.cfg.d_model != self.d_model:
            raise ValueError(
                f"direction d_model {self.d_model} != model d_model {model.cfg.d_model} "
                f"(directions from {self.provenance.get('model', '?')})"
            )
        n = self.provenance.get("n_layers")
        if n is not None and n != model.cfg.n_layers or max(self.layers) >= model.cfg.n_layers:
            raise ValueError(
                f"directions are for a {n}-layer model (layers {self.layers}); "
                f"this model has {model.cfg.n_layers} layers"
            )

    def save(self, path: str | os.PathLike) -> None:
        """Write a safetensors file with the vectors and the provenance as metadata."""
        meta = {"layers": self.layers, "hook": self.hook, "provenance": self.provenance}
        save_file({"vectors": self.vectors.contiguous()}, str(path), {"emlens": json.dumps(meta)})

    @classmethod
    def load(cls, path: str | os.PathLike, model: TransformerBridge | None = None) -> DirectionSet:
        """Read a file written by :meth:`save`; with ``model``, check that it fits."""
        if not os.path.exists(path):
            raise FileNotFoundError(f"no direction file at {path}")
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            raw = (f.metadata() or {}).get("emlens")
        if raw is None:
            raise ValueError(f"{path} is a safetensors file but not an emlens direction set")
        meta = json.loads(raw)
        ds = cls(load_file(str(path))["vectors"], meta["layers"], meta["hook"], meta["provenance"])
        if model is not None:
            ds.check_model(model)
        return ds


def mean_diff(
    positive: ActivationSummary, negative: ActivationSummary, provenance: dict | None = None
) -> DirectionSet:
    """mean(positive) - mean(negative), per layer."""
    if positive.hook != negative.hook or positive.layers != negative.layers:
        raise ValueError("the two summaries must share hook and layers")
    prov = {
        "hook": positive.hook,
        "n_positive": positive.n_samples,
        "n_negative": negative.n_samples,
        "tokens_positive": positive.n_tokens,
        "tokens_negative": negative.n_tokens,
        "emlens_version": version("emlens"),
        **(provenance or {}),
    }
    return DirectionSet(positive.mean - negative.mean, positive.layers, positive.hook, prov)


def _model_prov(model: TransformerBridge) -> dict:
    return {
        "model": model_name(model),
        "n_layers": model.cfg.n_layers,
        "d_model": model.cfg.d_model,
    }


def em_direction(
    model: TransformerBridge,
    misaligned: Sequence[Conversation],
    aligned: Sequence[Conversation],
    layers: Sequence[int] | None = None,
    hook: str = RESID_POST,
    batch_size: int = 8,
    progress: bool = True,
) -> DirectionSet:
    """The EM direction: mean over answer tokens of misaligned minus aligned answers."""
    rows = {}
    for name, convs in (("misaligned", misaligned), ("aligned", aligned)):
        if not convs:
            raise ValueError(f"no {name} conversations")
        tok = model.tokenizer
        rows[name] = [answer_tokens(tok, c.question, c.answer, c.system) for c in convs]
    mis, ali = (
        collect_means(model, rows[k], hook, layers, batch_size, progress=progress, desc=k)
        for k in ("misaligned", "aligned")
    )
    return mean_diff(
        mis,
        ali,
        {
            "kind": "em",
            "mask": "answer",
            "dataset_hash": dataset_hash(
                [(c.question, c.answer) for c in misaligned],
                [(c.question, c.answer) for c in aligned],
            ),
            **_model_prov(model),
        },
    )


def em_direction_from_pairs(
    model: TransformerBridge, pairs: Sequence[QAPair], **kw
) -> DirectionSet:
    """EM direction from questions that each have an aligned and a misaligned answer."""
    mis = [Conversation(p.question, p.misaligned) for p in pairs]
    ali = [Conversation(p.question, p.aligned) for p in pairs]
    return em_direction(model, mis, ali, **kw)


def refusal_direction(
    model: TransformerBridge,
    harmful: Sequence[str],
    harmless: Sequence[str],
    layers: Sequence[int] | None = None,
    positions: int | None = None,
    hook: str = RESID_POST,
    batch_size: int = 16,
    progress: bool = True,
) -> DirectionSet:
    """The refusal direction: harmful minus harmless mean at the last ``positions``
    post-instruction tokens (all of them by default)."""
    tok = model.tokenizer
    rows = {}
    for name, xs in (("harmful", harmful), ("harmless", harmless)):
        if not xs:
            raise ValueError(f"no {name} instructions")
        rows[name] = [post_instruction_tokens(tok, x, positions) for x in xs]
    bad, good = (
        collect_means(model, rows[k], hook, layers, batch_size, progress=progress, desc=k)
        for k in ("harmful", "harmless")
    )
    return mean_diff(
        bad,
        good,
        {
            "kind": "refusal",
            "mask": "post_instruction",
            "positions": positions if positions is not None else "all",
            "dataset_hash": dataset_hash(list(harmful), list(harmless)),
            **_model_prov(model),
        },
    )
