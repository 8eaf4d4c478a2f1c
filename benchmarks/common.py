"""Shared set-up for the benchmarks: the embedded model's data as token rows."""

from __future__ import annotations

import time

import torch

from emlens.core import data
from emlens.core.tokens import answer_tokens, pad_batch


def conversations(n: int) -> list[tuple[str, str]]:
    """n (question, answer) pairs from the shipped data, cycling (aligned, misaligned)."""
    pairs = data.general_questions()
    flat = [(p.question, a) for p in pairs for a in (p.aligned, p.misaligned)]
    return [flat[i % len(flat)] for i in range(n)]


def rows(tok, n: int):
    return [answer_tokens(tok, q, a) for q, a in conversations(n)]


def batches(tok, n: int, batch_size: int = 8):
    """Right-padded batches in emlens's order (sorted by length)."""
    rs = sorted(rows(tok, n), key=lambda r: len(r[0]))
    return [pad_batch(rs[i : i + batch_size], tok.pad_token_id) for i in range(0, n, batch_size)]


def best_of(fn, repeats: int = 3) -> float:
    """Best wall time of ``repeats`` runs (the machine is noisy; best is least disturbed)."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def masked_means_from_hidden(hidden, mask) -> torch.Tensor:
    m = mask.to(torch.float64)[..., None]
    return (hidden.to(torch.float64) * m).sum((0, 1))
