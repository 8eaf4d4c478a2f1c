"""Render the measured figures of the probe judge into docs/evaluation.md.

    .venv/bin/python analyses/ground_truth_docs.py           # rewrite the block
    .venv/bin/python analyses/ground_truth_docs.py --check   # exit 1 when it differs

Makes the block between the ``ground-truth-probe`` markers of ``docs/evaluation.md`` from
``docs/results/ground_truth_probe.json`` (written by ``ground_truth_probe.py``): no number in
that block is typed by hand. Reads the committed JSON only (no model, no reference data), so
``study.py`` runs it with the results pages, after ``render_results.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np
from _common import RESULTS, ROOT

from emlens.report import markdown_table

RESULT = RESULTS / "ground_truth_probe.json"
PAGE = ROOT / "docs/evaluation.md"
BEGIN = "<!-- ground-truth-probe:begin (analyses/ground_truth_docs.py renders this block) -->"
END = "<!-- ground-truth-probe:end -->"
METHODS = ("pcc", "cc", "acc", "pacc")  # the default first
OUTER = {"base_model": "base model left out", "domain": "domain left out"}


def _naive(rows: list[dict[str, Any]]) -> dict[str, float]:
    aucs, errs = [r["auc"] for r in rows], [r["error"] for r in rows]
    return {"auc": np.mean(aucs), "min": np.min(aucs), "med": np.median(errs), "max": np.max(errs)}


def _errs(s: dict[str, float]) -> str:
    return f"{s['rate_error_median']:.1f} / {s['rate_error_max']:.1f}"


def summary_rows(r: dict[str, Any]) -> list[dict[str, str]]:
    """One row per protocol: the probe (every rate estimator) beside the naive probe."""
    out = []
    for outer, label in OUTER.items():
        sm = r["probe"][outer]["summary"]
        s = sm["pcc"]
        n = _naive(r["baselines"]["naive_probe"][outer])
        out.append(
            {
                "protocol": label,
                "AUC mean (worst)": f"{s['auc_mean']:.3f} ({s['auc_min']:.3f})",
                "accuracy": f"{s['accuracy_mean']:.3f}",
                "calibration error": f"{s['calibration_error_mean']:.3f}",
                **{f"rate error median / worst, {m.upper()}": _errs(sm[m]) for m in METHODS},
                "naive probe: AUC (worst), error median / worst": (
                    f"{n['auc']:.3f} ({n['min']:.3f}), {n['med']:.1f} / {n['max']:.1f}"
                ),
            }
        )
    return out


def organism_rows(r: dict[str, Any], outer: str) -> list[dict[str, str]]:
    return [
        {
            "held out": row["organism"],
            "layers, C": f"{','.join(map(str, row['layers']))}; {row['C']}",
            "AUC": f"{row['auc']:.3f}",
            "GPT-4o EM %": f"{row['gpt4o_rate']:.1f}",
            "probe EM % (PCC) [95% CI]": (
                f"{row['pcc']['rate']:.1f} [{row['pcc']['ci95'][0]:.1f}, "
                f"{row['pcc']['ci95'][1]:.1f}]"
            ),
            "error (points)": f"{row['pcc']['error']:.1f}",
        }
        for row in r["probe"][outer]["rows"]
    ]


def verdict(r: dict[str, Any]) -> str:
    t, s = r["targets"], r["probe"]["base_model"]["summary"]["pcc"]
    met = {
        "AUC": s["auc_mean"] >= t["auc_mean"],
        "median rate error": s["rate_error_median"] <= t["rate_error_median"],
        "worst rate error": s["rate_error_max"] <= t["rate_error_max"],
    }
    ok = [k for k, v in met.items() if v]
    missed = [k for k, v in met.items() if not v]
    return (
        f"Against the targets on base models left out (AUC >= {t['auc_mean']}, median rate "
        f"error <= {t['rate_error_median']} point, worst <= {t['rate_error_max']}): "
        f"met: {', '.join(ok) or 'none'}; missed: {', '.join(missed) or 'none'}."
    )


def baseline_lines(r: dict[str, Any]) -> list[str]:
    b = r["baselines"]
    pairs = [np.mean(list(v.values())) for v in b["pairs_direction_auc"].values()]
    judged = [row["auc"] for row in b["judged_direction"]["base_model"]]
    refusal = [v["auc"] for v in b["refusal_substrings"].values() if not np.isnan(v["auc"])]
    return [
        f"- EM direction from emlens's own answer pairs (no judged data), projection AUC per "
        f"organism (mean over layers): {min(pairs):.2f} to {max(pairs):.2f};",
        f"- mean-difference direction of the training organisms' verdicts, base model left out: "
        f"AUC {np.mean(judged):.3f} (worst {min(judged):.3f});",
        f"- refusal substrings as 'not EM': AUC {min(refusal):.2f} to {max(refusal):.2f}.",
    ]


def block(r: dict[str, Any]) -> str:
    lines = [
        BEGIN,
        "",
        *markdown_table(summary_rows(r)),
        "",
        verdict(r),
        "",
        "Zero-training baselines on the same answers:",
        "",
        *baseline_lines(r),
        "",
        "Per organism, base model left out (fitted on the other two base models' organisms):",
        "",
        *markdown_table(organism_rows(r, "base_model")),
        "",
        END,
    ]
    return "\n".join(lines)


def rendered() -> str:
    """docs/evaluation.md with its block rendered from the committed JSON."""
    r = json.loads(RESULT.read_text())
    page = PAGE.read_text()
    if BEGIN not in page or END not in page:
        raise ValueError(f"{PAGE} has no {BEGIN} ... {END} block to render into")
    head, rest = page.split(BEGIN, 1)
    return head + block(r) + rest.split(END, 1)[1]


def main(argv: list[str] | None = None) -> int:
    """Rewrite the block, or with ``--check`` say whether it differs."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 on a difference")
    args = p.parse_args(argv)
    page = rendered()
    if PAGE.read_text() == page:
        print(f"{PAGE.relative_to(ROOT)} is up to date with {RESULT.relative_to(ROOT)}")
        return 0
    if args.check:
        print(f"{PAGE.relative_to(ROOT)} differs from its rendering", file=sys.stderr)
        return 1
    PAGE.write_text(page)
    print(f"rendered {RESULT.relative_to(ROOT)} into {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
