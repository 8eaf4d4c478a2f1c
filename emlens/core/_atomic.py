"""Files written whole or not at all: a temporary file beside the target, then a rename.

A run killed while saving leaves the previous file (or none), never half of one: the
temporary file is renamed over the target only once it is complete (`os.replace` is atomic
on one file system), as training checkpoints are.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_atomic(path: str | os.PathLike[str], write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp)`` on a temporary path beside ``path``, then rename it to ``path``.

    Args:
        path: the file to write; its folder must exist.
        write: writes the whole file to the path it is given.

    Returns:
        ``path`` as a `Path`.

    Raises:
        FileNotFoundError: the folder of ``path`` does not exist.

    Examples:
        >>> write_atomic(tmp_path / "a.txt", lambda p: p.write_text("done")).read_text()
        'done'
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path}: the folder {path.parent} does not exist")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
