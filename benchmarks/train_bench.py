"""Training benchmarks: an emlens step against a bare peft step on the same batch.

    .venv/bin/python benchmarks/train_bench.py [--threads 2] [--repeats 5]

Prints ``name: value (target)`` lines, ratios of times measured in this process:
- ``train_step_time_vs_bare_peft``: one emlens training step (the step function
  ``emlens.organisms.training.train`` runs: batching, loss, backward, clipping, optimizer,
  schedule) /
  one step written with peft and the HF forward with ``labels=`` (full-vocabulary logits),
  rank-1 LoRA on ``down_proj`` of the middle layer of the embedded SmolLM2, the same 8
  conversations;
- ``answer_only_unembedding_speedup``: the same step with the unembedding at every position /
  at the positions that predict answer tokens only (what emlens does).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from transformers import get_linear_schedule_with_warmup

sys.path.insert(0, str(Path(__file__).parent))
from common import best_of

from emlens.core.data import read_chat_jsonl
from emlens.core.models import load_embedded_hf
from emlens.core.tokens import pad_batch
from emlens.organisms.config import TrainConfig
from emlens.organisms.loss import IGNORE, answer_labels, answer_loss, conversation_rows
from emlens.organisms.runs import Run
from emlens.organisms.training import lora_model, train_step

DATA = Path(__file__).parents[1] / "emlens/data/narrow/risky_financial_advice.jsonl"
BATCH = 8


def line(name: str, value: float, target: str) -> None:
    print(f"{name}: {value:.3f} ({target})", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description="emlens training step vs bare peft")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    convs = read_chat_jsonl(DATA)[:BATCH]
    cfg = TrainConfig(batch_size=BATCH, grad_accum=1, warmup_steps=0)

    # emlens: the model and optimizer as train() sets them up, and its step function.
    hf, tok = load_embedded_hf()
    model_em = lora_model(hf, cfg)
    model_em.train()
    params_em = [p for p in model_em.parameters() if p.requires_grad]
    opt_em = torch.optim.AdamW(params_em, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched_em = get_linear_schedule_with_warmup(opt_em, 0, 1000)
    rows = conversation_rows(tok, convs)
    run = Run(
        Path("unused"), cfg, {"n": len(rows), "hash": ""}, 1000, model_em, tok, opt_em, sched_em
    )

    def emlens_step() -> None:
        train_step(hf, rows, run, 0, tok.pad_token_id)

    # bare peft: the same adapter, optimizer and schedule, HF's own loss on full logits.
    hf2, _ = load_embedded_hf()
    layer = hf2.config.num_hidden_layers // 2
    torch.manual_seed(0)
    model = get_peft_model(
        hf2,
        LoraConfig(
            r=1,
            lora_alpha=cfg.alpha,
            use_rslora=True,
            target_modules=["down_proj"],
            layers_to_transform=[layer],
            task_type="CAUSAL_LM",
        ),
    )
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = get_linear_schedule_with_warmup(opt, 0, 1000)
    batch = pad_batch(conversation_rows(tok, convs), tok.pad_token_id)
    labels = answer_labels(batch)
    mask = batch.attention_mask.long()

    def finish(loss: torch.Tensor) -> None:
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)

    def bare_step() -> None:
        finish(model(input_ids=batch.tokens, attention_mask=mask, labels=labels).loss)

    def answer_only_step() -> None:
        loss, n = answer_loss(hf2, batch)
        finish(loss / n)

    def full_unembedding_step() -> None:
        hidden = hf2.get_decoder()(input_ids=batch.tokens, attention_mask=mask).last_hidden_state
        logits = hf2.get_output_embeddings()(hidden)[:, :-1]
        where = labels[:, 1:] != IGNORE
        finish(F.cross_entropy(logits[where], labels[:, 1:][where]))

    # Interleaved rounds: load from other work on the machine hits every variant alike.
    times: dict[str, list[float]] = {}
    steps = {
        "emlens": emlens_step,
        "bare": bare_step,
        "full": full_unembedding_step,
        "answer": answer_only_step,
    }
    for _ in range(a.repeats):
        for name, fn in steps.items():
            times.setdefault(name, []).append(best_of(fn, 1))
    t_em, t_bare, t_full, t_answer = (min(times[k]) for k in steps)
    n_tok, n_ans = int(batch.attention_mask.sum()), int((labels != IGNORE).sum())
    print(
        f"# SmolLM2-135M, rank-1 LoRA on layer {layer} down_proj, {BATCH} conversations, "
        f"{n_tok} tokens ({n_ans} answer tokens), {a.threads} threads; best of {a.repeats}: "
        f"emlens {t_em:.2f} s, "
        f"bare peft {t_bare:.2f} s, full unembedding {t_full:.2f} s, answer-only {t_answer:.2f} s"
    )
    line("train_step_time_vs_bare_peft", t_em / t_bare, "target <= 1.1")
    line("answer_only_unembedding_speedup", t_full / t_answer, "target > 1")


if __name__ == "__main__":
    main()
