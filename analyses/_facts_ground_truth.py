"""The results page's facts from the ground-truth analyses' JSON (1b and 2 re-measured on the
EM papers' GPT-4o-judged answers, and 2 in the papers' unit with the judge fitted on them);
used by ``render_results.py``."""

from __future__ import annotations

import re
import shlex
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


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def facts_steering_em_rate() -> dict[str, str]:
    """2 in the papers' unit: the EM rate and coherence of each steering cell vs random."""
    r = load("steering_em_rate.json")
    rows, base, meta = r["rows"], r["unsteered"], r["meta"]
    coherent = [x for x in rows if x["as_coherent_as_unsteered"]]
    beats = [x for x in coherent if x["above_every_random"]]
    best = max(coherent or rows, key=lambda x: x["judged"]["em_rate"])
    layers = sorted({x["layer"] for x in rows})
    scales = sorted({x["scale"] for x in rows})
    return {
        "ser_minutes": f"{meta['seconds'] / 60:.0f}",
        "ser_temp": f"{meta['temperature']:g}",
        "ser_random": str(meta["random"]),
        "ser_layers": ", ".join(map(str, layers)),
        "ser_scales": ", ".join(f"{s:g}" for s in scales),
        "ser_cells": str(len(rows)),
        "ser_base": base["em_text"].split(" (")[0],
        "ser_base_coh": _pct(base["coherent"]),
        "ser_base_ce": f"{base['cross_entropy']:.2f}",
        "ser_base_n": str(base["answers"]),
        "ser_n_cell": str(rows[0]["judged"]["answers"]),
        "ser_n_random": str(rows[0]["random"]["answers"] // meta["random"]),
        "ser_coherent": str(len(coherent)),
        "ser_beats": str(len(beats)),
        "ser_best": f"layer {best['layer']}, scale {best['scale']:g}: "
        f"{best['judged']['em_text'].split(' (')[0]}, coherent {_pct(best['judged']['coherent'])}"
        f" (its {meta['random']} random directions: mean {_pct(best['random']['em_mean'])}, "
        f"max {_pct(best['random']['em_max'])})",
        "ser_incoherent": ", ".join(
            f"layer {x['layer']} scale {x['scale']:g} ({_pct(x['judged']['coherent'])})"
            for x in rows
            if not x["as_coherent_as_unsteered"]
        )
        or "none",
        "ser_verdict": r["verdict"],
        "ser_lift": span([100 * (x["judged"]["em_rate"] - base["em_rate"]) for x in beats], ".0f")
        if beats
        else "none",
        "ser_margin": span(
            [100 * (x["judged"]["em_rate"] - x["random"]["em_max"]) for x in beats], ".0f"
        )
        if beats
        else "none",
        "ser_judge_error": re.search(r"judge error ±([\d.]+)", base["em_text"]).group(1),
        "ser_clear_incoherent": ", ".join(
            f"layer {x['layer']} scale {x['scale']:g} ({x['judged']['em_text'].split(' (')[0]}, "
            f"coherent {_pct(x['judged']['coherent'])})"
            for x in rows
            if x["interval_above_unsteered"]
            and x["above_every_random"]
            and not x["as_coherent_as_unsteered"]
        )
        or "none",
    }


def facts_screen_medical() -> dict[str, str]:
    """Screening data before training: bad vs good medical advice rows, by the EM screen."""
    r = load("screen_medical.json")
    auc, meta = r["auc"], r["meta"]

    def a(key: str) -> str:
        lo, hi = auc[key]["ci95"]
        return f"{auc[key]['auc']:.2f} [{lo:.2f}, {hi:.2f}]"

    return {
        "sm_n": str(auc["score"]["n_pairs"]),
        "sm_minutes": f"{meta['seconds'] / 60:.0f}",
        "sm_layer": (words := shlex.split(meta["command"]))[words.index("--layer") + 1],
        "sm_score": a("score"),
        "sm_length": a("data_tokens"),
        "sm_ce": a("cross_entropy_gap"),
        "sm_p_em": a("p_em"),
        "sm_verdict": "separates" if r["separates"] else "does not separate",
    }


FACTS = (facts_gt_convergence, facts_gt_steering, facts_steering_em_rate, facts_screen_medical)
