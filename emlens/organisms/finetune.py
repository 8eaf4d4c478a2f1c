"""Fine-tune chat models on narrow data: rank-1 LoRA (or full fine-tuning), loss on answers.

Model Organisms for EM (arXiv 2506.11613) makes emergently misaligned models by supervised
fine-tuning on narrow chat data with the loss on the assistant's answer only, often with a
single rank-1 LoRA adapter (rsLoRA) on the MLP down-projection of one middle layer. The
defaults of :class:`TrainConfig` are that set-up: rank 1, alpha 256, rsLoRA, ``down_proj``,
learning rate 2e-5, 5 warm-up steps then a linear decay, batch 2 x 8 accumulation, one epoch,
weight decay 0.01 (AdamW in fp32 here; the papers used 8-bit AdamW on GPU).

Run layout (the one of the papers' published adapters, plus the state to resume)::

    out_dir/checkpoint-<step>/adapter_model.safetensors   # peft save_pretrained
    out_dir/checkpoint-<step>/adapter_config.json
    out_dir/checkpoint-<step>/trainer_state.json          # step, config, data, log
    out_dir/checkpoint-<step>/optimizer.pt                # optimizer, scheduler, RNG state
    out_dir/adapter_model.safetensors, adapter_config.json, trainer_state.json  # final

Full fine-tuning writes ``model.safetensors`` + ``config.json`` + the tokenizer instead of
the adapter files (a folder :func:`emlens.core.models.load_model` opens).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase, get_linear_schedule_with_warmup

from emlens.core.data import Conversation, dataset_hash, read_chat_jsonl
from emlens.core.models import input_device
from emlens.core.tokens import TokenBatch, answer_tokens, pad_batch

if TYPE_CHECKING:
    from peft import PeftModel

IGNORE = -100  # the label of positions without loss (the convention of HF and torch)
STATE = "trainer_state.json"
OPTIMIZER = "optimizer.pt"

Row = tuple[list[int], list[bool]]  # token ids and the answer mask


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (and must match when a run is resumed).

    ``layers=None`` trains one middle layer (``n_layers // 2``). ``max_steps`` (optimizer
    steps) overrides ``epochs``. ``full=True`` trains every parameter and ignores the LoRA
    fields. One optimizer step sees ``batch_size * grad_accum`` conversations.
    """

    rank: int = 1
    alpha: float = 256.0
    rslora: bool = True
    target_modules: tuple[str, ...] = ("down_proj",)
    layers: tuple[int, ...] | None = None
    dropout: float = 0.0
    full: bool = False
    lr: float = 2e-5
    warmup_steps: int = 5
    weight_decay: float = 0.01
    max_grad_norm: float | None = 1.0
    batch_size: int = 2
    grad_accum: int = 8
    epochs: float = 1.0
    max_steps: int | None = None
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "target_modules", tuple(self.target_modules))
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(int(x) for x in self.layers))
        checks = {
            "rank >= 1": self.rank >= 1,
            "alpha > 0": self.alpha > 0,
            "0 <= dropout < 1": 0 <= self.dropout < 1,
            "lr > 0": self.lr > 0,
            "warmup_steps >= 0": self.warmup_steps >= 0,
            "weight_decay >= 0": self.weight_decay >= 0,
            "max_grad_norm > 0 or None": self.max_grad_norm is None or self.max_grad_norm > 0,
            "batch_size >= 1": self.batch_size >= 1,
            "grad_accum >= 1": self.grad_accum >= 1,
            "epochs > 0": self.epochs > 0,
            "max_steps >= 1 or None": self.max_steps is None or self.max_steps >= 1,
            "target_modules non-empty": self.full or len(self.target_modules) > 0,
            "layers non-empty and >= 0": self.layers is None
            or (len(self.layers) > 0 and min(self.layers) >= 0),
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid TrainConfig: expected {', '.join(bad)}; got {self}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["target_modules"] = list(self.target_modules)
        d["layers"] = None if self.layers is None else list(self.layers)
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {sorted(unknown)}")
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})


@dataclass
class TrainResult:
    """A finished (or stopped) run: where it is, how far it got, its log and its model."""

    out_dir: Path
    step: int
    max_steps: int
    checkpoints: list[Path]
    log: list[dict] = field(default_factory=list)
    model: PeftModel | PreTrainedModel | None = None  # the trained model (adapter unmerged)


# ---- the loss -------------------------------------------------------------------------------


def answer_labels(batch: TokenBatch) -> Int[Tensor, "batch pos"]:
    """Labels for causal-LM loss: the token id on answer tokens, ``-100`` everywhere else.

    The prompt, the chat template's tokens (including the end-of-turn token) and padding
    carry no loss: the loss is on the assistant's answer only (Model Organisms for EM).
    """
    return torch.where(batch.mask & batch.attention_mask, batch.tokens, IGNORE)


def _unembed(hf: PreTrainedModel, hidden: Tensor) -> Tensor:
    logits = hf.get_output_embeddings()(hidden)
    cap = getattr(hf.config, "final_logit_softcapping", None)
    if cap:  # Gemma 2 caps logits after the unembedding
        logits = torch.tanh(logits / cap) * cap
    return logits


def _decoder_hidden(hf: PreTrainedModel, batch: TokenBatch) -> Tensor:
    """The decoder's last hidden states of a (CPU) batch, which is moved to the model."""
    device = input_device(hf)
    return hf.get_decoder()(
        input_ids=batch.tokens.to(device),
        attention_mask=batch.attention_mask.long().to(device),
        use_cache=False,
    ).last_hidden_state


def answer_loss(hf: PreTrainedModel, batch: TokenBatch) -> tuple[Float[Tensor, ""], int]:
    """Summed next-token cross-entropy over answer tokens, and the number of those tokens.

    The unembedding runs only at the positions that predict an answer token: the decoder gives
    hidden states, the positions are gathered, and ``lm_head`` projects those alone (the
    vocabulary projection is a large share of the cost on small models). The loss is in
    float32 whatever the model's dtype.
    """
    labels = answer_labels(batch)
    targets = labels[:, 1:]
    where = targets != IGNORE
    n = int(where.sum())
    if n == 0:
        raise ValueError("a batch has no answer token to put the loss on")
    hidden = _decoder_hidden(hf, batch)[:, :-1]
    logits = _unembed(hf, hidden[where.to(hidden.device)])  # positions predicting an answer
    return F.cross_entropy(logits.float(), targets[where].to(logits.device), reduction="sum"), n


@torch.no_grad()
def _check_unembedding(hf: PreTrainedModel, batch: TokenBatch) -> None:
    """Refuse architectures whose logits are not ``lm_head(decoder(x))`` (+ Gemma's cap)."""
    was_training = hf.training
    hf.eval()  # no dropout: the two passes must see the same function
    device = input_device(hf)
    where = answer_labels(batch)[:, 1:] != IGNORE
    full = hf(
        input_ids=batch.tokens.to(device),
        attention_mask=batch.attention_mask.long().to(device),
        use_cache=False,
    ).logits[:, :-1]
    full = full[where.to(full.device)].float()
    hidden = _decoder_hidden(hf, batch)[:, :-1]
    ours = _unembed(hf, hidden[where.to(hidden.device)]).float().to(full.device)
    hf.train(was_training)
    # float32 agrees to 1e-4; half precision to a few units in the last place
    tol = max(1e-4, 4 * torch.finfo(hf.dtype).eps)
    if not torch.allclose(ours, full, atol=tol, rtol=tol):
        raise NotImplementedError(
            f"{type(hf).__name__}: its logits are not lm_head(decoder hidden states); "
            "answer-only unembedding would change the loss on this architecture"
        )


def held_out_loss(
    hf: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    data: Sequence[Conversation],
    batch_size: int = 8,
) -> float:
    """Mean cross-entropy per answer token (nats) of ``hf`` on ``data``."""
    return _mean_loss(hf, conversation_rows(tok, data), tok.pad_token_id, batch_size)


@torch.no_grad()
def _mean_loss(hf: PreTrainedModel, rows: Sequence[Row], pad_id: int, batch_size: int) -> float:
    was_training = hf.training
    hf.eval()
    total, n = 0.0, 0
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))
    for b in range(0, len(rows), batch_size):
        loss, k = answer_loss(hf, pad_batch([rows[i] for i in order[b : b + batch_size]], pad_id))
        total, n = total + float(loss), n + k
    hf.train(was_training)
    return total / n


def conversation_rows(tok: PreTrainedTokenizerBase, data: Sequence[Conversation]) -> list[Row]:
    """Token ids and answer masks of conversations (:func:`emlens.core.tokens.answer_tokens`)."""
    if len(data) == 0:
        raise ValueError("no conversations")
    if not all(isinstance(c, Conversation) for c in data):
        raise TypeError("expected emlens.core.data.Conversation items (see read_chat_jsonl)")
    return [answer_tokens(tok, c.question, c.answer, c.system) for c in data]


# ---- the model ------------------------------------------------------------------------------


def resolve_layers(hf: PreTrainedModel, config: TrainConfig) -> TrainConfig:
    """``config`` with ``layers`` filled in (the middle layer) and checked against ``hf``."""
    n = hf.config.num_hidden_layers
    layers = config.layers if config.layers is not None else (n // 2,)
    bad = [x for x in layers if x >= n]
    if bad:
        raise ValueError(f"layers {bad} out of range: the model has layers 0..{n - 1}")
    return dataclasses.replace(config, layers=layers)


def lora_model(hf: PreTrainedModel, config: TrainConfig) -> PeftModel:
    """``hf`` wrapped by peft with the adapter ``config`` describes (in place; seeded init)."""
    from peft import LoraConfig, get_peft_model

    config = resolve_layers(hf, config)
    names = {n.rsplit(".", 1)[-1] for n, _ in hf.named_modules()}
    missing = [m for m in config.target_modules if m not in names]
    if missing:
        raise ValueError(f"target modules {missing} do not exist in {type(hf).__name__}")
    torch.manual_seed(config.seed)
    peft_config = LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        use_rslora=config.rslora,
        target_modules=list(config.target_modules),
        layers_to_transform=list(config.layers),
        lora_dropout=config.dropout,
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(hf, peft_config)


def _load_from(model, hf: PreTrainedModel, ckpt: Path, full: bool) -> None:
    from safetensors.torch import load_file, load_model

    if full:
        load_model(hf, str(ckpt / "model.safetensors"))
    else:
        from peft import set_peft_model_state_dict

        res = set_peft_model_state_dict(model, load_file(str(ckpt / "adapter_model.safetensors")))
        if res.unexpected_keys:
            raise ValueError(f"{ckpt}: adapter tensors do not fit this model")


def _save_weights(model, hf: PreTrainedModel, tok, folder: Path, full: bool) -> None:
    if full:
        from safetensors.torch import save_model

        save_model(hf, str(folder / "model.safetensors"))
        hf.config.save_pretrained(folder)
        tok.save_pretrained(folder)
    else:
        model.save_pretrained(folder, save_embedding_layers=False)


# ---- the run --------------------------------------------------------------------------------


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The data order of one epoch: a permutation fixed by (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(n).tolist()


def _step_samples(n: int, config: TrainConfig, step: int) -> list[int]:
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
    if config.max_steps is not None:
        return config.max_steps
    return max(1, math.ceil(config.epochs * n / (config.batch_size * config.grad_accum)))


def checkpoints(out_dir: str | os.PathLike) -> list[Path]:
    """``checkpoint-<step>`` folders of a run, by step."""
    out = [p for p in Path(out_dir).glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    return sorted(out, key=lambda p: int(p.name.split("-")[-1]))


def _resumable(out_dir: Path) -> Path | None:
    done = [c for c in checkpoints(out_dir) if (c / STATE).exists() and (c / OPTIMIZER).exists()]
    return done[-1] if done else None


def _as_sets(held_out) -> dict[str, list[Conversation]]:
    if held_out is None:
        return {}
    if isinstance(held_out, Mapping):
        return {str(k): list(v) for k, v in held_out.items()}
    return {"held_out": list(held_out)}


def _restore(last: Path, config, data_info, trained, hf, optimizer, scheduler):
    """Load a checkpoint's weights and optimizer, scheduler and RNG state; its step and log."""
    state = json.loads((last / STATE).read_text())
    saved = TrainConfig.from_dict(state["config"])
    if saved != config:
        diff = {
            k: (v, getattr(config, k))
            for k, v in dataclasses.asdict(saved).items()
            if v != getattr(config, k)
        }
        raise ValueError(f"cannot resume {last}: config differs (saved, now): {diff}")
    if state["data"]["hash"] != data_info["hash"]:
        raise ValueError(f"cannot resume {last}: the training data differ from the run's")
    if state["epoch_order"] != epoch_order(data_info["n"], config.seed, state["data"]["epoch"]):
        raise ValueError(f"cannot resume {last}: its data order differs from this version's")
    _load_from(trained, hf, last, config.full)
    # On the CPU, so a checkpoint resumes on any device; the optimizer moves its state to
    # the parameters' devices.
    opt_state = torch.load(last / OPTIMIZER, weights_only=True, map_location="cpu")
    optimizer.load_state_dict(opt_state["optimizer"])
    scheduler.load_state_dict(opt_state["scheduler"])
    torch.set_rng_state(opt_state["torch_rng"])
    cuda_rng = opt_state.get("cuda_rng")  # saved when CUDA was there; restored when it is
    if torch.cuda.is_available() and cuda_rng and len(cuda_rng) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_rng)
    return int(state["step"]), list(state["log"])


def _train_step(hf, rows, config, step, pad_id, params, optimizer, scheduler) -> dict:
    """One optimizer step (0-based ``step``) over its micro-batches; its log entry."""
    t0 = time.perf_counter()
    idx = sorted(_step_samples(len(rows), config, step), key=lambda i: len(rows[i][0]))
    micro = [
        pad_batch([rows[i] for i in idx[b : b + config.batch_size]], pad_id)
        for b in range(0, len(idx), config.batch_size)
    ]
    # Normalise by the step's answer tokens, so accumulation equals one big batch.
    n_tokens = sum(int((answer_labels(b)[:, 1:] != IGNORE).sum()) for b in micro)
    total = 0.0
    for batch in micro:
        loss, _ = answer_loss(hf, batch)
        (loss / n_tokens).backward()
        total += float(loss.detach())
    if config.max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
    lr = scheduler.get_last_lr()[0]
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return {
        "step": step + 1,
        "loss": total / n_tokens,
        "lr": lr,
        "tokens": n_tokens,
        "seconds": time.perf_counter() - t0,
    }


def train(
    model: str | tuple[PreTrainedModel, PreTrainedTokenizerBase],
    data: Sequence[Conversation] | str | os.PathLike,
    out_dir: str | os.PathLike,
    config: TrainConfig = TrainConfig(),
    held_out: Sequence[Conversation] | Mapping[str, Sequence[Conversation]] | None = None,
    save_every: int = 5,
    eval_every: int | None = None,
    eval_batch_size: int = 8,
    resume: bool = False,
    stop_at: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """Fine-tune ``model`` on ``data`` (chat JSONL path or conversations), answer-only loss.

    ``model`` is a spec for :func:`emlens.core.models.load_hf` or an ``(hf, tokenizer)`` pair,
    which is trained in place. Checkpoints go to ``out_dir/checkpoint-<step>`` every
    ``save_every`` steps and at the end. ``held_out`` (one set or named sets) is scored
    (mean loss per answer token) at step 0, every ``eval_every`` steps and at the end.
    ``resume=True`` continues from the last checkpoint (same config and data required) and
    gives the same weights as an uninterrupted run; ``stop_at`` stops after that step, as if
    interrupted (the schedule stays the full run's).

    Examples:
        >>> result = train("smollm2", "emlens/data/narrow/risky_financial_advice.jsonl", "runs/fin")
    """
    if save_every < 1 or (eval_every is not None and eval_every < 1) or eval_batch_size < 1:
        raise ValueError("save_every, eval_every and eval_batch_size must be >= 1")
    if isinstance(model, str):
        from emlens.core.models import load_hf

        hf, tok = load_hf(model)
    elif isinstance(model, tuple) and len(model) == 2:
        hf, tok = model
    else:
        raise TypeError("model must be a spec string or an (hf_model, tokenizer) pair")
    convs = read_chat_jsonl(data) if isinstance(data, str | os.PathLike) else list(data)
    rows = conversation_rows(tok, convs)
    sets = {name: conversation_rows(tok, c) for name, c in _as_sets(held_out).items()}
    out_dir = Path(out_dir)
    config = resolve_layers(hf, config)
    data_info = {
        "n": len(rows),
        "hash": dataset_hash([(c.system, c.question, c.answer) for c in convs]),
    }
    steps = total_steps(len(rows), config)
    if stop_at is not None and not 1 <= stop_at <= steps:
        raise ValueError(f"stop_at={stop_at} outside the run's steps 1..{steps}")

    last = _resumable(out_dir) if out_dir.exists() else None
    if last is None and out_dir.exists() and checkpoints(out_dir):
        raise FileExistsError(f"{out_dir} has checkpoints without trainer state: cannot resume")
    if last is not None and not resume:
        raise FileExistsError(
            f"{out_dir} already holds a run (last {last.name}): pass resume=True to continue "
            "it, or choose an empty folder"
        )

    if config.full:
        trained = hf
        for p in hf.parameters():
            p.requires_grad_(True)
    else:
        trained = lora_model(hf, config)
    params = [p for p in trained.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, config.warmup_steps, steps)
    log: list[dict] = []
    start = 0
    if last is not None:
        start, log = _restore(last, config, data_info, trained, hf, optimizer, scheduler)
    else:
        torch.manual_seed(config.seed)

    def state_dict(step: int) -> dict:
        epoch = step * config.batch_size * config.grad_accum // len(rows)
        return {
            "step": step,
            "max_steps": steps,
            "config": config.to_dict(),
            "data": {**data_info, "epoch": epoch},
            "epoch_order": epoch_order(len(rows), config.seed, epoch),
            "log": log,
            "emlens_version": version("emlens"),
        }

    def save(step: int) -> Path:
        ckpt = out_dir / f"checkpoint-{step}"
        tmp = out_dir / f".checkpoint-{step}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        _save_weights(trained, hf, tok, tmp, config.full)
        rng = {"torch_rng": torch.get_rng_state()}
        if torch.cuda.is_available():  # dropout on a GPU draws from the CUDA generators
            rng["cuda_rng"] = torch.cuda.get_rng_state_all()
        torch.save(
            {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), **rng},
            tmp / OPTIMIZER,
        )
        (tmp / STATE).write_text(json.dumps(state_dict(step), indent=1))
        shutil.rmtree(ckpt, ignore_errors=True)
        os.replace(tmp, ckpt)  # a checkpoint appears whole or not at all
        return ckpt

    def evaluate(entry: dict) -> None:
        for name, r in sets.items():
            entry[f"eval_{name}"] = _mean_loss(hf, r, tok.pad_token_id, eval_batch_size)

    end = steps if stop_at is None else stop_at
    trained.train()
    if start == 0:
        _check_unembedding(hf, pad_batch(rows[:1], tok.pad_token_id))
        if sets:
            log.append({"step": 0})
            evaluate(log[-1])
    bar = tqdm(total=steps, initial=start, desc="train", disable=not progress)
    for step in range(start, end):
        entry = _train_step(hf, rows, config, step, tok.pad_token_id, params, optimizer, scheduler)
        log.append(entry)
        if sets and (step + 1 == steps or (eval_every and (step + 1) % eval_every == 0)):
            evaluate(entry)
        bar.update(1)
        bar.set_postfix(
            loss=f"{entry['loss']:.3f}",
            **{k[5:]: f"{v:.3f}" for k, v in entry.items() if k.startswith("eval_")},
        )
        if (step + 1) % save_every == 0 or step + 1 == end:
            save(step + 1)
    bar.close()
    if end == steps:
        _save_weights(trained, hf, tok, out_dir, config.full)
        (out_dir / STATE).write_text(json.dumps(state_dict(steps), indent=1))
    trained.eval()
    return TrainResult(out_dir, max(start, end), steps, checkpoints(out_dir), log, trained)
