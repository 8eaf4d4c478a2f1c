"""Progress journals: finished work written as it completes, so a rerun resumes after it.

A `Journal` is an append-only JSONL file: a header line with the run's settings, then one
line per finished unit of work (a question's answers, a question's scores on one metric, a
sweep cell), flushed and synced to disk as each completes. A rerun with the same settings
reads the finished units back instead of recomputing them. A run killed mid-write leaves at
most a truncated last line, which is dropped; a journal written with other settings is
refused, naming what differs, so work is never mixed between runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from emlens.eval.stats import Estimate, Rate

_TYPES: dict[str, type] = {"Rate": Rate, "Estimate": Estimate}  # values a journal keeps


def encode(value: Any) -> Any:
    """``value`` as JSON-able data: numbers, strings, lists, dicts, `Rate` and `Estimate`.

    Raises:
        TypeError: a value of another kind.

    Examples:
        >>> encode({"em": Rate(3, 10), "kl": 0.5})
        {'em': {'__type__': 'Rate', 'k': 3, 'n': 10}, 'kl': 0.5}
    """
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    name = type(value).__name__
    if isinstance(value, Rate | Estimate):
        return {"__type__": name, **encode(dataclasses.asdict(value))}
    raise TypeError(
        f"a journal keeps numbers, strings, lists, dicts, Rate and Estimate, not {name}"
    )


def decode(data: Any) -> Any:
    """The value `encode` turned into ``data``.

    Examples:
        >>> decode(encode(Estimate(0.5, (0.25, 0.75), 8)))
        Estimate(mean=0.5, ci95=(0.25, 0.75), n=8)
    """
    if isinstance(data, list):
        return [decode(v) for v in data]
    if not isinstance(data, dict):
        return data
    if "__type__" not in data:
        return {k: decode(v) for k, v in data.items()}
    kind = _TYPES[data["__type__"]]
    fields = {f.name: decode(data[f.name]) for f in dataclasses.fields(kind)}
    if kind is Estimate:
        fields["ci95"] = tuple(fields["ci95"])
    return kind(**fields)


def fingerprint(value: Any) -> str:
    """A short digest of a value: tensors by their bytes, dataclasses by their fields.

    What a journal's settings record for interventions, direction sets and other values too
    large to write out; two values with one fingerprint are the same for a rerun.

    Examples:
        >>> fingerprint([1.0, "a"]) == fingerprint([1.0, "a"]) != fingerprint([2.0, "a"])
        True
    """
    h = hashlib.sha256()

    def feed(v: Any) -> None:
        if isinstance(v, torch.Tensor):
            t = v.detach().to("cpu", torch.float32).contiguous()
            h.update(repr(tuple(t.shape)).encode() + t.numpy().tobytes())
        elif dataclasses.is_dataclass(v) and not isinstance(v, type):
            h.update(type(v).__name__.encode())
            for f in dataclasses.fields(v):
                feed(getattr(v, f.name))
        elif isinstance(v, list | tuple):
            h.update(b"[")
            for x in v:
                feed(x)
            h.update(b"]")
        elif isinstance(v, Mapping):
            feed(sorted((str(k), x) for k, x in v.items()))
        else:
            h.update(repr(v).encode() + b";")

    feed(value)
    return h.hexdigest()[:16]


def _read(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The complete lines of a journal and the byte length they span (a cut line dropped)."""
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1  # a line without its newline was cut by a kill: dropped
    lines = []
    for i, line in enumerate(data[:end].splitlines()):
        try:
            lines.append(json.loads(line))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: line {i + 1} is not JSON ({e}); delete the file") from e
    return lines, end


class Journal:
    """An append-only log of finished work keyed by strings (JSONL, synced per entry).

    Args:
        path: the journal file; created (with its folder) when missing.
        settings: what the work depends on (JSON-able); a journal written with other
            settings is refused.

    Attributes:
        resumed: the entries read back from an earlier run.

    Raises:
        ValueError: the file was written with other settings, or is not a journal.

    Examples:
        >>> j = Journal("run.jsonl", {"n": 10})
        >>> if "q1" not in j:
        ...     j.put("q1", [0.5, 0.25])
        >>> Journal("run.jsonl", {"n": 10})["q1"]
        [0.5, 0.25]
    """

    def __init__(self, path: str | os.PathLike[str], settings: Mapping[str, Any]):
        self.path = Path(path)
        self.settings = json.loads(json.dumps(encode(dict(settings))))
        self._done: dict[str, Any] = {}
        if self.path.is_file():
            self._resume()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._append({"settings": self.settings})
        self.resumed = len(self._done)

    def _resume(self) -> None:
        lines, end = _read(self.path)
        if not lines:  # killed before its header was complete
            self.path.write_bytes(b"")
            self._append({"settings": self.settings})
            return
        old = lines[0].get("settings") if isinstance(lines[0], dict) else None
        if not isinstance(old, dict):
            raise ValueError(f"{self.path}: expected a progress journal; delete it to start over")
        if old != self.settings:
            diff = sorted(k for k in {**old, **self.settings} if old.get(k) != self.settings.get(k))
            raise ValueError(
                f"{self.path} holds the progress of a run with other settings (differing: "
                f"{', '.join(diff)}): delete it to start over"
            )
        for i, line in enumerate(lines[1:]):
            if not (
                isinstance(line, dict) and isinstance(line.get("key"), str) and "value" in line
            ):
                raise ValueError(f"{self.path}: line {i + 2} is not a journal entry; delete it")
            self._done[line["key"]] = line["value"]
        if end < self.path.stat().st_size:
            os.truncate(self.path, end)

    def _append(self, entry: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def __contains__(self, key: str) -> bool:
        return key in self._done

    def __getitem__(self, key: str) -> Any:
        return decode(self._done[key])

    def __len__(self) -> int:
        return len(self._done)

    def __iter__(self) -> Iterator[str]:
        return iter(self._done)

    def put(self, key: str, value: Any) -> None:
        """Record a finished unit of work (written and synced before this returns)."""
        data = encode(value)
        self._append({"key": key, "value": data})
        self._done[key] = data

    def remove(self) -> None:
        """Delete the file (the run's result is saved: nothing is left to resume)."""
        self.path.unlink(missing_ok=True)
