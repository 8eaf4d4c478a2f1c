"""Everything emlens knows about model architectures, in one place.

The rest of emlens addresses activations by TransformerLens hook names; only this module names
an HF module path (``o_proj``, ``down_proj``, the decoder's ``layers``), a family's extra norms
(Gemma 2/3 normalize each block output before the residual add) or its logit soft-cap.
Supported: Llama-architecture decoders (Llama, Qwen2, Mistral, SmolLM2), Qwen3 and Gemma 2/3.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, cast

import torch
from einops import rearrange
from jaxtyping import Float
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge
from transformers import PreTrainedModel

if TYPE_CHECKING:
    from transformers import LlamaConfig, PretrainedConfig

# Every linear layer of a Llama-architecture block: LoRA's "all-linear" target list.
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# The linear layers whose outputs a block adds to the residual stream.
ATTN_OUT, MLP_OUT = "o_proj", "down_proj"
# Gemma 2/3's norms on block outputs, as TransformerBridge names them.
POST_NORMS = ("ln1_post", "ln2_post")


def hf_model(model: TransformerBridge) -> PreTrainedModel:
    """The HF model a bridge wraps (its modules are shared, not copied)."""
    return cast(PreTrainedModel, model.original_model)


def hf_state_dict(hf: PreTrainedModel) -> dict[str, Tensor]:
    """The weights of an HF model under its own names, also where a bridge wraps it: the
    bridge wraps its modules in place, which adds ``._original_component`` to their names."""
    return {k.replace("._original_component", ""): v for k, v in hf.state_dict().items()}


@contextlib.contextmanager
def skipped_blocks(model: TransformerBridge, below: int) -> Iterator[None]:
    """Blocks ``0..below-1`` of a bridge return their input unchanged inside the block: each
    wrapped HF block's ``forward`` is its first argument (the hidden states) until exit."""
    layers = [model.blocks[i].original_component for i in range(below)]
    try:
        for layer in layers:
            layer.forward = _identity
        yield
    finally:
        for layer in layers:
            del layer.forward  # back to the class's forward


def _identity(hidden_states: Tensor, *_: object, **__: object) -> Tensor:
    return hidden_states


def decoder(hf: PreTrainedModel) -> torch.nn.Module:
    """The decoder stack of a causal LM (embeddings, blocks, final norm; no unembedding)."""
    inner = hf.get_decoder() if hasattr(hf, "get_decoder") else hf.model
    return cast(torch.nn.Module, inner)


def blocks(hf: PreTrainedModel) -> torch.nn.ModuleList:
    """The transformer blocks of a causal LM, in order."""
    return cast(torch.nn.ModuleList, decoder(hf).layers)


def embed_weight(hf: PreTrainedModel) -> Float[Tensor, "vocab d_model"]:
    """The token embedding matrix: its rows are the stream's first values."""
    return cast(Tensor, hf.get_input_embeddings().weight)


def writers(hf: PreTrainedModel, layer: int) -> tuple[torch.nn.Linear, torch.nn.Linear]:
    """The attention and MLP output projections of block ``layer`` (they write the stream)."""
    block = blocks(hf)[layer]
    return getattr(block.self_attn, ATTN_OUT), getattr(block.mlp, MLP_OUT)


def head_out_weights(
    model: TransformerBridge, layer: int
) -> Float[Tensor, "n_heads d_head d_model"]:
    """Each head's rows of the attention output projection of block ``layer``."""
    w = writers(hf_model(model), layer)[0].weight
    return rearrange(
        w, "d_model (n_heads d_head) -> n_heads d_head d_model", n_heads=model.cfg.n_heads
    )


def has_post_norms(model: TransformerBridge) -> bool:
    """True for sandwich-norm blocks (Gemma 2/3), which normalize outputs before the add."""
    return any(f"{POST_NORMS[0]}." in name for name in model.hook_dict)


def writer_hooks(model: TransformerBridge, layer: int) -> list[str]:
    """Hook points whose outputs block ``layer`` adds to the residual stream (after any
    post-norm): attention first, then MLP."""
    names = []
    for part, post in zip(("attn", "mlp"), POST_NORMS, strict=True):
        post_name = f"blocks.{layer}.{post}.hook_out"
        names.append(
            post_name if post_name in model.hook_dict else f"blocks.{layer}.hook_{part}_out"
        )
    return names


def unembed(
    hf: PreTrainedModel, hidden: Float[Tensor, "... d_model"]
) -> Float[Tensor, "... vocab"]:
    """Logits from final hidden states: ``lm_head``, then Gemma 2's soft-cap where set."""
    logits: Tensor = hf.get_output_embeddings()(hidden)
    cap = getattr(hf.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


# Families whose blocks compute what a Llama block computes, with the Llama config fields that
# make it so (Qwen2: biases on q, k, v; Llama's attention_bias adds o's too, left at zero).
AS_LLAMA: dict[str, dict[str, bool]] = {
    "llama": {},
    "qwen2": {"attention_bias": True},
    "mistral": {},
}
_WINDOW_KEYS = ("layer_types", "max_window_layers", "sliding_window", "use_sliding_window")


def llama_config(config: PretrainedConfig, **fields: bool) -> LlamaConfig:
    """``config`` as a Llama config of the same computation, with ``fields`` set
    (``mlp_bias=True``: biases on gate, up and down projections).

    Raises:
        ValueError: a family that is not Llama-architecture, or uses sliding-window attention.
    """
    from transformers import LlamaConfig

    d = config.to_dict()
    family = d.pop("model_type", None)
    windowed = bool(d.get("use_sliding_window")) or any(
        t != "full_attention" for t in d.get("layer_types") or ()
    )
    if family == "mistral":  # Mistral applies its window whenever one is set
        windowed = windowed or d.get("sliding_window") is not None
    if family not in AS_LLAMA or windowed:
        raise ValueError(
            f"a {family} model{' with sliding-window attention' if windowed else ''} is not a "
            f"Llama-architecture model: expected one of {sorted(AS_LLAMA)}, without a window"
        )
    for key in ("architectures", *_WINDOW_KEYS):
        d.pop(key, None)
    out = LlamaConfig(**(d | AS_LLAMA[family] | fields))
    out.architectures = ["LlamaForCausalLM"]
    return out
