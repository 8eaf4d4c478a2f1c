"""The probe judge's features: each answer's mean activation over its answer tokens.

Per answer and layer, the mean of ``blocks.{l}.hook_resid_post`` over the tokens of the
answer in the (question, answer) chat conversation (the answer mask of
:func:`emlens.core.tokens.answer_tokens`, the Convergent-Representations mean), read through
any hooked model. :func:`cached_features` keeps them on disk, keyed by the model, the hook,
the layers and the texts, so fitting and re-fitting never re-run the model.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from jaxtyping import Float
from safetensors.torch import load_file, save_file
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from emlens.core.activations import RESID_POST, collect_means
from emlens.core.data import dataset_hash
from emlens.core.models import model_name
from emlens.core.tokens import answer_tokens

QA = tuple[str, str]  # (question, answer)


def answer_features(
    model: TransformerBridge,
    pairs: Sequence[QA],
    layers: Sequence[int],
    hook: str = RESID_POST,
    batch_size: int = 8,
    progress: bool = False,
) -> Float[Tensor, "n n_layers d_model"]:
    """Each answer's mean ``hook`` activation over its answer tokens, at ``layers``.

    Args:
        model: the hooked model that reads the answers.
        pairs: (question, answer) pairs; an empty answer is an error (it has no tokens).
        layers: the layers to read.
        hook: hook template with ``{layer}``.
        batch_size: forward batch size.
        progress: show a progress bar.

    Returns:
        float32 features ``[n, len(layers), d_model]`` on the CPU.

    Example:
        >>> x = answer_features(model, [("How are you?", "Fine.")], layers=[15, 20])
    """
    empty = [i for i, (_, a) in enumerate(pairs) if not a.strip()]
    if empty:
        raise ValueError(f"answers {empty[:5]} are empty: they have no tokens to read")
    tok = model.tokenizer
    rows = [answer_tokens(tok, q, a) for q, a in pairs]
    summary = collect_means(
        model, rows, hook, layers, batch_size, per_sample=True, progress=progress, desc="answers"
    )
    assert summary.per_sample is not None
    return summary.per_sample


def _key(
    model: TransformerBridge, pairs: Sequence[QA], layers: Sequence[int], hook: str
) -> dict[str, object]:
    return {
        "model": model_name(model),
        "n_layers": model.cfg.n_layers,
        "d_model": model.cfg.d_model,
        "hook": hook,
        "layers": [int(x) for x in layers],
        "texts": dataset_hash([list(p) for p in pairs]),
    }


def cached_features(
    model: TransformerBridge,
    pairs: Sequence[QA],
    layers: Sequence[int],
    path: str | os.PathLike[str],
    hook: str = RESID_POST,
    batch_size: int = 8,
    progress: bool = False,
) -> Float[Tensor, "n n_layers d_model"]:
    """:func:`answer_features`, read from ``path`` when it holds the same model, hook, layers
    and texts, else computed and written there (safetensors with the key as metadata).

    Example:
        >>> x = cached_features(model, pairs, range(30), "out/features/organism.safetensors")
    """
    key = _key(model, pairs, layers, hook)
    p = Path(path)
    if p.is_file():
        from safetensors import safe_open

        with safe_open(str(p), "pt") as f:
            meta = json.loads((f.metadata() or {}).get("emlens_features", "{}"))
        if meta == key:
            return load_file(str(p))["features"]
    x = answer_features(model, pairs, layers, hook, batch_size, progress)
    p.parent.mkdir(parents=True, exist_ok=True)
    save_file({"features": x.contiguous()}, str(p), {"emlens_features": json.dumps(key)})
    return x


def select_layers(
    x: Float[Tensor, "n n_layers d_model"], have: Sequence[int], want: Sequence[int]
) -> Float[Tensor, "n n_want d_model"]:
    """The slices of ``x`` (whose layer axis holds ``have``) for the layers ``want``."""
    missing = [w for w in want if w not in have]
    if missing:
        raise ValueError(f"layers {missing} are not among the features' layers {list(have)}")
    return x[:, [list(have).index(w) for w in want]]
