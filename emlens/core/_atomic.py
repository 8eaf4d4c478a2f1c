"""Files and folders written whole or not at all: a temporary one beside, then a rename.

A run killed while saving leaves the previous file (or none), never half of one: the
temporary file is renamed over the target only once it is complete (`os.replace` is atomic
on one file system). A folder (a training checkpoint) is renamed into place only once
complete, so it appears whole; one it replaces is removed just before.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_atomic(path: str | os.PathLike[str], write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp)`` on a temporary path beside ``path``, then rename it to ``path``.

    Args:
        path: the file (or folder) to write; its parent folder must exist.
        write: writes the whole file to the path it is given, or makes the folder there and
            fills it.

    Returns:
        ``path`` as a `Path`.

    Raises:
        FileNotFoundError: the folder of ``path`` does not exist.

    Examples:
        >>> write_atomic("a.txt", lambda p: p.write_text("done")).read_text()
        'done'
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path}: the folder {path.parent} does not exist")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    _remove(tmp)  # a leftover of a killed write
    try:
        write(tmp)
        if tmp.is_dir():
            _remove(path)  # a folder is renamed only over nothing
        tmp.replace(path)
    finally:
        _remove(tmp)
    return path


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
