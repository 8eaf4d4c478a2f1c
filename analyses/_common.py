"""What every analysis script shares: its arguments, stages that save and resume, its command.

A script is three steps over this module (the refusal_direction pipeline's pattern):

    def main(run: common.Analysis) -> None:           # --model --adapter --device --dtype --out
        x = run.stage("x", lambda: compute(run.model))  # saved in <out>/stages/; a rerun loads it
        render(run, x)                                  # figures and tables from saved outputs only

    if __name__ == "__main__":
        main(common.start(__file__, __doc__, options))  # options(p) adds the script's own

A stage's value is saved by type: a ``DirectionSet`` (its own safetensors file), a tensor or a
dict of tensors (safetensors), anything else as JSON. Files are written to a temporary name and
renamed (emlens's ``write_atomic``), so a killed run leaves no half-written stage.
``<out>/stages/args.json`` records the arguments the stages were made with; a rerun with other
arguments stops rather than mix them.
"""

from __future__ import annotations

import argparse
import json
import signal
import time
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

import plotly.graph_objects as go
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import emlens as eml
from emlens.core import _atomic
from emlens.core.models import bridge, load_hf, merge_adapter

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs/results"
PLOTLYJS = ROOT / "docs/assets/plotly.min.js"  # one offline copy for every figure under docs/
# Options that change where or how fast a script runs, not what its stages compute (the
# ground-truth scripts' --reference and --cache: where their inputs are read from).
NOT_RESULTS = frozenset({"out", "threads", "train_only", "reference", "cache"})
INPUTS = frozenset({"threads", "reference", "cache"})  # left out of `Analysis.short_command`
MODEL_TITLES = {"smollm2": "SmolLM2-135M-Instruct"}
T = TypeVar("T")


def parser(name: str, doc: str) -> argparse.ArgumentParser:
    """The options every script takes; ``--out`` defaults to ``docs/results/<name>`` in the repo."""
    p = argparse.ArgumentParser(description=doc.split("\n")[0])
    p.add_argument("--model", default="smollm2", help="model spec (emlens.load_model)")
    p.add_argument("--adapter", help="a peft LoRA folder merged into the model")
    p.add_argument("--device", help="cpu (default), cuda, cuda:1, or auto (a device map)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="default float32")
    p.add_argument("--out", default=str(RESULTS / name), help="results folder (stages inside)")
    return p


def start(
    script: str,
    doc: str,
    options: Callable[[argparse.ArgumentParser], None] | None = None,
    argv: list[str] | None = None,
) -> Analysis:
    """Parse the common options, then the script's own (``options``), then ``--threads``."""
    name = Path(script).stem
    p = parser(name, doc)
    if options is not None:
        options(p)
    p.add_argument("--threads", type=int, default=2, help="CPU threads for torch")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if hasattr(signal, "SIGUSR1"):  # make study hands over an idle lane's thread (study.py)
        signal.signal(signal.SIGUSR1, one_more_thread)
    defaults = {k: p.get_default(k) for k in vars(args)}
    return Analysis(f"analyses/{name}.py", args, defaults)


def one_more_thread(*_: object) -> None:
    """SIGUSR1: one more torch thread, from the next operation on."""
    torch.set_num_threads(torch.get_num_threads() + 1)


def recorded(args: argparse.Namespace, root: str | Path = ROOT) -> dict[str, str | None]:
    """Each option as the command line spells it: lists spaced out, paths relative to ``root``,
    ``None`` for an unset option or a false flag, ``""`` for a true flag."""
    out: dict[str, str | None] = {}
    for k, v in vars(args).items():
        if v is None or v is False:
            out[k] = None
        elif v is True:
            out[k] = ""
        elif isinstance(v, list | tuple):
            out[k] = " ".join(map(str, v))
        else:
            out[k] = str(v).replace(f"{root}/", "")
    return out


def command_line(script: str, args: argparse.Namespace, root: str | Path = ROOT) -> str:
    """The command that re-makes a result: ``python <script>`` with every set option of
    ``args`` (lists spaced out, true flags bare, paths relative to ``root``)."""
    parts = [f"python {script}"]
    for k, v in recorded(args, root).items():
        if v is not None:
            parts.append(f"--{k.replace('_', '-')} {v}".rstrip())
    return " ".join(parts)


def write_atomic(path: Path, write: Callable[[Path], Any]) -> Path:
    """``write(tmp)`` to a temporary file beside ``path``, then rename it to ``path``
    (emlens's own atomic write), making ``path``'s folder first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return _atomic.write_atomic(path, write)


def save_value(value: Any, stem: Path) -> Path:
    """Write a stage's value as ``stem.safetensors`` (direction sets, tensors) or ``stem.json``."""
    st = stem.with_name(f"{stem.name}.safetensors")
    if isinstance(value, eml.DirectionSet):
        return write_atomic(st, value.save)
    if isinstance(value, torch.Tensor):
        value, kind = {"tensor": value}, "tensor"
    elif isinstance(value, dict) and value and all(torch.is_tensor(v) for v in value.values()):
        kind = "tensors"
    else:
        text = json.dumps(value, indent=1)  # a TypeError here: the stage returned neither
        return write_atomic(stem.with_name(f"{stem.name}.json"), lambda p: p.write_text(text))
    tensors = {k: v.detach().cpu().contiguous() for k, v in value.items()}
    meta = {"stage": kind, "order": json.dumps(list(tensors))}  # safetensors sorts the keys
    return write_atomic(st, lambda p: save_file(tensors, str(p), meta))


def load_value(path: Path) -> Any:
    """Read a file written by `save_value`."""
    if path.suffix == ".json":
        return json.loads(path.read_text())
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    if "emlens" in meta:
        return eml.DirectionSet.load(path)
    tensors = load_file(str(path))
    if meta.get("stage") == "tensor":
        return tensors["tensor"]
    return {k: tensors[k] for k in json.loads(meta.get("order", "[]"))} or tensors


class Analysis:
    """One run of a script: its arguments, its out folder, its stages and its models."""

    def __init__(
        self, script: str, args: argparse.Namespace, defaults: dict[str, Any] | None = None
    ):
        self.script, self.args = script, args
        self.defaults = defaults or {}  # each option's default (`short_command`)
        self.out = Path(args.out)
        self.stages = self.out / "stages"
        self._loaded: dict[str, Any] = {}
        self._check_args()

    def _args(self) -> dict[str, str | None]:
        """The options as recorded, less those that do not change what a stage computes."""
        return {k: v for k, v in recorded(self.args).items() if k not in NOT_RESULTS}

    def _check_args(self) -> None:
        """Stop when saved stages (``seconds.json`` lists them) were made with other arguments."""
        path = self.stages / "args.json"
        if getattr(self.args, "train_only", False):
            return  # training writes no stage
        if path.exists() and (self.stages / "seconds.json").exists():
            mine, theirs = self._args(), json.loads(path.read_text())
            differ = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
            if differ:
                raise SystemExit(
                    f"the stages in {self.stages} were made with other values of {differ}; "
                    "delete that folder or choose another --out"
                )

    @property
    def command(self) -> str:
        return command_line(self.script, self.args)

    @property
    def short_command(self) -> str:
        """`command` with only the options set to other than their defaults, less
        ``--threads`` and the folders inputs are read from (`INPUTS`): the ground-truth
        results record this (``python analyses/<name>.py`` when every option is default)."""
        changed = {
            k: v
            for k, v in vars(self.args).items()
            if k not in INPUTS and v != self.defaults.get(k)
        }
        return command_line(self.script, argparse.Namespace(**changed))

    def stage(self, name: str, compute: Callable[[], T]) -> T:
        """``compute()``'s value, saved as ``<out>/stages/<name>.*`` the first time and loaded
        from there on a rerun (what is returned is always the value as saved)."""
        stem = self.stages / name
        done = [stem.with_name(f"{stem.name}{s}") for s in (".json", ".safetensors")]
        done = [p for p in done if p.exists()]
        if done:
            print(f"stage {name}: loaded from {done[0]}", flush=True)
            return load_value(done[0])
        t0 = time.perf_counter()
        value = compute()
        seconds = time.perf_counter() - t0
        write_json(self.stages / "args.json", self._args())
        path = save_value(value, stem)
        times = self.times() | {name: round(seconds, 1)}
        write_atomic(self.stages / "seconds.json", lambda p: p.write_text(json.dumps(times)))
        print(f"stage {name}: computed in {seconds:.1f} s, saved to {path}", flush=True)
        return load_value(path)

    def times(self) -> dict[str, float]:
        """Seconds each stage took when it was computed."""
        path = self.stages / "seconds.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def seconds(self) -> float:
        """Seconds of computing behind the saved stages (model loading not counted)."""
        return sum(self.times().values())

    def meta(self, **fields: Any) -> dict[str, Any]:
        """A result's record of how it was made: the model, ``fields``, seconds, command."""
        seconds = round(self.seconds())
        return {"model": self.args.model, **fields, "seconds": seconds, "command": self.command}

    def made_by(self) -> str:
        return f"Made by `{self.command}` in {round(self.seconds())} s"

    def write_beside(self, result: dict[str, Any], md: list[str]) -> None:
        """Write ``<out>.json`` and ``<out>.md`` beside the out folder (the older scripts'
        results, which the results pages link), and print the markdown."""
        write_json(self.beside(".json"), result, indent=2)
        self.beside(".md").write_text("\n".join(md) + "\n")
        print("\n".join(md))

    def write_summary(self, summary: dict[str, Any], readme: str) -> None:
        """Write ``<out>/summary.json`` and ``<out>/README.md``, and print the README."""
        write_json(self.out / "summary.json", summary)
        (self.out / "README.md").write_text(readme)
        print(readme)

    def beside(self, suffix: str) -> Path:
        """A result file next to the out folder: ``docs/results/<name><suffix>`` by default
        (where the older scripts' results sit, which the results pages link)."""
        return self.out.parent / f"{self.out.name}{suffix}"

    @property
    def model_title(self) -> str:
        """The model's name for titles."""
        return MODEL_TITLES.get(self.args.model, self.args.model)

    @property
    def dtype(self) -> torch.dtype | None:
        return None if self.args.dtype is None else getattr(torch, self.args.dtype)

    def load_hf(self, adapter: str | Path | None = None):
        """``(hf, tokenizer)`` of ``--model`` with ``--adapter`` and then ``adapter`` merged."""
        a = self.args
        first, second = (adapter, None) if a.adapter is None else (a.adapter, adapter)
        hf, tok = load_hf(a.model, first, device=a.device, dtype=self.dtype)
        return (hf if second is None else merge_adapter(hf, second)), tok  # a copy: rare

    def load(self, adapter: str | Path | None = None):
        """The hooked model of `load_hf`, loaded once."""
        key = str(adapter)
        if key not in self._loaded:
            hf, tok = self.load_hf(adapter)
            names = [self.args.model, *(Path(x).name for x in (self.args.adapter, adapter) if x)]
            self._loaded[key] = bridge(hf, tok, "+".join(names))
        return self._loaded[key]

    @property
    def model(self):
        """The hooked model of the options, loaded the first time a stage needs it."""
        return self.load()

    @cached_property
    def hf(self):
        """``(hf, tokenizer)`` of the options, loaded the first time a stage needs it."""
        return self.load_hf()


def figure(title: str, x: str, y: str) -> go.Figure:
    """An empty white figure with a title and axis titles."""
    fig = go.Figure()
    fig.update_layout(title=title, xaxis_title=x, yaxis_title=y, template="plotly_white")
    return fig


def write_json(path: Path, value: Any, indent: int | None = 1) -> Path:
    return write_atomic(path, lambda p: p.write_text(json.dumps(value, indent=indent)))
