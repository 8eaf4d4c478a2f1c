"""The results page's facts from the ground-truth analyses' JSON (1b and 2 re-measured on the
EM papers' GPT-4o-judged answers); used by ``render_results.py``."""

from __future__ import annotations

from typing import Any

import numpy as np
from _render import load, span

DEEP = range(12, 30)  # the middle and late layers the page summarises


def facts_gt_convergence() -> dict[str, str]:
    """1b the papers' way: per-organism directions from judged answers, read through SmolLM2."""
    r = load("ground_truth_convergence.json")
    idx = [r["layers"].index(x) for x in DEEP]
    mean = {k: [r["mean_cos"][k][i] for i in idx] for k in r["mean_cos"]}
    null = {k: [r["null_q95"][k][i] for i in idx] for k in r["null_q95"]}
    halves = np.array(r["split_half"])[:, idx].mean(0)
    pairs_dir = np.array(r["cos_with_pairs_direction"])[:, idx]
    return {
        "gt_n_orgs": str(len(r["organisms"])),
        "gt_layers": f"{DEEP[0]}-{DEEP[-1]}",
        "gt_seed": span(mean["seed"]),
        "gt_domain": span(mean["domain"]),
        "gt_base": span(mean["base"]),
        "gt_neither": span(mean["neither"]),
        "gt_null_max": f"{max(max(v) for v in null.values()):.2f}",
        "gt_null_cross_max": f"{max(max(null[k]) for k in ('base', 'domain', 'neither')):.2f}",
        "gt_split_half": span(halves),
        "gt_pairs_dir": span(pairs_dir.mean(0)),
        "gt_pairs_dir_max": f"{np.abs(pairs_dir).max():.2f}",
        "gt_shuffles": str(r["shuffles"]),
        "gt_n_mis": span(r["n_misaligned"], ".0f"),
        "gt_n_ali": span(r["n_aligned"], ".0f"),
        "gt_conv_minutes": f"{r['seconds'] / 60:.0f}",
    }


def _rate(g: dict[str, Any]) -> str:
    return f"{g['rate']:.1f}% [{g['ci95'][0]:.1f}, {g['ci95'][1]:.1f}]"


def facts_gt_steering() -> dict[str, str]:
    """2 on ground truth: steering SmolLM2 with the judged-data direction vs random."""
    r = load("ground_truth_steering.json")
    c, g = r["contrastive"], r["generations"]
    above = [
        x for x in c if x["judged"]["ci95"][0] > max(0.0, x["random"]["ci95"][1])
    ]  # judged shift's interval wholly above zero and above the random one's
    return {
        "gs_layer": str(r["layer"]),
        "gs_scale": f"{r['scale']:g}",
        "gs_cos_pairs": f"{r['cos_with_pairs_direction']:.2f}",
        "gs_n_orgs": str(len(c)),
        "gs_pairs": span([x["pairs"] for x in c], ".0f"),
        "gs_judged": span([x["judged"]["mean"] for x in c], "+.2f"),
        "gs_random": span([x["random"]["mean"] for x in c], "+.2f"),
        "gs_above": str(len(above)),
        "gs_pos": str(sum(x["judged"]["ci95"][0] > 0 for x in c)),
        "gs_more": str(sum(x["judged"]["mean"] > x["random"]["mean"] for x in c)),
        "gs_base_rate": _rate(g["baseline"]),
        "gs_judged_rate": _rate(g["judged"]),
        "gs_random_rate": _rate(g["random"]),
        "gs_n": str(g["baseline"]["n"]),
        "gs_minutes": f"{r['seconds'] / 60:.0f}",
    }


FACTS = (facts_gt_convergence, facts_gt_steering)
