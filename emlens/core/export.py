"""Interventions baked into plain weights: HF folders that any engine (vLLM) runs at full speed.

- Ablation (Arditi et al. 2024): `emlens.core.orthogonalization.orthogonalize` is the weight
  edit equal to an every-layer ``Ablate``; `export_hf` saves its result.
- Steering at every position: adding ``s * v`` to the residual stream after block ``l``
  (``blocks.{l}.hook_resid_post``) equals a bias ``s * v`` on that block's MLP output
  projection (``down_proj``), whose output is the last thing the block adds to the stream.
  Llama configs carry MLP biases (``mlp_bias=True``; gate and up biases are then zero), and a
  Qwen2 model is a Llama-architecture model with biases on q, k and v (``attention_bias=True``,
  o's bias zero), so a steered model is written as a Llama model that stock transformers
  (``AutoModelForCausalLM``) and vLLM load with no emlens code.
- Architectures that cannot carry a steering bias are refused: Gemma 2/3 normalise the MLP
  output before the add (a bias would be normalised with it), and families whose blocks are
  not Llama's (Qwen3's q/k norms, sliding-window attention) have no such config.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from emlens.core._arch import MLP_OUT, blocks, has_post_norms, hf_model, hf_state_dict, llama_config
from emlens.core.interventions import Ablate, Intervention, Steer

_RESID = ("blocks.{layer}.hook_resid_post", "blocks.{layer}.hook_resid_pre")


def steering_biases(
    model: TransformerBridge, steers: Sequence[Steer]
) -> dict[int, Float[Tensor, " d_model"]]:
    """The ``down_proj`` bias of each block that carries ``steers``, in float32.

    ``blocks.{l}.hook_resid_post`` is block ``l``'s output; ``blocks.{l}.hook_resid_pre``
    (l >= 1) is block ``l - 1``'s. Steers at the same block add up.

    Args:
        model: the model the steers were built for.
        steers: ``Steer`` specs at every position on the residual stream.

    Returns:
        The bias to add, by block.

    Examples:
        >>> from emlens.core.interventions import steer
        >>> biases = steering_biases(model, [steer(em_dir, layers=[15], scale=4.0)])
        >>> list(biases), torch.allclose(biases[15], 4.0 * em_dir.at(15))
        ([15], True)
    """
    out: dict[int, Tensor] = {}
    for s in steers:
        if s.positions != "all" or s.hook not in _RESID:
            raise ValueError(
                f"only steering at every position of the residual stream ({_RESID}) is a "
                f"weight; got positions={s.positions!r}, hook={s.hook!r}"
            )
        if s.vectors.shape[-1] != model.cfg.d_model:
            raise ValueError(f"steer width {s.vectors.shape[-1]} != d_model {model.cfg.d_model}")
        for v, layer in zip(s.vectors, s.layers, strict=True):
            block = layer - (s.hook == _RESID[1])
            if not 0 <= block < model.cfg.n_layers:
                raise ValueError(f"{s.hook.format(layer=layer)} follows no block of the model")
            out[block] = out.get(block, 0) + s.scale * v.float()
    return out


@torch.no_grad()
def steered_model(model: TransformerBridge, steers: Sequence[Steer]) -> PreTrainedModel:
    """A Llama-architecture HF model whose weights carry ``steers`` at every position.

    The model's weights are shared with the new one, not copied; the new biases are zero
    except each steered block's ``down_proj`` bias.

    Args:
        model: a Llama, Qwen2 or Mistral (without sliding window) bridge.
        steers: ``Steer`` specs on the residual stream at every position.

    Returns:
        An HF ``LlamaForCausalLM`` in the model's dtype, on its devices.

    Raises:
        ValueError: an architecture that cannot carry the biases, or a steer that is not one.
    """
    hf = hf_model(model)
    if has_post_norms(model):
        raise ValueError(
            "this architecture normalises the MLP output before the residual add (Gemma 2/3): "
            "a down_proj bias would be normalised too, so steering is not a weight here; "
            "steer with emlens.applied, generate or `emlens serve` instead"
        )
    try:
        config = llama_config(hf.config, mlp_bias=True)
    except ValueError as e:
        raise ValueError(f"cannot write steering into this model's weights: {e}") from e
    biases = steering_biases(model, steers)
    weights = hf_state_dict(hf)
    with torch.device("meta"):  # no memory: the weights are assigned below
        out: PreTrainedModel = AutoModelForCausalLM.from_config(config, dtype=hf.dtype)
    state = {}
    for name, meta in out.state_dict().items():
        if name in weights:
            state[name] = weights[name]
        elif name.endswith(".bias"):  # a bias Llama's config adds: zero, where its weight is
            like = weights[name.removesuffix("bias") + "weight"]
            state[name] = torch.zeros(meta.shape, dtype=like.dtype, device=like.device)
        else:
            raise ValueError(f"{name} has no counterpart in the model: not Llama-architecture")
    out.load_state_dict(state, assign=True)
    buffers = {k.replace("._original_component", ""): v for k, v in hf.named_buffers()}
    for name, buf in list(out.named_buffers()):  # not in a state dict (rotary inv_freq)
        if buf.is_meta:
            owner, _, attr = name.rpartition(".")
            out.get_submodule(owner).register_buffer(attr, buffers[name].clone(), persistent=False)
    if config.tie_word_embeddings:
        out.tie_weights()
    for block, b in biases.items():  # a new tensor: an existing bias is the model's own
        lin = getattr(blocks(out)[block].mlp, MLP_OUT)
        new = (lin.bias.float() + b.to(lin.bias.device)).to(lin.bias.dtype)
        lin.bias = torch.nn.Parameter(new, requires_grad=False)
    out.generation_config = hf.generation_config
    out.eval()
    return out


def export_hf(
    model: TransformerBridge,
    interventions: Sequence[Intervention],
    out: str | os.PathLike[str],
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> Path:
    """Write ``model`` with ``interventions`` in its weights as a plain HF folder.

    One every-layer ``Ablate`` becomes `orthogonalize`'s weight edit; ``Steer`` specs at every
    position become ``down_proj`` biases (`steered_model`). The folder loads in stock
    transformers and vLLM with no emlens code, and computes what the hooked model computes.

    Args:
        model: the model (a bridge; left unchanged).
        interventions: one ``Ablate``, or any number of ``Steer``.
        out: the folder to write.
        tokenizer: saved beside the weights (default: the bridge's).

    Returns:
        The folder.

    Examples:
        >>> from emlens.core.interventions import ablate, steer
        >>> export_hf(model, [steer(em_dir, layers=[15], scale=4.0)], "out/steered")
        PosixPath('out/steered')
        >>> export_hf(model, [ablate(em_dir, layer=15)], "out/ablated")  # then: vllm serve out/...
        PosixPath('out/ablated')
    """
    from emlens.core.models import drop_gguf_origin, save_hf

    tok = tokenizer or model.tokenizer
    ablations = [iv for iv in interventions if isinstance(iv, Ablate)]
    steers = [iv for iv in interventions if isinstance(iv, Steer)]
    if not interventions or len(ablations) + len(steers) != len(interventions):
        raise ValueError(f"expected Steer or Ablate interventions, got {list(interventions)}")
    if ablations:
        if len(ablations) > 1 or steers:
            raise ValueError(
                "export one Ablate (its span may hold several directions), or Steers, at a "
                "time: the order of hooks on a shared hook point has no weight equivalent"
            )
        from emlens.core.orthogonalization import orthogonalize

        return save_hf(orthogonalize(model, ablations[0]), out, tok)
    steered = steered_model(model, steers)
    steered.save_pretrained(out)
    tok.save_pretrained(out)
    return drop_gguf_origin(Path(out))
