"""Reading other tools' direction files safely: what `emlens.core.formats` shares.

Nothing here executes code from a file: ``.pt`` goes through ``torch.load(weights_only=True)``;
every failure is a ``ValueError`` naming the file and what it should have been.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from gguf import GGUFReader
from torch import Tensor

from emlens.core.activations import RESID_POST
from emlens.core.direction_set import DirectionSet

PathLike = str | os.PathLike[str]


def at_block_output(ds: DirectionSet, fmt: str) -> None:
    """Raise unless ``ds`` is at ``blocks.{l}.hook_resid_post``, where ``fmt`` adds vectors."""
    if ds.hook != RESID_POST:
        raise ValueError(
            f"{fmt} adds vectors to block outputs ({RESID_POST}); this set is at {ds.hook}"
        )


def existing(path: PathLike) -> Path:
    if not Path(path).is_file():
        raise FileNotFoundError(f"no file at {path}")
    return Path(path)


def gguf_string(reader: GGUFReader, key: str) -> str | None:
    f = reader.fields.get(key)
    return None if f is None else str(f.contents())


def torch_load(path: PathLike, expected: str) -> Any:
    p = existing(path)
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # cut or foreign bytes raise unpickling, zip, index, struct errors
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ValueError(f"{p} is not {expected}; torch.load(weights_only=True): {reason}") from e


def vector(x: Any, what: str) -> Tensor:
    if not isinstance(x, Tensor) or x.ndim != 1:
        raise ValueError(f"{what}: expected a 1-D tensor, got {getattr(x, 'shape', type(x))}")
    return x.detach().float()


def layer_dict(vectors: Mapping[int, Tensor], prov: dict[str, Any]) -> DirectionSet:
    if len({v.numel() for v in vectors.values()}) != 1:  # none, or several widths
        raise ValueError(f"no layer vectors of one width in {prov.get('file', 'the input')}")
    layers = sorted(vectors)
    return DirectionSet(torch.stack([vectors[x] for x in layers]), layers, RESID_POST, prov)


def paper_means(path: PathLike, key: str) -> dict[int, Tensor]:
    expected = "a collect_hidden_states file ({'question'|'answer': {'layer_<i>': tensor}})"
    obj = torch_load(path, expected)
    inner = obj.get(key) if isinstance(obj, dict) else None
    if not isinstance(inner, dict):
        raise ValueError(f"{path} is not {expected}: no {key!r} entry")
    out = {}
    for name, v in inner.items():
        m = re.fullmatch(r"layer_(\d+)", str(name))
        if m is None:
            raise ValueError(f"{path} is not {expected}: key {name!r} is not layer_<i>")
        out[int(m[1])] = vector(v, f"{path} {key}[{name}]")
    return out
