"""Ablation variants for finding 2b (issue 10, section 1), applied alike to organisms and base.

Zero-ablation sets each token's projection on the direction to 0; on SmolLM2 ordinary tokens
project far from 0 (the direction holds a little of the massive-activation coordinates), so
zero-ablation moves every token along the direction: it steers. The variants here:

- zero: ``x - (x.d)d`` (Arditi et al.), the previous 2b measurement;
- reference mean: ``x - ((x.d) - c)d``, ``c`` the mean projection of ordinary tokens of the
  ablated model on the direction-fitting texts (``emlens.core.ablation.reference_means``);
- reference mean, first position left alone (``skip_first``: the attention sink);

each with the organism's layer-L direction at every layer ("single direction") and each
layer's own direction at that layer ("layer by layer"). Controls: a random unit direction
(norm-matched), and a random unit direction whose mean projection on the reference tokens
equals the EM direction's (offset-matched), both zero-ablated, so a control carries the same
artefact. Every condition runs in the organism and in the base model; ``against_base`` reports
the organism's change net of the base model's change, paired over questions.
"""

from __future__ import annotations

import argparse

import torch

import emlens as eml
from emlens.core.ablation import reference_means, reference_rows
from emlens.eval import bootstrap
from emlens.eval.effects import pair_effects
from emlens.report import markdown_table


def reference(model, fit: list) -> torch.Tensor:
    """Mean block inputs (every layer) over ordinary tokens of the fitting pairs' texts."""
    texts = [
        eml.core.chat_prompt(model.tokenizer, p.question) + answer
        for p in fit
        for answer in (p.aligned, p.misaligned)
    ]
    return reference_means(model, reference_rows(model.tokenizer, texts))


def offset_matched(mean: torch.Tensor, d: torch.Tensor, seed: int) -> torch.Tensor:
    """A random unit vector ``r`` with ``r . mean == d_hat . mean`` (same offset as ``d``)."""
    m = mean.float()
    c = float(m @ (d / d.norm()))
    g = torch.randn(m.shape[-1], generator=torch.Generator().manual_seed(seed))
    m_hat = m / m.norm()
    g = g - (g @ m_hat) * m_hat
    alpha = c / float(m.norm())
    return alpha * m_hat + (1 - alpha**2) ** 0.5 * g / g.norm()


def conditions(a: argparse.Namespace, dirs: dict, org: str, ref: torch.Tensor) -> dict:
    """The ablations of organism ``org``'s direction, for a model whose reference is ``ref``."""
    layer, own = a.layer, dirs[org]
    every, each = list(range(ref.shape[0])), own.layers
    d = own.at(layer)
    out = {}
    for tag, kw in (
        ("zero", {}),
        ("reference mean", {"reference": ref}),
        ("reference mean, sink kept", {"reference": ref, "skip_first": True}),
    ):
        out[f"own L{layer} direction, all layers, {tag}"] = [
            eml.ablate(d, layers=every, reference=kw.get("reference"), **_skip(kw))
        ]
        layer_ref = None if "reference" not in kw else ref[each]
        out[f"own direction, layer by layer, {tag}"] = [
            eml.ablate(own, layers=each, reference=layer_ref, **_skip(kw))
        ]
    rand = eml.random_like(own, seed=a.seed).at(layer)
    out["random unit direction, zero (norm-matched control)"] = [eml.ablate(rand, layers=every)]
    matched = offset_matched(ref[layer], d, a.seed)
    out["random unit direction, zero (offset-matched control)"] = [
        eml.ablate(matched, layers=every)
    ]
    return out


def _skip(kw: dict) -> dict:
    return {"skip_first": bool(kw.get("skip_first", False))}


def _ci(x: torch.Tensor) -> dict:
    e = bootstrap(x)
    return {"mean": round(e.mean, 4), "ci95": [round(v, 4) for v in e.ci95]}


def against_base(scores: dict, org_abl: dict, base_abl: dict) -> dict:
    """Per condition: the change in the organism, in the base model, and their paired
    difference over questions (organism change minus base change), with 95% intervals."""
    org, base = torch.tensor(scores["org"]), torch.tensor(scores["base"])
    out = {}
    for c, r in org_abl.items():
        o, b = torch.tensor(r["scores"]) - org, torch.tensor(base_abl[c]["scores"]) - base
        out[c] = {
            "change_in_organism": _ci(o),
            "change_in_base": _ci(b),
            "organism_minus_base_change": _ci(o - b),
            "ablated_organism_minus_base": _ci(torch.tensor(r["scores"]) - base),
            "kl_organism": round(r["kl"], 4),
            "kl_base": round(base_abl[c]["kl"], 4),
        }
    return out


def measure(model, held: list, conditions: dict) -> dict:
    """Per condition: the contrastive score of each held-out question, and the KL to the
    un-ablated model on the held-out aligned conversations (damage), in shared passes
    (`emlens.eval.effects.pair_effects`: the un-ablated pass once for all conditions)."""
    effects = pair_effects(model, held, conditions)
    return {name: {"scores": e.scores.tolist(), "kl": e.kl} for name, e in effects.items()}


def readme_lines(against: dict) -> list[str]:
    """The README tables of ``against_base``, one per organism's direction."""
    lines: list[str] = []
    for org, res in against.items():
        lines += [f"### {org}'s direction: organism change minus base change (paired)", ""]
        table = [
            {
                "ablated": c,
                **{k.replace("_", " "): mci(r[k]) for k in list(r)[:4]},
                "KL org / base": f"{r['kl_organism']} / {r['kl_base']}",
            }
            for c, r in res.items()
        ]
        lines += [*markdown_table(table), ""]
    return lines


def mci(r: dict) -> str:
    lo, hi = r["ci95"]
    return f"{r['mean']:+.4f} [{lo:+.4f}, {hi:+.4f}]"
