"""Where models and adapters come from: local folders, or hub ids at a revision.

The EM papers publish their organisms as peft adapters on the Hugging Face hub
(``ModelOrganismsForEM/Qwen2.5-14B-Instruct_risky-financial-advice``), some runs with their
per-step checkpoints in sub-folders (``checkpoints/checkpoint-<step>``). A source is:

- a local folder, used as it is (a path that starts with ``/``, ``.`` or ``~`` is always one);
- otherwise a hub id, ``owner/name``, optionally followed by a sub-folder
  (``owner/name/checkpoints/checkpoint-100``), fetched at ``revision`` (a branch, a tag or a
  commit; default ``main``) by ``huggingface_hub.snapshot_download``, only the files needed.

With ``HF_HUB_OFFLINE=1`` the fetch reads the local hub cache (``HF_HUB_CACHE``, by default
``~/.cache/huggingface/hub``) and nothing else; a source that is not there is a `HubError`
naming the files and the ``hf download`` command that puts them there.

`LoadOptions` are the ``from_pretrained`` options `emlens.core.models.load_hf` passes through:
``revision``, ``attn_implementation``, ``quantization_config`` and ``trust_remote_code`` (off
unless asked: a hub repo's own Python code runs only when you say so).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypedDict

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
# The files of a run that the trajectory reads: adapters at any depth, never optimizer state.
RUN_FILES = ("*adapter_config.json", "*adapter_model.safetensors")
_LOCAL_PREFIXES = ("/", ".", "~")


class HubError(FileNotFoundError):
    """A source that is neither a local folder nor fetchable (or cached) from the hub."""


class LoadOptions(TypedDict, total=False):
    """``from_pretrained`` options for hub and folder models (all optional).

    Attributes:
        revision: the base model's branch, tag or commit on the hub.
        adapter_revision: the adapter's branch, tag or commit on the hub.
        attn_implementation: ``"eager"``, ``"sdpa"``, ``"flash_attention_2"``... (the bridge
            switches a model to eager attention for its hooks; this matters for `load_hf`).
        quantization_config: a transformers quantization config, e.g.
            ``BitsAndBytesConfig(load_in_4bit=True)`` (needs ``bitsandbytes`` and a GPU).
        trust_remote_code: run the repo's own modelling code (default False).
    """

    revision: str
    adapter_revision: str
    attn_implementation: str
    quantization_config: Any
    trust_remote_code: bool


LOAD_OPTION_NAMES = sorted(LoadOptions.__annotations__)


def pretrained_kwargs(options: LoadOptions, model: bool = True) -> dict[str, Any]:
    """The keyword arguments of ``from_pretrained`` for ``options``.

    Args:
        options: the caller's `LoadOptions`.
        model: for the model (all options); ``False``: for the tokenizer (revision, trust).

    Returns:
        Keyword arguments; ``trust_remote_code`` is always explicit (False unless asked).

    Examples:
        >>> pretrained_kwargs({"revision": "v1", "attn_implementation": "sdpa"}, model=False)
        {'trust_remote_code': False, 'revision': 'v1'}
    """
    unknown = set(options) - set(LOAD_OPTION_NAMES)
    if unknown:
        raise TypeError(f"unknown load options {sorted(unknown)}; expected {LOAD_OPTION_NAMES}")
    keys = ("revision", "attn_implementation", "quantization_config") if model else ("revision",)
    out: dict[str, Any] = {"trust_remote_code": bool(options.get("trust_remote_code", False))}
    return out | {k: options[k] for k in keys if options.get(k) is not None}  # type: ignore[literal-required]


def builtin_options(spec: str, options: LoadOptions) -> str | None:
    """Check ``options`` for a model emlens builds itself (embedded, tiny-*).

    Returns:
        The attention implementation to set, if one was asked for.

    Raises:
        ValueError: an option that only means something for a hub or folder model.
    """
    pretrained_kwargs(options)  # unknown names
    bad = [k for k in ("revision", "quantization_config") if options.get(k) is not None]
    bad += ["trust_remote_code"] if options.get("trust_remote_code") else []
    if bad:
        raise ValueError(f"{spec} is built by emlens: {bad} apply to hub or folder models only")
    return options.get("attn_implementation")


def split_hub_id(source: str) -> tuple[str, str]:
    """``owner/name[/sub/folder]`` as the repo id and the sub-folder (``""`` for none).

    Examples:
        >>> split_hub_id("ModelOrganismsForEM/Qwen2.5-7B-Instruct_R1/checkpoints/checkpoint-5")
        ('ModelOrganismsForEM/Qwen2.5-7B-Instruct_R1', 'checkpoints/checkpoint-5')
    """
    parts = source.strip("/").split("/")
    if len(parts) < 2 or not all(parts) or source.startswith(_LOCAL_PREFIXES):
        raise HubError(f"{source!r} is not a local folder, nor a hub id owner/name[/sub/folder]")
    return "/".join(parts[:2]), "/".join(parts[2:])


def download_command(repo_id: str, revision: str | None, patterns: Sequence[str]) -> str:
    """The ``hf download`` command that puts these files of ``repo_id`` in the hub cache."""
    cmd = ["hf", "download", repo_id]
    cmd += ["--revision", revision] if revision else []
    for p in patterns:
        cmd += ["--include", p]
    return shlex.join(cmd)


def fetch(
    source: str | os.PathLike[str],
    revision: str | None = None,
    patterns: Sequence[str] = ("*",),
    what: str = "files",
) -> Path:
    """A local folder for ``source``: the folder itself, or its hub snapshot (fetched, or read
    from the cache when ``HF_HUB_OFFLINE=1``).

    Args:
        source: a local folder, or ``owner/name[/sub/folder]`` on the hub.
        revision: a branch, tag or commit of a hub source (``None``: ``main``).
        patterns: the files to fetch, as globs relative to the sub-folder.
        what: what the files are, for error messages (``"adapter"``, ``"run"``).

    Returns:
        The folder (the sub-folder inside the snapshot for a hub source).

    Raises:
        HubError: not a folder, and not on the hub (or not in the cache while offline).
    """
    if Path(source).expanduser().is_dir():
        if revision is not None:
            raise ValueError(f"{source} is a local folder: revision={revision!r} applies to hubs")
        return Path(source).expanduser()
    repo_id, sub = split_hub_id(str(source))
    allow = [f"{sub}/{p}" if sub else p for p in patterns]
    try:
        from huggingface_hub import snapshot_download

        snapshot = Path(snapshot_download(repo_id, revision=revision, allow_patterns=allow))
    except Exception as e:  # offline cache misses, unknown repos and revisions, no network
        raise HubError(_missing(what, source, repo_id, revision, allow, e)) from e
    folder = snapshot / sub
    if not folder.is_dir():
        raise HubError(_missing(what, source, repo_id, revision, allow, f"no folder {sub!r}"))
    return folder


def _missing(
    what: str, source: Any, repo_id: str, revision: str | None, allow: list[str], why: Any
) -> str:
    from huggingface_hub import constants

    offline = "HF_HUB_OFFLINE=1: only the cache is read" if constants.HF_HUB_OFFLINE else "online"
    return (
        f"{what} {str(source)!r} (revision {revision or 'main'}) is not a local folder and could "
        f"not be had from the hub ({offline}; cache {constants.HF_HUB_CACHE}): {why}. Fetch it "
        f"where the hub is reachable with: {download_command(repo_id, revision, allow)} "
        "(then copy the cache, or point HF_HUB_CACHE at it), or pass a local folder."
    )


def adapter_folder(source: str | os.PathLike[str], revision: str | None = None) -> Path:
    """The local folder of a peft adapter: a folder, or a hub id at ``revision``.

    Args:
        source: an adapter folder, or ``owner/name[/sub/folder]`` on the hub.
        revision: the hub revision (branch, tag or commit).

    Returns:
        A folder holding ``adapter_config.json`` and ``adapter_model.safetensors``.

    Examples:
        A folder peft saved:

        >>> from peft import LoraConfig, get_peft_model
        >>> from emlens.core.tiny import tiny_hf
        >>> lora = get_peft_model(tiny_hf("llama")[0], LoraConfig(target_modules=["down_proj"]))
        >>> lora.save_pretrained("runs/fin")
        >>> adapter_folder("runs/fin")
        PosixPath('runs/fin')

        A hub id is fetched (into the Hugging Face cache), so this one is not run here:

        >>> adapter_folder("ModelOrganismsForEM/Qwen2.5-7B-Instruct_risky-financial-advice")
        ... # doctest: +SKIP
        PosixPath('.../huggingface/hub/models--ModelOrganismsForEM--.../snapshots/...')
    """
    folder = fetch(source, revision, ADAPTER_FILES, "adapter")
    absent = [f for f in ADAPTER_FILES if not (folder / f).exists()]
    if absent:
        hint = ""
        if not Path(source).expanduser().is_dir():
            repo_id, sub = split_hub_id(str(source))
            allow = [f"{sub}/{f}" if sub else f for f in ADAPTER_FILES]
            hint = f"; fetch them with: {download_command(repo_id, revision, allow)}"
        raise HubError(f"{source}: not a peft adapter folder, {absent} are missing{hint}")
    return folder


def run_folder(source: str | os.PathLike[str], revision: str | None = None) -> Path:
    """The local folder of a training run's adapters: a folder, or a hub id at ``revision``.

    Only adapter files are fetched from the hub (any depth), never optimizer state.

    Args:
        source: a run folder, or ``owner/name[/sub/folder]`` on the hub.
        revision: the hub revision (branch, tag or commit).

    Returns:
        The run's folder (its ``checkpoint-<step>`` adapters are checked by the caller).
    """
    return fetch(source, revision, RUN_FILES, "run")
