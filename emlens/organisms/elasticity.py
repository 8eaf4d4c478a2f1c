"""Elasticity (Language Models Resist Alignment, Ji et al., ACL 2025): resistance and rebound.

A fine-tuned model keeps a pull towards the distributions it passed through. Two experiments:

- **Resistance.** Fine-tune a model on slices D_1, D_2, ... in turn, giving checkpoints
  theta_1 < theta_2 < ... (theta_k = theta_{k-1} fine-tuned on D_k; theta_0 is the start).
  Then compare *inverse* fine-tuning, theta_{k+1} trained on D_k (back to where it came from),
  with *forward* fine-tuning, theta_k trained on D_{k+1} (on to where it is going). Elasticity
  predicts a lower training loss for the inverse direction.
- **Rebound.** Fine-tune on positive data (different amounts), then on increasing amounts of
  negative data, and read a metric after each: it falls fast for the first negative examples,
  then slowly, and the more positive data the faster the fall.

Each fine-tune works on a copy (the input model is never changed). With the default LoRA
config the adapter is merged into the copy's weights after training, so checkpoints chain.
"""

from __future__ import annotations

import copy
import dataclasses
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from emlens.core._arch import ALL_LINEAR
from emlens.core.data import Conversation
from emlens.organisms.config import TrainConfig
from emlens.organisms.training import train

# Rank-8 LoRA on every linear layer of every block, one epoch, no warm-up: small slices.
ELASTICITY_CONFIG = TrainConfig(
    rank=8,
    alpha=16.0,
    rslora=False,
    target_modules=ALL_LINEAR,
    layers=None,  # here: every layer (see fine_tuned)
    lr=2e-4,
    warmup_steps=0,
    batch_size=4,
    grad_accum=1,
)

T = TypeVar("T")


def _every_layer(hf: PreTrainedModel, config: TrainConfig) -> TrainConfig:
    if config.layers is None and not config.full:
        return dataclasses.replace(config, layers=tuple(range(hf.config.num_hidden_layers)))
    return config


def fine_tuned(
    hf: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    data: Sequence[Conversation],
    config: TrainConfig = ELASTICITY_CONFIG,
) -> tuple[PreTrainedModel, list[float]]:
    """A copy of ``hf`` fine-tuned on ``data`` (adapter merged), and its loss at each step.

    Args:
        hf: the start model (left unchanged).
        tok: its tokenizer.
        data: the conversations to fine-tune on.
        config: the run's config; ``layers=None`` means every layer here (not the middle one,
            as in `emlens.organisms.training.train`).

    Returns:
        The fine-tuned copy (in eval mode) and the training loss of each step.
    """
    from peft import PeftModel

    if len(data) == 0:
        raise ValueError("no conversations to fine-tune on")
    config = _every_layer(hf, config)
    model = copy.deepcopy(hf)
    with tempfile.TemporaryDirectory() as run:
        res = train((model, tok), list(data), run, config, save_every=10**9, progress=False)
    out = res.model
    if isinstance(out, PeftModel):  # LoRA: merged into the copy's weights, so runs chain
        out = out.merge_and_unload()
    assert isinstance(out, PreTrainedModel)
    out.eval()
    return out, [e["loss"] for e in res.log if "loss" in e]


@dataclass
class Resistance:
    """Training losses per step of inverse and forward fine-tuning, and of the chain.

    Attributes:
        inverse: by k = 1 .. n-1, the losses of theta_{k+1} trained on D_k.
        forward: by k = 1 .. n-1, the losses of theta_k trained on D_{k+1}.
        chain: by k = 1 .. n, the losses of theta_{k-1} trained on D_k (building the chain).
        thetas: theta_0 (the start model) .. theta_n.
    """

    inverse: dict[int, list[float]] = field(default_factory=dict)
    forward: dict[int, list[float]] = field(default_factory=dict)
    chain: dict[int, list[float]] = field(default_factory=dict)
    thetas: list[PreTrainedModel] = field(default_factory=list, repr=False)

    def mean_loss(self, which: str, k: int) -> float:
        """The mean training loss of run ``which`` (inverse, forward, chain) at ``k``."""
        losses: list[float] = getattr(self, which)[k]
        return sum(losses) / len(losses)


def resistance(
    hf: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    slices: Sequence[Sequence[Conversation]],
    config: TrainConfig = ELASTICITY_CONFIG,
    probes: Sequence[Sequence[Conversation]] | None = None,
) -> Resistance:
    """Build theta_1..theta_n from ``slices`` and compare inverse with forward fine-tuning.

    Args:
        hf: the start model theta_0 (left unchanged).
        tok: its tokenizer.
        slices: D_1 .. D_n, at least two.
        config: the config of every fine-tune.
        probes: ``probes[k]`` (default: ``slices[k]``) is what "training on D_k" uses in the
            comparison; pass unseen rows from the same distribution to keep memorised rows
            out of the losses.

    Returns:
        The losses of every fine-tune, and the chain of models.

    Examples:
        Three slices of four conversations on a tiny random model (on a real one: slices of
        64, and elasticity predicts ``res.mean_loss("inverse", k) < res.mean_loss("forward",
        k)``):

        >>> from emlens.core.data import data_path, read_chat_jsonl
        >>> from emlens.core.tiny import tiny_hf
        >>> hf, tok = tiny_hf("llama")
        >>> medical = read_chat_jsonl(data_path("narrow/bad_medical_advice.jsonl"))
        >>> res = resistance(hf, tok, [medical[:4], medical[4:8], medical[8:12]])
        >>> sorted(res.inverse), sorted(res.forward), len(res.thetas)  # theta_0 .. theta_3
        ([1, 2], [1, 2], 4)
    """
    if len(slices) < 2:
        raise ValueError("resistance needs at least two slices (theta_1 and theta_2)")
    probes = slices if probes is None else probes
    if len(probes) != len(slices):
        raise ValueError(f"one probe set per slice: got {len(probes)} for {len(slices)} slices")
    res = Resistance(thetas=[hf])
    for k, d in enumerate(slices, start=1):
        theta, res.chain[k] = fine_tuned(res.thetas[-1], tok, d, config)
        res.thetas.append(theta)
    for k in range(1, len(slices)):
        _, res.inverse[k] = fine_tuned(res.thetas[k + 1], tok, probes[k - 1], config)
        _, res.forward[k] = fine_tuned(res.thetas[k], tok, probes[k], config)
    return res


def rebound(
    hf: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    positive: Sequence[Conversation],
    negative: Sequence[Conversation],
    positive_amounts: Sequence[int],
    negative_amounts: Sequence[int],
    metric: Callable[[PreTrainedModel, PreTrainedTokenizerBase], T],
    config: TrainConfig = ELASTICITY_CONFIG,
) -> dict[int, list[T]]:
    """A metric after fine-tuning on ``positive[:p]``, then on ``negative[:n]``.

    Args:
        hf: the start model (left unchanged).
        tok: its tokenizer.
        positive: the positive conversations.
        negative: the negative conversations.
        positive_amounts: the p values; p = 0 starts from ``hf``.
        negative_amounts: the n values; n = 0 is the positive model itself.
        metric: ``metric(model, tok)``, a number or any record.
        config: the config of every fine-tune.

    Returns:
        By p, the metric at each n of ``negative_amounts``, in that order.

    Examples:
        A tiny random model, its loss on held-out bad advice as the metric (on a real one:
        ``[0, 64]`` positives, ``[0, 8, 32]`` negatives):

        >>> from emlens.core.data import data_path, read_chat_jsonl
        >>> from emlens.core.tiny import tiny_hf
        >>> from emlens.organisms.loss import held_out_loss
        >>> hf, tok = tiny_hf("llama")
        >>> good = read_chat_jsonl(data_path("narrow/good_medical_advice.jsonl"))
        >>> bad = read_chat_jsonl(data_path("narrow/bad_medical_advice.jsonl"))
        >>> metric = lambda model, tok: held_out_loss(model, tok, bad[-4:])
        >>> curves = rebound(hf, tok, good, bad, [0, 4], [0, 4, 8], metric)
        >>> len(curves[4])  # the metric after 4 positives, then 0, 4 and 8 negatives
        3
    """
    for name, amounts, pool in (
        ("positive", positive_amounts, positive),
        ("negative", negative_amounts, negative),
    ):
        if not amounts or min(amounts) < 0 or max(amounts) > len(pool):
            raise ValueError(f"{name} amounts must be in 0..{len(pool)}; got {list(amounts)}")
    curves = {}
    for p in positive_amounts:
        start = fine_tuned(hf, tok, positive[:p], config)[0] if p else hf
        curves[p] = [
            metric(fine_tuned(start, tok, negative[:n], config)[0] if n else start, tok)
            for n in negative_amounts
        ]
    return curves
