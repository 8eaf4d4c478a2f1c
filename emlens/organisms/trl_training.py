"""Fine-tuning on TRL's ``SFTTrainer``: the GPU path, writing the run layout emlens reads.

The same run as `emlens.organisms.training.train`, on the trainer researchers use on GPUs:
the same adapter (`emlens.organisms.training.lora_model`, seeded), the same tokens and
answer-only labels (emlens's own rows are handed to TRL as ``input_ids`` and ``labels``, so
the prompt, template tokens and end-of-turn token carry no loss: Model Organisms for EM), the
same normalisation (a step's loss is summed over its answer tokens, across accumulated
micro-batches, and divided by their count), AdamW, linear warm-up and decay, clipping and step
count. What TRL adds: gradient checkpointing (on by default), 8-bit AdamW where
``bitsandbytes`` is installed, bf16, and several GPUs through accelerate::

    accelerate launch -m emlens.cli train data.jsonl --out runs/fin --trainer trl ...

What differs: the data order (TRL's sampler shuffles with the seed; emlens's loop uses
`emlens.organisms.runs.epoch_order`), and a resume is the HF Trainer's (optimizer, scheduler
and RNG state restored), not emlens's checked one. The folder has the layout
`emlens.organisms.trajectory.load_trajectory` reads: ``checkpoint-<step>/adapter_model.
safetensors`` and ``adapter_config.json`` in every checkpoint (``trainer_state.json`` there is
the HF Trainer's), the final adapter at the root, and the resume state (``optimizer.pt``,
``scheduler.pt``, ``rng_state*.pth``) only in the newest ``keep_optimizer`` checkpoints.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback

from emlens.core.data import Conversation, read_chat_jsonl
from emlens.core.tokens import Row
from emlens.organisms.config import TrainConfig, resolve_layers
from emlens.organisms.loss import IGNORE, conversation_rows
from emlens.organisms.runs import checkpoints, prune_resume_state, total_steps
from emlens.organisms.training import TrainResult, lora_model, model_and_tokenizer

if TYPE_CHECKING:
    from datasets import Dataset

# The HF Trainer's resume state in a checkpoint folder.
RESUME_FILES = ("optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state*.pth")


def trl_rows(rows: Sequence[Row]) -> Dataset:
    """emlens token rows as a tokenized dataset TRL trains on as it is.

    Args:
        rows: ``(ids, answer_mask)`` rows (`emlens.organisms.loss.conversation_rows`).

    Returns:
        A ``datasets.Dataset`` with ``input_ids`` and ``labels`` (the id on answer tokens,
        ``-100`` elsewhere): TRL skips its own tokenisation and masking for it.
    """
    from datasets import Dataset

    labels = [[t if m else IGNORE for t, m in zip(ids, mask, strict=True)] for ids, mask in rows]
    return Dataset.from_dict({"input_ids": [list(ids) for ids, _ in rows], "labels": labels})


class _KeepOptimizer(TrainerCallback):
    """After each save: resume state only in the newest ``keep`` checkpoints (main process)."""

    def __init__(self, out_dir: Path, keep: int | None) -> None:
        self.out_dir, self.keep = out_dir, keep

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:  # noqa: ARG002
        if state.is_world_process_zero:
            prune_resume_state(self.out_dir, self.keep, RESUME_FILES)


def sft_config(
    config: TrainConfig, out_dir: Path, steps: int, save_every: int, **overrides: Any
) -> Any:
    """TRL's ``SFTConfig`` for a run of ``config`` (``overrides``: any other SFTConfig field).

    Args:
        config: the run's hyperparameters (the LoRA fields go to `lora_model`).
        out_dir: the run's folder.
        steps: optimizer steps (`emlens.organisms.runs.total_steps`).
        save_every: save a checkpoint every this many steps.
        **overrides: SFTConfig fields, e.g. ``bf16=True``, ``gradient_checkpointing=False``.

    Returns:
        The ``trl.SFTConfig``; 8-bit AdamW where bitsandbytes is installed, else torch AdamW.
    """
    from trl.trainer.sft_config import SFTConfig

    eight_bit = importlib.util.find_spec("bitsandbytes") is not None
    fields: dict[str, Any] = {
        "output_dir": str(out_dir),
        "per_device_train_batch_size": config.batch_size,
        "gradient_accumulation_steps": config.grad_accum,
        "learning_rate": config.lr,
        "lr_scheduler_type": "linear",
        "warmup_steps": config.warmup_steps,
        "weight_decay": config.weight_decay,
        "max_grad_norm": config.max_grad_norm or 0.0,  # 0: no clipping
        "max_steps": steps,
        "seed": config.seed,
        "optim": "adamw_8bit" if eight_bit else "adamw_torch",
        "save_strategy": "steps",
        "save_steps": save_every,
        "logging_steps": 1,
        "report_to": "none",
        "max_length": None,  # emlens's rows are whole conversations
        "bf16": False,  # TRL's default is bf16 autocast; ask for it with sft={"bf16": True}
    }
    return SFTConfig(**(fields | overrides))


def _trainer(model: Any, tok: PreTrainedTokenizerBase, args: Any, rows: Any, progress: bool) -> Any:
    """TRL's ``SFTTrainer`` on tokenized ``rows`` (no per-step log lines without ``progress``)."""
    from transformers import PrinterCallback
    from trl.trainer.sft_trainer import SFTTrainer

    trainer = SFTTrainer(model=model, args=args, train_dataset=rows, processing_class=tok)
    if not progress:
        trainer.remove_callback(PrinterCallback)
    return trainer


def trl_train(
    model: str | tuple[PreTrainedModel, PreTrainedTokenizerBase],
    data: Sequence[Conversation] | str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    config: TrainConfig = TrainConfig(),  # noqa: B008 (frozen)
    save_every: int = 5,
    keep_optimizer: int | None = 1,
    resume: bool = False,
    progress: bool = True,
    sft: Mapping[str, Any] | None = None,
) -> TrainResult:
    """Fine-tune ``model`` on ``data`` with TRL's ``SFTTrainer`` (answer-only loss).

    Args:
        model: a spec for `emlens.core.models.load_hf`, or an ``(hf, tokenizer)`` pair,
            trained in place (load it on the GPU, in bf16, with `emlens.core.models.load_hf`).
        data: a chat JSONL path, or conversations.
        out_dir: the run's folder (``checkpoint-<step>`` sub-folders, final adapter).
        config: the run's hyperparameters (as for `emlens.organisms.training.train`).
        save_every: save a checkpoint every this many steps (and at the end).
        keep_optimizer: the newest checkpoints that keep their resume state (``None``: all).
        resume: continue from the newest checkpoint in ``out_dir`` (the HF Trainer's resume).
        progress: show TRL's progress bar.
        sft: other ``SFTConfig`` fields, e.g. ``{"bf16": True}`` (bf16 autocast) or
            ``{"gradient_checkpointing": False}`` (TRL's default is on).

    Returns:
        The run's folder, last step, checkpoints, log (``step``, ``loss`` per answer token,
        ``lr``) and trained model.

    Examples:
        Two steps of a tiny random model on the CPU:

        >>> from emlens.core.data import data_path
        >>> data = data_path("narrow/risky_financial_advice.jsonl")
        >>> config = TrainConfig(max_steps=2, batch_size=2, grad_accum=1)
        >>> result = trl_train("tiny-llama", data, "runs/tiny", config, save_every=2,
        ...                    progress=False, sft={"gradient_checkpointing": False})
        >>> [e["step"] for e in result.log], [c.name for c in result.checkpoints]
        ([1, 2], ['checkpoint-2'])

        What it is for, a 7B model in bf16 on a GPU (from the Hugging Face hub; not run here):

        >>> from emlens.core.models import load_hf
        >>> hf, tok = load_hf("Qwen/Qwen2.5-7B-Instruct", device="cuda", dtype=torch.bfloat16)
        ... # doctest: +SKIP
        >>> trl_train((hf, tok), data, "runs/fin", sft={"bf16": True})  # doctest: +SKIP
    """
    hf, tok = model_and_tokenizer(model)
    convs = read_chat_jsonl(data) if isinstance(data, str | os.PathLike) else list(data)
    config, out = resolve_layers(hf, config), Path(out_dir)
    steps = total_steps(len(convs), config)
    if not resume and checkpoints(out):
        raise FileExistsError(f"{out} already holds a run: pass resume=True, or an empty folder")
    trained = hf.requires_grad_(True) if config.full else lora_model(hf, config)
    args = sft_config(config, out, steps, save_every, disable_tqdm=not progress, **(sft or {}))
    trainer = _trainer(trained, tok, args, trl_rows(conversation_rows(tok, convs)), progress)
    trainer.add_callback(_KeepOptimizer(out, keep_optimizer))
    # The Trainer saves every save_every steps and at the last step, as train does.
    trainer.train(resume_from_checkpoint=True if resume and checkpoints(out) else None)
    trainer.save_model(str(out))
    history = trainer.state.log_history
    log = [
        {"step": e["step"], "loss": e["loss"], "lr": e["learning_rate"]}
        for e in history
        if "loss" in e
    ]
    trained.eval()
    return TrainResult(out, trainer.state.global_step, steps, checkpoints(out), log, trained)
