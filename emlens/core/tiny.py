"""Tiny randomly initialized chat models for tests, with a byte-level tokenizer.

Five families (``llama``, ``qwen2``, ``qwen3``, ``gemma2``, ``gemma3``), each 3 layers of width 64
with grouped-query attention, built offline in a second: ``load_model("tiny-llama")`` or
``tiny_hf("llama")``. Qwen3 and Gemma 3 normalize queries and keys (q/k norms); Gemma 2 and 3
normalize block outputs (post-norms); the tiny Gemma 3 alternates sliding-window (16 tokens,
shorter than the tests' prompts) and full attention, each with its own RoPE base.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    Gemma2Config,
    Gemma3TextConfig,
    LlamaConfig,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen3Config,
)

TINY_FAMILIES = ("llama", "qwen2", "qwen3", "gemma2", "gemma3")

# ChatML, the format of SmolLM2 and Qwen2; tiny models use it with a byte-level tokenizer.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with no merges (259 tokens) and a ChatML chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {t: i for i, t in enumerate(specials + sorted(alphabet))}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=specials[1:],
    )
    tok.chat_template = CHATML_TEMPLATE
    # TransformerBridge re-loads tokenizers by name unless they say they add BOS themselves.
    tok.init_kwargs.update(name_or_path="emlens-byte-tokenizer", add_bos_token=True)
    return tok


def tiny_hf(family: str, seed: int = 0) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A tiny randomly initialized model (3 layers, GQA) of a family, with a byte tokenizer.

    Args:
        family: One of ``TINY_FAMILIES``.
        seed: The seed of the random weights.

    Returns:
        The HF model (float32, eager attention, in eval mode) and its tokenizer.

    Examples:
        >>> from emlens.core.models import bridge
        >>> hf, tok = tiny_hf("qwen2")
        >>> model = bridge(hf, tok, "tiny-qwen2")
        >>> model.cfg.n_layers, model.cfg.d_model
        (3, 64)
    """
    tok = byte_tokenizer()
    common: dict[str, Any] = {
        "vocab_size": len(tok),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 512,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }
    cfg: PretrainedConfig
    if family == "llama":
        cfg = LlamaConfig(**common, tie_word_embeddings=False)
    elif family == "qwen2":
        cfg = Qwen2Config(**common, tie_word_embeddings=True)
    elif family == "qwen3":
        cfg = Qwen3Config(**common, head_dim=16, tie_word_embeddings=True)
    elif family == "gemma2":
        cfg = Gemma2Config(**common, head_dim=16, sliding_window=256, tie_word_embeddings=True)
    elif family == "gemma3":
        layers = ["sliding_attention", "full_attention", "sliding_attention"]
        cfg = Gemma3TextConfig(
            **common, head_dim=16, sliding_window=16, layer_types=layers, tie_word_embeddings=True
        )
    else:
        raise ValueError(f"unknown tiny family {family!r}; expected one of {TINY_FAMILIES}")
    torch.manual_seed(seed)
    hf: PreTrainedModel = AutoModelForCausalLM.from_config(
        cfg, dtype=torch.float32, attn_implementation="eager"
    )
    # Random init is tiny (std 0.02); scale up so layers matter and tests can fail.
    with torch.no_grad():
        for p in hf.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.2)
    return hf.eval(), tok
