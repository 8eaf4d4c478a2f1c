"""Several interventions measured on the same answer pairs, with the shared work done once.

A steering sweep or a set of ablation variants asks, per intervention, for the contrastive
score of every question pair and for the intervention's side effects on the aligned
conversations: their cross-entropy and KL(model || intervened model). Measured one metric at a
time (`emlens.eval.metrics`), each intervention costs four passes over the pairs (misaligned
answers, aligned answers, and the plain and intervened passes of the KL) and the plain pass is
repeated for every intervention. Here the aligned conversations' intervened pass gives the
aligned answers' log-probs, the cross-entropy and the KL together, and the plain pass runs
once per batch for all interventions: two passes per intervention, plus one. An intervention
whose first hook is in block k leaves blocks 0..k-1 alone, so those run once per batch for
all interventions, and its passes start at block k (`emlens.core.shared_prefix`): a layer x scale
steering sweep runs, on average, half the blocks per cell. Rows are batched shortest first
(right padding, so per-row results do not change).

The definitions are those of `emlens.eval.metrics`: the score is the misaligned answer's
mean per-token log-prob minus the aligned one's; cross-entropy and KL are over every
position of the aligned conversation as `answer_tokens` renders it (chat prompt, answer and the
template's end of the assistant turn), in nats (cross-entropy per
predicted token, KL per position, as `cross_entropy` and `kl_divergence`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from emlens.core.data import QAPair
from emlens.core.forward import batch_logits
from emlens.core.interventions import Intervention, applied, hooks_for
from emlens.core.shared_prefix import first_block, logits_from, saved_residuals
from emlens.core.tokens import Row, TokenBatch, answer_tokens, batches

__all__ = ["PairEffects", "pair_effects"]


@dataclass
class PairEffects:
    """One intervention's effects on a set of question pairs.

    Attributes:
        scores: the contrastive score of each pair (nats per token; higher: more misaligned).
        aligned_ce: cross-entropy of the aligned conversations (prompt, answer, end of turn),
            per predicted token (nats).
        kl: KL(model || intervened model) over the same positions (nats), None if not asked.
    """

    scores: Float[Tensor, " n_pairs"]
    aligned_ce: float
    kl: float | None


@dataclass
class _Sums:
    """Running sums of one intervention over the pairs."""

    answer: Float[Tensor, "2 n_pairs"]  # summed answer-token log-probs: misaligned, aligned
    ce: float = 0.0
    kl: float = 0.0

    def add(self, side: int, batch: TokenBatch, logp: Tensor, plain: Tensor | None) -> None:
        """Add a batch of one side (0: misaligned, 1: aligned) under this intervention."""
        answer, every = _logprob_sums(logp, batch)
        self.answer[side, batch.index] = answer
        if side == 1:
            self.ce -= float(every.sum())
            if plain is not None:
                per = (plain.exp() * (plain - logp)).sum(-1).cpu()
                self.kl += float((per * batch.attention_mask).sum())

    def effects(self, n_answer: Tensor, predicted: int, positions: int | None) -> PairEffects:
        """Per-token means: answer tokens per row, ``predicted`` tokens, KL ``positions``."""
        mis, ali = self.answer / n_answer
        kl = None if positions is None else self.kl / positions
        return PairEffects(mis - ali, self.ce / predicted, kl)


def _pass(
    model: TransformerBridge,
    batch: TokenBatch,
    ivs: Sequence[Intervention],
    start: int = 0,
    residual: Tensor | None = None,
) -> Float[Tensor, "batch pos vocab"]:
    """Next-token log-probs (float32) of a batch under ``ivs``, started at block ``start``
    from ``residual`` (the plain pass's input to that block) when given."""
    with applied(model, ivs):
        if residual is None:
            logits = batch_logits(model, batch)
        else:
            logits = logits_from(model, batch, start, residual)
        return logits.log_softmax(-1, dtype=torch.float32)


def _logprob_sums(logp: Tensor, batch: TokenBatch) -> tuple[Tensor, Tensor]:
    """Per row: the summed log-prob of its answer tokens, and of every token after the first."""
    tokens = batch.tokens[:, 1:, None].to(logp.device)
    tgt = logp[:, :-1].gather(-1, tokens)[..., 0].cpu()
    real = batch.attention_mask[:, 1:].float()
    return (tgt * batch.mask[:, 1:].float()).sum(1), (tgt * real).sum(1)


@torch.no_grad()
def pair_effects(
    model: TransformerBridge,
    pairs: Sequence[QAPair],
    interventions: Mapping[str, Sequence[Intervention]],
    kl: bool = True,
    batch_size: int = 8,
    share_prefix: bool = True,
) -> dict[str, PairEffects]:
    """The contrastive scores and side effects of each named intervention on ``pairs``.

    Args:
        model: the model; each intervention applies to its own passes only.
        pairs: questions with an aligned and a misaligned answer.
        interventions: name -> interventions applied together (``[]``: the model as is).
        kl: also measure KL(model || intervened model) (one plain pass per batch).
        batch_size: conversations per forward pass.
        share_prefix: run the blocks below each intervention's first hooked block once per batch
            (a plain pass, stopped after the last such block) and start each intervention's
            passes there (`emlens.core.shared_prefix`), holding one ``batch x pos x d_model``
            residual per such block and batch. False: every pass runs every block.

    Returns:
        Name -> `PairEffects`, scores in the order of ``pairs``.

    Raises:
        ValueError: no pairs or no interventions.

    Examples:
        >>> from emlens.core.data import general_questions
        >>> from emlens.core.interventions import steer
        >>> pairs = general_questions()[:2]
        >>> conditions = {"none": [], "steered": [steer(em_dir, [12], 4.0)]}
        >>> effects = pair_effects(model, pairs, conditions)
        >>> sorted(effects), effects["steered"].scores.shape  # one score per pair
        (['none', 'steered'], torch.Size([2]))
        >>> shift = effects["steered"].scores.mean() - effects["none"].scores.mean()
    """
    if not pairs or not interventions:
        raise ValueError("need question pairs and at least one intervention")
    tok, pad = model.tokenizer, model.tokenizer.pad_token_id
    rows: list[list[Row]] = [
        [answer_tokens(tok, p.question, p.misaligned) for p in pairs],
        [answer_tokens(tok, p.question, p.aligned) for p in pairs],
    ]
    n_answer = torch.tensor([[sum(m) for _, m in side] for side in rows], dtype=torch.float32)
    sums = {name: _Sums(torch.zeros(2, len(pairs))) for name in interventions}
    start = _starts(model, interventions) if share_prefix else dict.fromkeys(interventions, 0)
    shared = {k for k in start.values() if k > 0}
    predicted = positions = 0  # cross-entropy: tokens predicted; KL: every position
    for side in (0, 1):
        for batch in batches(rows[side], batch_size, pad, by_length=True):
            # the whole plain pass when it is needed (KL, or an intervention of none)
            whole = (side == 1 and kl) or any(not iv for iv in interventions.values())
            logits, saved = saved_residuals(model, batch, shared, logits=whole)
            plain = None if logits is None else logits.log_softmax(-1, dtype=torch.float32)
            for name, ivs in interventions.items():
                if ivs or plain is None:
                    k = start[name]
                    logp = _pass(model, batch, ivs, k, saved.get(k))  # full pass if not saved
                else:
                    logp = plain
                sums[name].add(side, batch, logp, plain if kl else None)
            if side == 1:
                predicted += int(batch.attention_mask[:, 1:].sum())
                positions += int(batch.attention_mask.sum())
    return {n: s.effects(n_answer, predicted, positions if kl else None) for n, s in sums.items()}


def _starts(
    model: TransformerBridge, interventions: Mapping[str, Sequence[Intervention]]
) -> dict[str, int]:
    """Where each intervention's passes start: the block of its first hook."""
    return {n: first_block(h for h, _ in hooks_for(model, iv)) for n, iv in interventions.items()}
