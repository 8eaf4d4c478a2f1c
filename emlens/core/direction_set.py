"""``DirectionSet``: one vector per layer with its provenance, a value you can compute with.

``a - b``, ``a + b``, ``k * a``, ``a / k`` and ``-a`` are direction sets whose provenance
records the operation and its operands' provenance, so "organism minus base" is a direction set
like any other. A vector may be zero (an organism equals its base below the first adapter);
``unit``, ``steer``, ``ablate`` and the cosines refuse a zero vector where they need a direction.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from emlens.core._atomic import write_atomic
from emlens.core.activations import RESID_POST

# Provenance an arithmetic result keeps where its operands agree (``check_model`` reads it).
_MODEL_KEYS = ("model", "n_layers", "d_model")


@dataclass
class DirectionSet:
    """One direction per layer (``vectors[i]`` belongs to ``layers[i]``) with provenance.

    A value type: ``a - b``, ``a + b``, ``k * a``, ``a / k`` and ``-a`` are direction sets
    (operands must share layers and hook), and the provenance records the operation. Vectors
    may be zero (e.g. organism minus base below the first adapter); ``unit``, ``steer``,
    ``ablate`` and the cosines refuse a zero vector where they need a direction.

    Examples:
        >>> organism = DirectionSet(torch.tensor([[3.0, 4.0]]), layers=[15])
        >>> base = DirectionSet(torch.tensor([[1.0, 0.0]]), layers=[15])
        >>> change = organism - base  # e.g. em_direction(organism, ...) - em_direction(base, ...)
        >>> change.at(15), round(float(change.unit().at(15).norm()), 4)
        (tensor([2., 4.]), 1.0)
    """

    vectors: Float[Tensor, "n_layers d_model"]
    layers: list[int]
    hook: str = RESID_POST
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.vectors = torch.as_tensor(self.vectors, dtype=torch.float32)
        self.layers = [int(x) for x in self.layers]
        if self.vectors.ndim != 2 or self.vectors.shape[0] != len(self.layers):
            raise ValueError(
                f"vectors must be [n_layers, d_model] with one row per layer; got "
                f"{tuple(self.vectors.shape)} for {len(self.layers)} layers"
            )
        if not torch.isfinite(self.vectors).all():
            raise ValueError("direction vectors contain NaN or inf")

    @property
    def d_model(self) -> int:
        """The width of each vector."""
        return int(self.vectors.shape[1])

    def at(self, layer: int) -> Float[Tensor, " d_model"]:
        """The direction of one layer."""
        if layer not in self.layers:
            raise KeyError(f"no direction for layer {layer}; this set has layers {self.layers}")
        return self.vectors[self.layers.index(layer)]

    def select(self, layers: Sequence[int]) -> DirectionSet:
        """The same set restricted to ``layers`` (in that order)."""
        vecs = torch.stack([self.at(layer) for layer in layers])
        return DirectionSet(vecs, list(layers), self.hook, dict(self.provenance))

    def check_nonzero(self, layers: Sequence[int] | None = None, use: str = "this use") -> None:
        """Raise if the direction of any of ``layers`` (all by default) is the zero vector."""
        layers = self.layers if layers is None else layers
        zero = [ly for ly in layers if not self.at(ly).any()]
        if zero:
            raise ValueError(f"zero-norm direction at layers {zero}: {use} needs a direction")

    def unit(self) -> DirectionSet:
        """The same directions scaled to unit norm (none may be zero)."""
        self.check_nonzero(use="unit()")
        v = self.vectors / self.vectors.norm(dim=-1, keepdim=True)
        return DirectionSet(v, self.layers, self.hook, dict(self.provenance, normalized=True))

    def _derived(
        self, vectors: Tensor, op: str, *others: DirectionSet, **record: float
    ) -> DirectionSet:
        """A set computed from this one (and ``others``), its provenance recording how."""
        for o in others:
            if (o.layers, o.hook) != (self.layers, self.hook):
                a, b = ((d.provenance.get("kind"), d.layers, d.hook) for d in (self, o))
                raise ValueError(f"cannot {op} sets with different layers or hook: {a} vs {b}")
        provs = [self.provenance] + [o.provenance for o in others]
        shared = {k: provs[0][k] for k in _MODEL_KEYS if k in provs[0]}
        shared = {k: v for k, v in shared.items() if all(p.get(k) == v for p in provs)}
        prov = {**shared, "operation": op, **record, "operands": provs}
        return DirectionSet(vectors, self.layers, self.hook, prov)

    def __add__(self, other: DirectionSet) -> DirectionSet:
        if not isinstance(other, DirectionSet):
            return NotImplemented
        return self._derived(self.vectors + other.vectors, "add", other)

    def __sub__(self, other: DirectionSet) -> DirectionSet:
        if not isinstance(other, DirectionSet):
            return NotImplemented
        return self._derived(self.vectors - other.vectors, "subtract", other)

    def __mul__(self, k: float) -> DirectionSet:
        if not isinstance(k, int | float) or isinstance(k, bool):
            return NotImplemented
        return self._derived(self.vectors * k, "multiply", by=k)

    __rmul__ = __mul__

    def __truediv__(self, k: float) -> DirectionSet:
        if not isinstance(k, int | float) or isinstance(k, bool):
            return NotImplemented
        if k == 0:
            raise ZeroDivisionError("cannot divide a direction set by zero")
        return self._derived(self.vectors / k, "divide", by=k)

    def __neg__(self) -> DirectionSet:
        return self._derived(-self.vectors, "negate")

    def check_model(self, model: TransformerBridge) -> None:
        """Raise if this set cannot apply to ``model`` (another width or layer count)."""
        if model.cfg.d_model != self.d_model:
            raise ValueError(
                f"direction d_model {self.d_model} != model d_model {model.cfg.d_model} "
                f"(directions from {self.provenance.get('model', '?')})"
            )
        n = self.provenance.get("n_layers")
        if (n is not None and n != model.cfg.n_layers) or max(self.layers) >= model.cfg.n_layers:
            raise ValueError(
                f"directions are for a {n}-layer model (layers {self.layers}); "
                f"this model has {model.cfg.n_layers} layers"
            )

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write a safetensors file with the vectors and the provenance as metadata.

        Written whole or not at all (a temporary file, then a rename).

        Raises:
            FileNotFoundError: the folder of ``path`` does not exist.
        """
        meta = {"layers": self.layers, "hook": self.hook, "provenance": self.provenance}
        tensors = {"vectors": self.vectors.contiguous()}
        write_atomic(path, lambda p: save_file(tensors, str(p), {"emlens": json.dumps(meta)}))

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], model: TransformerBridge | None = None
    ) -> DirectionSet:
        """Read a file written by ``save``; with ``model``, check that it fits.

        Raises:
            FileNotFoundError: there is no file at ``path``.
            ValueError: the file is not a readable emlens direction set (corrupt, truncated,
                another format), or does not fit ``model``.
        """
        if not Path(path).is_file():
            raise FileNotFoundError(f"no direction file at {path}")
        try:
            with safe_open(str(path), "pt") as f:
                raw = (f.metadata() or {}).get("emlens")
            if raw is None:
                raise ValueError(f"{path} is a safetensors file but not an emlens direction set")
            meta = json.loads(raw)
            vectors = load_file(str(path))["vectors"]
            ds = cls(vectors, meta["layers"], meta["hook"], meta["provenance"])
        except (SafetensorError, OSError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(
                f"{path}: expected an emlens direction file (safetensors written by "
                f"DirectionSet.save), could not read it: {e}"
            ) from None
        if model is not None:
            ds.check_model(model)
        return ds
