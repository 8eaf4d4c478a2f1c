"""A Hugging Face hub cache built in a test: the snapshot layout ``huggingface_hub`` reads
under ``HF_HUB_OFFLINE=1`` (``models--owner--name/refs/<ref>``, ``snapshots/<commit>/...``)."""

import hashlib
import shutil
from pathlib import Path


def use_cache(monkeypatch, path: Path) -> Path:
    """Point ``HF_HUB_CACHE`` (and huggingface_hub's copy of it, read at import) at ``path``."""
    from huggingface_hub import constants

    path.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("HF_HUB_CACHE", str(path))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return path


def publish(cache: Path, repo_id: str, folder: Path, refs=("main",), sub: str = "") -> str:
    """Copy ``folder`` into a new snapshot of ``repo_id`` (under ``sub``) and point ``refs``
    at it, as a download would leave it; returns the commit hash."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(f"{repo_id}{folder}{sub}{refs}".encode()).hexdigest()
    shutil.copytree(folder, repo / "snapshots" / commit / sub, dirs_exist_ok=True)
    for ref in refs:
        (repo / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    return commit
