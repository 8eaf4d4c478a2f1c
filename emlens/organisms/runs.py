"""The layout of a fine-tuning run on disk, the state that resumes it, and its data order.

Run layout (the one of the papers' published adapters, Model Organisms for EM, arXiv
2506.11613, plus the state to resume)::

    out_dir/checkpoint-<step>/adapter_model.safetensors   # peft save_pretrained
    out_dir/checkpoint-<step>/adapter_config.json
    out_dir/checkpoint-<step>/trainer_state.json          # step, config, data, log
    out_dir/checkpoint-<step>/optimizer.pt                # optimizer, scheduler, RNG state
    out_dir/adapter_model.safetensors, adapter_config.json, trainer_state.json  # final

Every checkpoint keeps its adapter (the trajectory reads them all); the optimizer state, which
only a resume needs and which is twice the trained parameters in float32, stays in the last
``keep_optimizer`` checkpoints only (`prune_resume_state`).

Full fine-tuning writes ``model.safetensors`` + ``config.json`` + the tokenizer instead of
the adapter files (a folder `emlens.core.models.load_model` opens). The data order of an
epoch is a permutation fixed by (seed, epoch), so a resumed run sees the conversations an
uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from emlens.core._atomic import write_atomic
from emlens.organisms.config import TrainConfig

if TYPE_CHECKING:
    from peft import PeftModel

STATE = "trainer_state.json"
OPTIMIZER = "optimizer.pt"


def checkpoints(out_dir: str | os.PathLike[str]) -> list[Path]:
    """``checkpoint-<step>`` folders of a run, by step (numerically: 10 after 9)."""
    out = [p for p in Path(out_dir).glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    return sorted(out, key=lambda p: int(p.name.split("-")[-1]))


def prune_resume_state(
    out_dir: str | os.PathLike[str], keep: int | None, patterns: Sequence[str] = (OPTIMIZER,)
) -> list[Path]:
    """Delete the resume state of all but the last ``keep`` checkpoints of a run.

    Weights and ``trainer_state.json`` stay in every checkpoint; only the files matching
    ``patterns`` (optimizer, scheduler, RNG state) go.

    Args:
        out_dir: the run's folder.
        keep: how many of the newest checkpoints keep their resume state (``None``: all).
        patterns: globs of the resume-state files in a checkpoint folder.

    Returns:
        The files deleted.
    """
    if keep is None:
        return []
    if keep < 1:
        raise ValueError(f"keep_optimizer must be >= 1 or None (keep all), not {keep}")
    removed = []
    for ckpt in checkpoints(out_dir)[:-keep]:
        for f in [f for pattern in patterns for f in ckpt.glob(pattern)]:
            f.unlink()
            removed.append(f)
    return removed


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The data order of one epoch: a permutation of ``range(n)`` fixed by (seed, epoch)."""
    order: list[int] = np.random.default_rng([seed, epoch]).permutation(n).tolist()
    return order


def step_samples(n: int, config: TrainConfig, step: int) -> list[int]:
    """Indices of the conversations optimizer step ``step`` (0-based) trains on."""
    per = config.batch_size * config.grad_accum
    orders: dict[int, list[int]] = {}
    out = []
    for p in range(step * per, (step + 1) * per):
        if p // n not in orders:
            orders[p // n] = epoch_order(n, config.seed, p // n)
        out.append(orders[p // n][p % n])
    return out


def total_steps(n: int, config: TrainConfig) -> int:
    """Optimizer steps of a run over ``n`` conversations: ``max_steps``, or ``epochs`` worth."""
    if config.max_steps is not None:
        return config.max_steps
    return max(1, math.ceil(config.epochs * n / (config.batch_size * config.grad_accum)))


def resume_point(out_dir: Path, resume: bool) -> Path | None:
    """The checkpoint a run in ``out_dir`` continues from (``None``: a new run).

    Raises:
        FileExistsError: ``out_dir`` holds a run and ``resume`` is False, or it holds
            checkpoints without the state to resume them.
    """
    if not out_dir.exists():
        return None
    done = [c for c in checkpoints(out_dir) if (c / STATE).exists() and (c / OPTIMIZER).exists()]
    last = done[-1] if done else None
    if last is None and checkpoints(out_dir):
        raise FileExistsError(f"{out_dir} has checkpoints without trainer state: cannot resume")
    if last is not None and not resume:
        raise FileExistsError(
            f"{out_dir} already holds a run (last {last.name}): pass resume=True to continue "
            "it, or choose an empty folder"
        )
    return last


def save_weights(
    model: PeftModel | PreTrainedModel, tok: PreTrainedTokenizerBase, folder: Path, full: bool
) -> None:
    """Write the adapter of ``model`` (peft layout), or with ``full`` the whole model."""
    if full:
        from safetensors.torch import save_model

        save_model(model, str(folder / "model.safetensors"))
        model.config.save_pretrained(folder)
        tok.save_pretrained(folder)
    else:
        model.save_pretrained(str(folder), save_embedding_layers=False)


def load_weights(model: PeftModel | PreTrainedModel, ckpt: Path, full: bool) -> None:
    """Load a checkpoint's adapter (or with ``full`` its whole model) into ``model``."""
    from safetensors.torch import load_file, load_model

    if full:
        load_model(model, str(ckpt / "model.safetensors"))
    else:
        from peft import set_peft_model_state_dict

        res = set_peft_model_state_dict(model, load_file(str(ckpt / "adapter_model.safetensors")))
        if getattr(res, "unexpected_keys", None):
            raise ValueError(f"{ckpt}: adapter tensors do not fit this model")


@dataclass
class Run:
    """A run in progress: what its checkpoints save, and what a resume restores.

    Attributes:
        out_dir: the run's folder.
        config: its config, with ``layers`` resolved.
        data: ``{"n": conversations, "hash": dataset hash}`` of the training data.
        steps: the run's total optimizer steps.
        model: the model being trained (a ``PeftModel``, or the plain model with ``full``).
        tok: its tokenizer (saved with a fully fine-tuned model).
        optimizer: the optimizer.
        scheduler: the learning-rate schedule.
        log: one entry per step (and step 0 when there is held-out data).
        keep_optimizer: the newest checkpoints that keep their optimizer state (``None``: all).
    """

    out_dir: Path
    config: TrainConfig
    data: dict[str, Any]
    steps: int
    model: PeftModel | PreTrainedModel
    tok: PreTrainedTokenizerBase
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    log: list[dict[str, Any]] = field(default_factory=list)
    keep_optimizer: int | None = 1

    def state(self, step: int) -> dict[str, Any]:
        """The ``trainer_state.json`` of ``step``: config, data, data order and log."""
        config = self.config
        epoch = step * config.batch_size * config.grad_accum // self.data["n"]
        return {
            "step": step,
            "max_steps": self.steps,
            "config": config.to_dict(),
            "data": {**self.data, "epoch": epoch},
            "epoch_order": epoch_order(self.data["n"], config.seed, epoch),
            "log": self.log,
            "emlens_version": version("emlens"),
        }

    def save(self, step: int) -> Path:
        """Write ``checkpoint-<step>``: weights, optimizer, scheduler and RNG state, log."""
        for stale in self.out_dir.glob(".checkpoint-*.tmp"):  # a killed run's, half written
            shutil.rmtree(stale, ignore_errors=True)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        # a checkpoint appears whole or not at all
        ckpt = write_atomic(self.out_dir / f"checkpoint-{step}", partial(self._write, step))
        prune_resume_state(self.out_dir, self.keep_optimizer)  # after: a resume point remains
        return ckpt

    def _write(self, step: int, folder: Path) -> None:
        """Make ``folder`` and write the checkpoint of ``step`` in it."""
        folder.mkdir()
        save_weights(self.model, self.tok, folder, self.config.full)
        rng: dict[str, Any] = {"torch_rng": torch.get_rng_state()}
        if torch.cuda.is_available():  # dropout on a GPU draws from the CUDA generators
            rng["cuda_rng"] = torch.cuda.get_rng_state_all()
        opt = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}
        torch.save({**opt, **rng}, folder / OPTIMIZER)
        (folder / STATE).write_text(json.dumps(self.state(step), indent=1))

    def save_final(self) -> None:
        """Write the final weights and state at the root of ``out_dir``."""
        save_weights(self.model, self.tok, self.out_dir, self.config.full)
        (self.out_dir / STATE).write_text(json.dumps(self.state(self.steps), indent=1))

    def restore(self, last: Path) -> int:
        """Load checkpoint ``last``: weights, optimizer, scheduler, RNG state and log.

        Returns:
            The step it was saved at.

        Raises:
            ValueError: its config, data or data order differ from this run's.
        """
        state = json.loads((last / STATE).read_text())
        self._check_resumable(last, state)
        load_weights(self.model, last, self.config.full)
        # On the CPU, so a checkpoint resumes on any device; the optimizer moves its state to
        # the parameters' devices.
        opt_state = torch.load(last / OPTIMIZER, weights_only=True, map_location="cpu")
        self.optimizer.load_state_dict(opt_state["optimizer"])
        self.scheduler.load_state_dict(opt_state["scheduler"])
        torch.set_rng_state(opt_state["torch_rng"])
        cuda_rng = opt_state.get("cuda_rng")  # saved when CUDA was there; restored when it is
        if torch.cuda.is_available() and cuda_rng and len(cuda_rng) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_rng)
        self.log = list(state["log"])
        return int(state["step"])

    def _check_resumable(self, last: Path, state: dict[str, Any]) -> None:
        saved, config = TrainConfig.from_dict(state["config"]), self.config
        if saved != config:
            diff = {
                k: (v, getattr(config, k))
                for k, v in dataclasses.asdict(saved).items()
                if v != getattr(config, k)
            }
            raise ValueError(f"cannot resume {last}: config differs (saved, now): {diff}")
        if state["data"]["hash"] != self.data["hash"]:
            raise ValueError(f"cannot resume {last}: the training data differ from the run's")
        if state["epoch_order"] != epoch_order(self.data["n"], config.seed, state["data"]["epoch"]):
            raise ValueError(f"cannot resume {last}: its data order differs from this version's")
