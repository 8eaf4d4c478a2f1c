"""Weight orthogonalization: a new model whose weights cannot write a direction.

Directional ablation (Arditi et al. 2024) as a weight edit: every matrix that writes the
residual stream (the token embedding, each attention and MLP output projection, and their
biases) is projected, W <- (I - r r^T) W, so no activation ever has a component along r. On
pre-norm blocks this equals an every-layer ``Ablate``; the edited model can be saved as a plain
HF folder (``emlens.save_hf``) for any inference engine.
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from emlens.core._arch import embed_weight, has_post_norms, hf_model, writers
from emlens.core.interventions import Ablate, ablate, check_width
from emlens.core.models import bridge


def _project(w: Tensor, q: Tensor, side: Literal["left", "right"] = "left") -> None:
    """w <- (I - q q^T) w, or w (I - q q^T) for ``side="right"``, in place: computed in
    float32 on w's device, stored in w's dtype."""
    qq, w32 = q.to(w.device), w.float()
    out = w32 - qq @ (qq.T @ w32) if side == "left" else w32 - (w32 @ qq) @ qq.T
    w.copy_(out.to(w.dtype))


@torch.no_grad()
def orthogonalize(model: TransformerBridge, direction: Tensor | Ablate) -> TransformerBridge:
    """A new model whose weights cannot write ``direction`` into the residual stream.

    Embedding, attention output and MLP output matrices (and biases) are projected:
    W <- (I - r r^T) W. Equivalent to an every-layer ``Ablate`` for pre-norm blocks (Llama,
    Qwen2, Qwen3, Mistral); sandwich-norm blocks (Gemma 2/3) raise. Each weight is projected on its
    own device in float32 and cast back to its dtype; the new bridge runs where the model does.

    Args:
        model: The model to copy; it is left unchanged.
        direction: A tensor ``[d_model]`` or ``[k, d_model]``, or an every-layer ``Ablate``.

    Returns:
        A new bridge; save it for other engines with ``emlens.save_hf``.

    Examples:
        >>> from emlens.core.models import save_hf
        >>> edited = orthogonalize(model, em_dir.at(15))
        >>> save_hf(edited, "runs/em-ablated")
        PosixPath('runs/em-ablated')
    """
    a = direction if isinstance(direction, Ablate) else ablate(direction)
    if a.per_layer or a.layers is not None:
        raise ValueError(
            "weight orthogonalization ablates at every layer: layers must be None and the "
            "ablation not per-layer (use applied(model, [ablate(...)]) for those)"
        )
    if a.reference is not None or a.skip_first:
        raise ValueError(
            "weight orthogonalization can only zero-ablate at every position: this Ablate has "
            "a reference value or skips the first position (use applied(model, [ablate(...)]))"
        )
    check_width(model, a.directions)
    if has_post_norms(model):
        raise ValueError(
            "this architecture normalizes block outputs before the residual add (Gemma 2/3): "
            "weight orthogonalization is not equivalent there; use Ablate hooks"
        )
    hf = copy.deepcopy(hf_model(model))
    q = a.basis()  # [d_model, k], orthonormal, float32
    out = hf.get_output_embeddings()
    if out is not None and hf.config.tie_word_embeddings:
        # Untie: the unembedding reads the stream and must stay as it was.
        out.weight = torch.nn.Parameter(out.weight.detach().clone())
        hf.config.tie_word_embeddings = False
    _project(embed_weight(hf), q, "right")  # [vocab, d_model]: rows are written
    for layer in range(model.cfg.n_layers):
        for lin in writers(hf, layer):
            _project(lin.weight, q)  # [d_model, d_in]
            if lin.bias is not None:
                _project(lin.bias, q)
    return bridge(
        hf, model.tokenizer, f"{getattr(model.cfg, 'model_name', 'model')}+orthogonalized"
    )
