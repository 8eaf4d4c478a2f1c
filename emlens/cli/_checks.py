"""What every command checks before the expensive part, and how a user error is reported.

Each check runs while the arguments are parsed or before a model loads: numbers are finite and
in range, layer lists parse, input files exist and are of the right kind, output folders exist
and are writable. A failed check is one line naming the input and what was expected, exit
status 2 (`Parser.error`, `main`), never a traceback from a dependency.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from emlens.core.direction_set import DirectionSet

USER_ERRORS = (ValueError, OSError, KeyError)  # OSError: FileNotFoundError, PermissionError


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage block), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def fail(what: str, expected: str) -> NoReturn:
    """Stop for a user error: one line naming the input and what was expected."""
    raise ValueError(f"{what}: expected {expected}")


def report(cmd: str, e: BaseException) -> NoReturn:
    """Print a user error as one line and exit with status 2."""
    msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
    one_line = " ".join(part.strip() for part in str(msg).splitlines())
    print(f"emlens {cmd}: error: {one_line}", file=sys.stderr)
    raise SystemExit(2)


class BadValue(argparse.ArgumentTypeError, ValueError):
    """A command-line value of the wrong kind (argparse reports it; elsewhere a ValueError)."""


def _typed(parse: Callable[[str], Any], expected: str) -> Callable[[str], Any]:
    """An argparse ``type`` whose failure says what was expected."""

    def convert(s: str) -> Any:
        try:
            return parse(s)
        except (ValueError, TypeError):
            raise BadValue(f"expected {expected}, not {s!r}") from None

    return convert


def _layers(s: str) -> list[int]:
    out: list[int] = []
    for part in s.split(","):
        a, dash, b = part.strip().partition("-")
        lo = int(a)
        hi = int(b) if dash else lo
        if lo < 0 or hi < lo:
            raise ValueError(part)
        out += range(lo, hi + 1)
    return out


def _finite(s: str) -> float:
    x = float(s)
    if not math.isfinite(x):
        raise ValueError(s)
    return x


def _port(s: str) -> int:
    x = int(s)
    if not 0 <= x <= 65535:
        raise ValueError(s)
    return x


def _seconds(s: str) -> float:
    x = _finite(s)
    if x <= 0:
        raise ValueError(s)
    return x


def _at_least(low: float, kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(s: str) -> Any:
        x = kind(s)
        if x < low:
            raise ValueError(s)
        return x

    return parse


layers = _typed(_layers, "layers like 12, 10,15,20 or 0-29 (whole numbers >= 0)")
finite = _typed(_finite, "a finite number")
positive = _typed(_at_least(1, int), "a whole number >= 1")
count = _typed(_at_least(0, int), "a whole number >= 0")
seconds = _typed(_seconds, "a number of seconds > 0")
non_negative = _typed(_at_least(0, _finite), "a finite number >= 0")
port = _typed(_port, "a port 0-65535")


REFERENCE = "reference"  # names the shipped judged EM direction (SmolLM2's) in a spec


def direction_file(path: str) -> DirectionSet:
    """The direction set in ``path`` (``reference``: `emlens.reference_em_direction`), or a
    one-line error naming the file."""
    try:
        if path == REFERENCE and not Path(path).exists():
            from emlens.core.data import reference_em_direction

            return reference_em_direction()
        return DirectionSet.load(path)
    except (OSError, ValueError) as e:
        raise BadValue(str(e)) from None


def steer_spec(spec: str) -> tuple[DirectionSet, list[int], float]:
    """``--steer FILE:LAYERS:SCALE``, the file read and the numbers checked."""
    parts = spec.rsplit(":", 2)
    if len(parts) != 3:
        raise BadValue(
            f"expected FILE:LAYERS:SCALE (e.g. em.safetensors:15:4, or reference:15:4 for the "
            f"shipped judged EM direction), not {spec!r}"
        )
    path, ly, scale = parts
    return direction_file(path), layers(ly), finite(scale)


def ablate_spec(spec: str) -> tuple[DirectionSet, int]:
    """``--ablate FILE:LAYER``, the file read and the layer checked."""
    path, colon, ly = spec.rpartition(":")
    if not colon:
        raise BadValue(f"expected FILE:LAYER (e.g. em.safetensors:15), not {spec!r}")
    return direction_file(path), _typed(_at_least(0, int), "a layer >= 0")(ly)


def interventions(a: argparse.Namespace, model: Any) -> list[Any]:
    """The ``--steer``/``--ablate`` interventions, checked against the loaded model."""
    return checked_interventions(model, getattr(a, "steer", []), getattr(a, "ablate", []))


def checked_interventions(
    model: Any,
    steers: list[tuple[DirectionSet, list[int], float]],
    ablations: list[tuple[DirectionSet, int]],
) -> list[Any]:
    """Parsed `steer_spec`/`ablate_spec` results as interventions, checked against ``model``."""
    from emlens.core.interventions import ablate, steer

    out: list[Any] = []
    for ds, ly, scale in steers:
        ds.check_model(model)
        out.append(steer(ds, ly, scale))
    for ds, layer in ablations:
        ds.check_model(model)
        out.append(ablate(ds, layer))
    return out


def input_file(path: str | None, flag: str) -> None:
    """Raise unless ``path`` (when given) is a readable file."""
    if path is not None and not Path(path).is_file():
        fail(f"{flag} {path}", "an existing file")
    if path is not None and not os.access(path, os.R_OK):
        fail(f"{flag} {path}", "a file this user can read")


def _writable_folder(folder: Path, what: str) -> None:
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        fail(what, f"a folder this user can write to ({e.strerror})")


def out_file(path: str | None, flag: str = "--out") -> None:
    """Raise unless ``path`` (when given) can be written: its folder exists and is writable."""
    if path is None:
        return
    p = Path(path)
    if p.is_dir():
        fail(f"{flag} {path}", "a file name, not a folder")
    if not p.parent.is_dir():
        fail(f"{flag} {path}", f"a file in an existing folder ({p.parent} does not exist)")
    _writable_folder(p.parent, f"{flag} {path}")


def out_folder(path: str | None, flag: str = "--out") -> None:
    """Raise unless folder ``path`` exists writable or can be made in its nearest existing
    ancestor."""
    if path is None:
        return
    p = Path(path).absolute()
    if p.exists() and not p.is_dir():
        fail(f"{flag} {path}", "a folder, not a file")
    existing = next(q for q in (p, *p.parents) if q.exists())
    if not existing.is_dir():
        fail(f"{flag} {path}", f"a folder ({existing} is a file)")
    _writable_folder(existing, f"{flag} {path}")


def device(spec: str) -> str:
    """``--device``, checked to name a device this machine has (an argparse ``type``)."""
    if not spec.startswith("cuda"):
        return spec
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = spec.partition(":")[2]
    if n == 0 or (index and (not index.isdigit() or int(index) >= n)):
        have = f"cuda:0 to cuda:{n - 1}" if n else "cpu or auto (torch sees no CUDA GPU here)"
        raise BadValue(f"expected {have}, not {spec!r}")
    return spec
