"""The models an inspect run loads, loaded once per process, and the lock every use holds.

Generation runs with interventions hooked into the model; a judge reading through the same
model at that moment would read steered activations. One lock around every use (generating,
judging) keeps the two apart; on one model they would run one at a time anyway.
"""

from __future__ import annotations

import threading
from typing import Any

from transformer_lens.model_bridge import TransformerBridge

MODEL_LOCK = threading.Lock()
_MODELS: dict[tuple[str, str | None, str | None], TransformerBridge] = {}
_JUDGES: dict[tuple[str, int | None], Any] = {}
_LAST: dict[str, Any] = {}


def shared_model(
    spec: str, device: str | None = None, dtype: str | None = None
) -> TransformerBridge:
    """``emlens.load_model(spec)``, loaded once per (spec, device, dtype) in this process."""
    key = (spec, device, dtype)
    with MODEL_LOCK:
        if key not in _MODELS:
            import torch

            from emlens.core.models import load_model

            kind = None if dtype is None else getattr(torch, dtype, None)
            if dtype is not None and not isinstance(kind, torch.dtype):
                raise ValueError(
                    f"dtype must be a torch dtype name (float32, bfloat16), not {dtype!r}"
                )
            _MODELS[key] = load_model(spec, device=device, dtype=kind)
        return _MODELS[key]


def shared_judge(spec: str, reader: TransformerBridge | None = None) -> Any:
    """``make_judge(spec, model=reader)``, built once per (spec, reader): the ``local`` judge is
    ``reader`` itself (the evaluated model, unsteered while it judges), a probe reads through
    ``reader`` when it is the probe's own model (else it loads its reader once). Without a
    reader: the judge this spec was last built as (the metric's, after scoring)."""
    with MODEL_LOCK:
        if reader is None and spec in _LAST:
            return _LAST[spec]
        key = (spec, None if reader is None else id(reader))
        if key not in _JUDGES:
            from emlens.eval.judge_spec import make_judge

            _JUDGES[key] = make_judge(spec, model=reader)
        _LAST[spec] = _JUDGES[key]
        return _JUDGES[key]
