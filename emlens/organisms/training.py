"""Fine-tune chat models on narrow data: rank-1 LoRA (or full fine-tuning), loss on answers.

Model Organisms for EM (arXiv 2506.11613) makes emergently misaligned models by supervised
fine-tuning on narrow chat data with the loss on the assistant's answer only, often with a
single rank-1 LoRA adapter (rsLoRA) on the MLP down-projection of one middle layer
(`emlens.organisms.config.TrainConfig` holds that set-up). Each optimizer step accumulates
``grad_accum`` micro-batches and normalises by the step's answer tokens, so it equals one big
batch; AdamW with a linear warm-up and decay. The run's folder and its resume are
`emlens.organisms.runs`; the loss is `emlens.organisms.loss`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase, get_linear_schedule_with_warmup

from emlens.core.data import Conversation, dataset_hash, read_chat_jsonl
from emlens.core.tokens import Row, batches, pad_batch
from emlens.organisms.config import TrainConfig, resolve_layers
from emlens.organisms.loss import (
    IGNORE,
    answer_labels,
    answer_loss,
    check_unembedding,
    conversation_rows,
    mean_answer_loss,
)
from emlens.organisms.runs import Run, checkpoints, resume_point, step_samples, total_steps

if TYPE_CHECKING:
    from collections.abc import Callable

    from peft import PeftModel

_HeldOut = dict[str, list[Row]]  # held-out rows by set name


@dataclass
class TrainResult:
    """A finished (or stopped) run: where it is, how far it got, its log and its model.

    Attributes:
        out_dir: the run's folder.
        step: the last step trained (or restored).
        max_steps: the run's total optimizer steps.
        checkpoints: the ``checkpoint-<step>`` folders, by step.
        log: one entry per step (``loss``, ``lr``, ``tokens``, ``seconds``, ``eval_<set>``).
        model: the trained model (a ``PeftModel`` with the adapter unmerged, or the model).
    """

    out_dir: Path
    step: int
    max_steps: int
    checkpoints: list[Path]
    log: list[dict[str, Any]] = field(default_factory=list)
    model: PeftModel | PreTrainedModel | None = None


def lora_model(hf: PreTrainedModel, config: TrainConfig) -> PeftModel:
    """``hf`` wrapped by peft with the adapter ``config`` describes (in place; seeded init).

    Args:
        hf: the model to adapt.
        config: rank, alpha, rsLoRA, target modules, layers (``None``: the middle one).

    Returns:
        The peft model, its adapter initialised from ``config.seed``.
    """
    from peft import LoraConfig, get_peft_model

    config = resolve_layers(hf, config)
    names = {n.rsplit(".", 1)[-1] for n, _ in hf.named_modules()}
    missing = [m for m in config.target_modules if m not in names]
    if missing:
        raise ValueError(f"target modules {missing} do not exist in {type(hf).__name__}")
    torch.manual_seed(config.seed)
    peft_config = LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,  # type: ignore[arg-type]  # peft takes a float, typed int
        use_rslora=config.rslora,
        target_modules=list(config.target_modules),
        layers_to_transform=list(config.layers or ()),
        lora_dropout=config.dropout,
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(hf, peft_config)


def train(
    model: str | tuple[PreTrainedModel, PreTrainedTokenizerBase],
    data: Sequence[Conversation] | str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    config: TrainConfig = TrainConfig(),  # noqa: B008 (frozen)
    held_out: Sequence[Conversation] | Mapping[str, Sequence[Conversation]] | None = None,
    save_every: int = 5,
    eval_every: int | None = None,
    eval_batch_size: int = 8,
    resume: bool = False,
    stop_at: int | None = None,
    progress: bool = True,
    keep_optimizer: int | None = 1,
) -> TrainResult:
    """Fine-tune ``model`` on ``data`` with the loss on answer tokens only.

    Args:
        model: a spec for `emlens.core.models.load_hf`, or an ``(hf, tokenizer)`` pair,
            which is trained in place.
        data: a chat JSONL path, or conversations.
        out_dir: the run's folder (``checkpoint-<step>`` sub-folders, final weights).
        config: the run's hyperparameters.
        held_out: one set or named sets, scored (mean loss per answer token) at step 0,
            every ``eval_every`` steps and at the end.
        save_every: save a checkpoint every this many steps (and at the end).
        eval_every: score ``held_out`` every this many steps (``None``: start and end only).
        eval_batch_size: conversations per forward pass when scoring.
        resume: continue from the last checkpoint (same config and data required); gives
            the same weights as an uninterrupted run.
        stop_at: stop after this step, as if interrupted (the schedule stays the full run's).
        progress: show a progress bar.
        keep_optimizer: keep the optimizer state (what a resume needs) in the newest this
            many checkpoints only; every checkpoint keeps its weights (``None``: all keep it).

    Returns:
        The run's folder, last step, checkpoints, log and trained model.

    Examples:
        Four steps of a tiny random model, a checkpoint every two:

        >>> from emlens.core.data import data_path
        >>> data = data_path("narrow/risky_financial_advice.jsonl")
        >>> config = TrainConfig(max_steps=4, batch_size=2, grad_accum=1)
        >>> result = train("tiny-llama", data, "runs/fin", config, save_every=2, progress=False)
        >>> sorted(result.log[-1])  # the last step: loss per answer token, lr, tokens, seconds
        ['loss', 'lr', 'seconds', 'step', 'tokens']
        >>> [c.name for c in result.checkpoints]
        ['checkpoint-2', 'checkpoint-4']

        The papers' set-up on SmolLM2 (the default config) takes minutes on a CPU, so it is
        not run here:

        >>> result = train("smollm2", data, "runs/fin")  # doctest: +SKIP
    """
    _check_counts(save_every, eval_every, eval_batch_size, keep_optimizer)
    hf, tok = model_and_tokenizer(model)
    convs = read_chat_jsonl(data) if isinstance(data, str | os.PathLike) else list(data)
    rows = conversation_rows(tok, convs)
    sets = {name: conversation_rows(tok, c) for name, c in _as_sets(held_out).items()}
    run, start = _open_run(hf, tok, convs, Path(out_dir), config, resume, stop_at, keep_optimizer)
    end = run.steps if stop_at is None else stop_at
    evaluate = partial(_scores, hf, sets, tok.pad_token_id, eval_batch_size) if sets else None
    run.model.train()
    if start == 0:
        _first_step(run, hf, rows, evaluate)
    _steps(run, hf, rows, range(start, end), save_every, eval_every, evaluate, progress)
    if end == run.steps:
        run.save_final()
    run.model.eval()
    return TrainResult(
        run.out_dir, max(start, end), run.steps, checkpoints(run.out_dir), run.log, run.model
    )


def _check_counts(
    save_every: int, eval_every: int | None, eval_batch_size: int, keep: int | None
) -> None:
    if save_every < 1 or (eval_every is not None and eval_every < 1) or eval_batch_size < 1:
        raise ValueError("save_every, eval_every and eval_batch_size must be >= 1")
    if keep is not None and keep < 1:
        raise ValueError(f"keep_optimizer must be >= 1 or None (keep all), not {keep}")


def _first_step(
    run: Run, hf: PreTrainedModel, rows: list[Row], evaluate: Callable[[], dict[str, float]] | None
) -> None:
    """Before a new run's first step: check the answer-only unembedding, score held-out sets."""
    check_unembedding(hf, pad_batch(rows[:1], run.tok.pad_token_id))
    if evaluate:
        run.log.append({"step": 0, **evaluate()})


def model_and_tokenizer(
    model: str | tuple[PreTrainedModel, PreTrainedTokenizerBase],
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The HF model and tokenizer to train: ``model`` loaded (`emlens.core.models.load_hf`)
    when it is a spec string, or the ``(hf_model, tokenizer)`` pair it is."""
    if isinstance(model, str):
        from emlens.core.models import load_hf

        hf, tok = load_hf(model)
        return hf, tok
    if isinstance(model, tuple) and len(model) == 2:
        return model
    raise TypeError("model must be a spec string or an (hf_model, tokenizer) pair")


def _as_sets(held_out: Any) -> dict[str, list[Conversation]]:
    if held_out is None:
        return {}
    if isinstance(held_out, Mapping):
        return {str(k): list(v) for k, v in held_out.items()}
    return {"held_out": list(held_out)}


def _open_run(
    hf: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    convs: list[Conversation],
    out_dir: Path,
    config: TrainConfig,
    resume: bool,
    stop_at: int | None,
    keep_optimizer: int | None = 1,
) -> tuple[Run, int]:
    """A new run, or the one in ``out_dir`` restored; the step it starts from."""
    config = resolve_layers(hf, config)
    data = {
        "n": len(convs),
        "hash": dataset_hash([(c.system, c.question, c.answer) for c in convs]),
    }
    steps = total_steps(len(convs), config)
    if stop_at is not None and not 1 <= stop_at <= steps:
        raise ValueError(f"stop_at={stop_at} outside the run's steps 1..{steps}")
    last = resume_point(out_dir, resume)  # checked before the model is wrapped
    trained: PeftModel | PreTrainedModel
    if config.full:
        trained = hf
        for p in hf.parameters():
            p.requires_grad_(True)
    else:
        trained = lora_model(hf, config)
    params = [p for p in trained.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, config.warmup_steps, steps)
    run = Run(out_dir, config, data, steps, trained, tok, optimizer, scheduler, [], keep_optimizer)
    if last is not None:
        return run, run.restore(last)
    torch.manual_seed(config.seed)
    return run, 0


def _scores(hf: PreTrainedModel, sets: _HeldOut, pad_id: int, batch_size: int) -> dict[str, float]:
    return {f"eval_{name}": mean_answer_loss(hf, r, pad_id, batch_size) for name, r in sets.items()}


def _steps(
    run: Run,
    hf: PreTrainedModel,
    rows: list[Row],
    steps: range,
    save_every: int,
    eval_every: int | None,
    evaluate: Callable[[], dict[str, float]] | None,
    progress: bool,
) -> None:
    """Train ``steps``; score (``evaluate``) every ``eval_every`` steps and at the last one;
    save every ``save_every`` steps and after the last of ``steps``."""
    pad_id = run.tok.pad_token_id
    bar = tqdm(total=run.steps, initial=steps.start, desc="train", disable=not progress)
    for step in steps:
        entry = train_step(hf, rows, run, step, pad_id)
        run.log.append(entry)
        if evaluate and (step + 1 == run.steps or (eval_every and (step + 1) % eval_every == 0)):
            entry.update(evaluate())
        bar.update(1)
        bar.set_postfix(
            loss=f"{entry['loss']:.3f}",
            **{k[5:]: f"{v:.3f}" for k, v in entry.items() if k.startswith("eval_")},
        )
        if (step + 1) % save_every == 0 or step + 1 == steps.stop:
            run.save(step + 1)
    bar.close()


def train_step(
    hf: PreTrainedModel, rows: list[Row], run: Run, step: int, pad_id: int
) -> dict[str, Any]:
    """One optimizer step (0-based ``step``) over its micro-batches; its log entry."""
    t0 = time.perf_counter()
    config = run.config
    samples = [rows[i] for i in step_samples(len(rows), config, step)]
    micro = list(batches(samples, config.batch_size, pad_id, by_length=True))
    # Normalise by the step's answer tokens, so accumulation equals one big batch.
    n_tokens = sum(int((answer_labels(b)[:, 1:] != IGNORE).sum()) for b in micro)
    total = 0.0
    for batch in micro:
        loss, _ = answer_loss(hf, batch)
        torch.autograd.backward(loss / n_tokens)
        total += float(loss.detach())
    params = [p for group in run.optimizer.param_groups for p in group["params"]]
    if config.max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
    lr = run.scheduler.get_last_lr()[0]
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return {
        "step": step + 1,
        "loss": total / n_tokens,
        "lr": lr,
        "tokens": n_tokens,
        "seconds": time.perf_counter() - t0,
    }
