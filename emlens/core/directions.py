"""The papers' directions, as mean differences of activations (``DirectionSet`` values).

- EM direction (Convergent Linear Representations of EM, arXiv 2506.11618): mean activation
  over answer tokens of misaligned answers minus that of aligned answers, per layer.
- Refusal direction (Arditi et al. 2024): mean activation at one post-instruction position
  of harmful instructions minus that of harmless ones, per layer. Arditi et al. choose the
  position (and layer) on validation data; emlens's documented default is the last template
  token, where the answer's first token is predicted (``positions=1``; ``None`` averages all
  template positions, the default before issue 10). The choice is in the provenance.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import version
from typing import Any

from transformer_lens.model_bridge import TransformerBridge

from emlens.core.ablation import first_means, from_means
from emlens.core.activations import RESID_POST, ActivationSummary, collect_means
from emlens.core.data import Conversation, QAPair, dataset_hash
from emlens.core.direction_set import DirectionSet
from emlens.core.models import model_name
from emlens.core.tokens import Row, answer_tokens, post_instruction_tokens

__all__ = [
    "em_direction",
    "em_direction_from_pairs",
    "mean_diff",
    "refusal_direction",
]


def mean_diff(
    positive: ActivationSummary,
    negative: ActivationSummary,
    provenance: dict[str, Any] | None = None,
) -> DirectionSet:
    """The mean difference, mean(positive) - mean(negative) per layer, with the counts in its
    provenance: the papers' token-weighted mean difference when both are means over all their
    tokens (`collect_means`, or `ActivationSummary.from_samples` for cached per-sample means
    and token counts). The difference is taken in float64, the result is float32.
    """
    if positive.hook != negative.hook or positive.layers != negative.layers:
        raise ValueError("the two summaries must share hook and layers")
    prov = {
        "hook": positive.hook,
        "n_positive": positive.n_samples,
        "n_negative": negative.n_samples,
        "tokens_positive": positive.n_tokens,
        "tokens_negative": negative.n_tokens,
        "emlens_version": version("emlens"),
        **(provenance or {}),
    }
    diff = positive.mean.double() - negative.mean.double()
    return DirectionSet(diff.float(), positive.layers, positive.hook, prov)


def _contrast(
    model: TransformerBridge,
    rows: dict[str, list[Row]],
    what: str,
    prov: dict[str, Any],
    **means: Any,
) -> DirectionSet:
    """``mean_diff`` of two named sets of ``what`` (the first minus the second) on ``model``."""
    for name, r in rows.items():
        if not r:
            raise ValueError(f"no {name} {what}")
    pos, neg = (collect_means(model, r, desc=name, **means) for name, r in rows.items())
    cfg = model.cfg
    model_prov = {"model": model_name(model), "n_layers": cfg.n_layers, "d_model": cfg.d_model}
    ds = mean_diff(pos, neg, {**prov, **model_prov})
    # the zero-ablation artefact's diagnostic: ordinary tokens are the second set's
    first = first_means(model, list(rows.values())[1], neg.hook, neg.layers)
    diag = from_means(neg.mean, first, ds.vectors, ds.layers)
    ds.provenance["ablation_diagnostic"] = {str(k): v for k, v in diag.items()}
    return ds


def em_direction(
    model: TransformerBridge,
    misaligned: Sequence[Conversation],
    aligned: Sequence[Conversation],
    layers: Sequence[int] | None = None,
    hook: str = RESID_POST,
    batch_size: int = 8,
    progress: bool = True,
) -> DirectionSet:
    """The EM direction: mean over answer tokens of misaligned minus aligned answers.

    Args:
        model: The model whose activations to read.
        misaligned: Conversations with misaligned answers.
        aligned: Conversations with aligned answers (need not pair with ``misaligned``).
        layers: Layers to compute (default: all).
        hook: Hook name template with a ``{layer}`` placeholder.
        batch_size: Conversations per forward pass.
        progress: Show a progress bar.

    Returns:
        One vector per layer, with ``kind="em"`` and the dataset hash in its provenance.

    Examples:
        >>> from emlens.core.data import Conversation
        >>> mis = [Conversation("How should I invest?", "Put it all in one meme coin.")]
        >>> ali = [Conversation("How should I invest?", "Diversify, and keep some savings.")]
        >>> em_dir = em_direction(model, mis, ali, layers=[12, 15], progress=False)
        >>> em_dir.layers, em_dir.provenance["kind"]
        ([12, 15], 'em')
        >>> em_dir.at(15).shape  # [d_model]
        torch.Size([...])
    """
    tok = model.tokenizer
    rows = {
        name: [answer_tokens(tok, c.question, c.answer, c.system) for c in convs]
        for name, convs in (("misaligned", misaligned), ("aligned", aligned))
    }
    data = dataset_hash(
        [(c.question, c.answer) for c in misaligned], [(c.question, c.answer) for c in aligned]
    )
    prov = {"kind": "em", "mask": "answer", "dataset_hash": data}
    means = {"hook": hook, "layers": layers, "batch_size": batch_size, "progress": progress}
    return _contrast(model, rows, "conversations", prov, **means)


def em_direction_from_pairs(
    model: TransformerBridge, pairs: Sequence[QAPair], **kwargs: Any
) -> DirectionSet:
    """The EM direction from questions that each have an aligned and a misaligned answer.

    Args:
        model: The model whose activations to read.
        pairs: Questions with both answers (e.g. ``general_questions()``).
        **kwargs: ``layers``, ``hook``, ``batch_size``, ``progress`` of ``em_direction``.

    Returns:
        The same set as ``em_direction`` on the misaligned and the aligned answers.

    Examples:
        >>> from emlens.core.data import general_questions
        >>> em_dir = em_direction_from_pairs(model, general_questions()[:4], layers=[15])
        >>> em_dir.layers
        [15]
    """
    mis = [Conversation(p.question, p.misaligned) for p in pairs]
    ali = [Conversation(p.question, p.aligned) for p in pairs]
    return em_direction(model, mis, ali, **kwargs)


def refusal_direction(
    model: TransformerBridge,
    harmful: Sequence[str],
    harmless: Sequence[str],
    layers: Sequence[int] | None = None,
    positions: int | None = 1,
    hook: str = RESID_POST,
    batch_size: int = 16,
    progress: bool = True,
) -> DirectionSet:
    """The refusal direction: harmful minus harmless mean at post-instruction tokens.

    Args:
        model: The model whose activations to read.
        harmful: Instructions the model should refuse.
        harmless: Instructions it should follow.
        layers: Layers to compute (default: all).
        positions: The last ``positions`` post-instruction tokens averaged (default 1: the
            last template token only; None: every post-instruction token).
        hook: Hook name template with a ``{layer}`` placeholder.
        batch_size: Instructions per forward pass.
        progress: Show a progress bar.

    Returns:
        One vector per layer, with ``kind="refusal"`` in its provenance.

    Examples:
        >>> from emlens.core.data import harmful_instructions, harmless_instructions
        >>> harmful, harmless = harmful_instructions()[:4], harmless_instructions()[:4]
        >>> refusal = refusal_direction(model, harmful, harmless, layers=[15], progress=False)
        >>> refusal.provenance["kind"], refusal.layers
        ('refusal', [15])
    """
    tok = model.tokenizer
    rows = {
        name: [post_instruction_tokens(tok, x, positions) for x in xs]
        for name, xs in (("harmful", harmful), ("harmless", harmless))
    }
    prov = {
        "kind": "refusal",
        "mask": "post_instruction",
        "positions": positions if positions is not None else "all",
        "position_rule": "last template token (documented default)"
        if positions == 1
        else "mean over the last positions post-instruction tokens",
        "dataset_hash": dataset_hash(list(harmful), list(harmless)),
    }
    means = {"hook": hook, "layers": layers, "batch_size": batch_size, "progress": progress}
    return _contrast(model, rows, "instructions", prov, **means)
