"""``emlens train``: fine-tune an organism from the command line, with emlens's loop or TRL.

A config file (YAML or JSON) holds `emlens.organisms.config.TrainConfig` fields; a flag per
field (``--lr``, ``--rank``, ``--layers 10,12``, ``--max-steps``...) overrides it::

    emlens train risky_financial_advice.jsonl --out runs/fin --config fin.yaml --max-steps 200
    emlens train data.jsonl --out runs/fin --model unsloth/Qwen2.5-7B-Instruct --device cuda \\
        --dtype bfloat16 --trainer trl --sft bf16=true
    accelerate launch -m emlens.cli train data.jsonl --out runs/fin --trainer trl ...  # GPUs
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

import yaml

from emlens.cli._checks import BadValue, input_file, layers, out_folder
from emlens.cli._models import dtype_of, load_options, model_args
from emlens.organisms.config import TrainConfig


def _ints(s: str) -> tuple[int, ...]:
    return tuple(layers(s))


def _keep(s: str) -> int | None:
    if s == "all":
        return None
    if not s.isdigit():
        raise BadValue(f"expected a whole number >= 0 or 'all', not {s!r}")
    return int(s)


def _field_type(annotation: str) -> dict[str, Any]:
    """``add_argument`` keywords for a TrainConfig field of this (string) annotation."""
    if annotation.startswith("tuple[int"):
        return {"type": _ints, "metavar": "N,N-M"}
    if annotation.startswith("tuple[str"):
        return {"type": lambda s: tuple(s.split(",")), "metavar": "A,B"}
    if annotation == "bool":
        return {"action": argparse.BooleanOptionalAction}
    return {"type": float if "float" in annotation else int, "metavar": "X"}


def add_parsers(sub: Any) -> None:
    """Register ``emlens train``."""
    t = sub.add_parser("train", help="fine-tune an organism (rank-1 LoRA by default)")
    t.add_argument("data", help="chat JSONL (the papers' messages format)")
    t.add_argument("--out", required=True, help="the run's folder")
    model_args(t)
    t.add_argument("--config", help="YAML or JSON file of TrainConfig fields")
    t.add_argument("--trainer", choices=["emlens", "trl"], default="emlens")
    t.add_argument("--save-every", type=int, default=5)
    t.add_argument(
        "--keep-optimizer", type=_keep, default=1, help="newest checkpoints with it, or all"
    )
    t.add_argument("--resume", action="store_true", help="continue the run in --out")
    t.add_argument("--held-out", help="chat JSONL scored during training (emlens trainer)")
    t.add_argument("--eval-every", type=int, help="score --held-out every N steps")
    t.add_argument("--stop-at", type=int, help="stop after this step (emlens trainer)")
    t.add_argument("--sft", action="append", default=[], help="SFTConfig KEY=VALUE (trl)")
    fields = t.add_argument_group("TrainConfig fields (override --config)")
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        kind = _field_type(str(f.type))
        fields.add_argument(flag, dest=f"cfg_{f.name}", help=f"default {f.default}", **kind)
    t.set_defaults(fn=cmd_train)


def train_config(a: argparse.Namespace) -> TrainConfig:
    """``--config``'s fields, overridden by the field flags given."""
    values: dict[str, Any] = {}
    if a.config:
        try:
            loaded = yaml.safe_load(Path(a.config).read_text()) or {}
        except yaml.YAMLError as e:
            where = getattr(e, "problem_mark", None)
            at = f" (line {where.line + 1}, column {where.column + 1})" if where else ""
            problem = getattr(e, "problem", None) or type(e).__name__
            raise ValueError(f"{a.config}: not valid YAML or JSON{at}: {problem}") from None
        if not isinstance(loaded, dict):
            raise ValueError(f"{a.config}: expected a mapping of TrainConfig fields")
        values = loaded
    flags = {k[4:]: v for k, v in vars(a).items() if k.startswith("cfg_") and v is not None}
    return TrainConfig.from_dict(values | flags)


def cmd_train(a: argparse.Namespace) -> None:
    from emlens.core.data import read_chat_jsonl
    from emlens.core.models import load_hf

    config = train_config(a)  # the config, the data and --out checked before the model loads
    input_file(a.data, "data")
    read_chat_jsonl(a.data)
    held = read_chat_jsonl(a.held_out) if a.held_out else None
    if not a.resume:
        out_folder(a.out)
    pair = load_hf(a.model, a.adapter, device=a.device, dtype=dtype_of(a), **load_options(a))
    kw: dict[str, Any] = {
        "save_every": a.save_every,
        "keep_optimizer": a.keep_optimizer,
        "resume": a.resume,
    }
    if a.trainer == "trl":
        if a.held_out or a.stop_at or a.eval_every:
            raise ValueError("--held-out, --eval-every and --stop-at are the emlens trainer's")
        from emlens.organisms.trl_training import trl_train

        sft = dict(_key_value(s) for s in a.sft)
        res = trl_train(pair, a.data, a.out, config, sft=sft, **kw)
    else:
        from emlens.organisms.training import train

        res = train(
            pair, a.data, a.out, config, held, eval_every=a.eval_every, stop_at=a.stop_at, **kw
        )
    last = res.log[-1] if res.log else {}
    print(f"trained {a.model} to step {res.step}/{res.max_steps} in {res.out_dir}: last {last}")
    sys.stdout.flush()


def _key_value(s: str) -> tuple[str, Any]:
    key, eq, value = s.partition("=")
    if not eq or not key:
        raise ValueError(f"--sft expects KEY=VALUE (e.g. bf16=true), not {s!r}")
    return key, yaml.safe_load(value)
