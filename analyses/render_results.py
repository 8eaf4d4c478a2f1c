"""Render the results pages from the JSON the analysis scripts wrote; no number is typed by hand.

    .venv/bin/python analyses/render_results.py            # rewrite the pages
    .venv/bin/python analyses/render_results.py --check    # exit 1 and name the pages that differ

Pages and where their numbers come from:

- ``docs/results/README.md``: the template ``analyses/templates/results_README.md``, whose
  ``${name}`` fields are filled by the ``facts_*`` functions below from ``docs/results/**.json``.
  The verdict words are in the template, written by a person beside the generated numbers.
- ``docs/results/<finding>/README.md`` (organisms, steering_sweep, phase_change, elasticity):
  the script's own ``readme(summary)`` applied to the committed ``summary.json``.
- ``docs/results/<name>.md`` (em_vs_refusal, em_rate_local_judge, lora_probes, circuits): the
  table is ``markdown_table`` of the committed JSON's ``rows`` (``ablation`` for circuits); the
  first line names the JSON's command and seconds. These pages are checked, not rewritten.

Reads JSON only (no model, no stages), so it runs in seconds.

When a script's JSON changes shape or its numbers move (a re-measured finding), update its
``facts_*`` function and the template's sentences with it: a verdict that the new numbers no
longer support is rewritten in the template, never patched on the page.
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import json
import shlex
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from string import Template

import _common
import _facts_ground_truth
from _render import load, span

ROOT, RESULTS = _common.ROOT, _common.RESULTS
TEMPLATE = ROOT / "analyses/templates/results_README.md"
BESIDE = {"em_vs_refusal": "rows", "em_rate_local_judge": "rows", "lora_probes": "rows"}
BESIDE_TABLE = {
    **BESIDE,
    "circuits": "ablation",
    "coherence_temperature": "table",
    "steering_em_rate": "table",
}


def option(command: str, name: str) -> str:
    """The value of ``--name`` in a recorded command line (the first word after it)."""
    words = shlex.split(command)
    return words[words.index(f"--{name}") + 1]


def pct(values: Iterable[float]) -> str:
    """Shares as a percent span, ``31-49%``."""
    return span([100 * v for v in values], ".0f", "%")


def layers_text(layers: list[int]) -> str:
    """``12-19 and 21-29`` for a sorted list of layer numbers."""
    runs: list[list[int]] = []
    for x in layers:
        if runs and x == runs[-1][-1] + 1:
            runs[-1].append(x)
        else:
            runs.append([x])
    parts = [f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs]
    return ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]


def ci(interval: list[float]) -> str:
    """``[lo, hi]`` at two decimals."""
    return f"[{interval[0]:.2f}, {interval[1]:.2f}]"


def change(row: dict) -> str:
    """A paired change with its interval: ``+0.30 [0.18, 0.41]``."""
    return f"{row['change']:+.2f} {ci(row['change_ci95'])}"


def facts_em_vs_refusal() -> dict[str, str]:
    """Finding 1a: the EM/refusal cosine per layer against its nulls."""
    d = load("em_vs_refusal.json")
    rows, q95 = d["rows"], d["meta"]["random_null_q95"]
    cos = {r["layer"]: r["cos(EM, refusal)"] for r in rows}
    shuf = {
        r["layer"]: r["shuffled-label null: 95% quantile of abs cos with refusal"] for r in rows
    }
    deep = [x for x in cos if x >= 12]
    shuf_max = max(shuf[x] for x in deep)
    under = [x for x in deep if cos[x] < q95]
    beats = [x for x in deep if abs(cos[x]) > max(shuf[x], q95)]
    return {
        "em_n_pairs": str(d["meta"]["n_pairs"]),
        "em_n_harmful": str(d["meta"]["n_harmful"]),
        "em_cos_deep": span(cos[x] for x in deep),
        "em_cos_deep_layers": f"{deep[0]}-{deep[-1]}",
        "em_cos_15": f"{cos[15]:.3f}",
        "em_cos_no_massive": span(
            r["cos(EM, refusal), massive coordinates removed"] for r in rows if r["layer"] in deep
        ),
        "em_cos_shallow": span(cos[x] for x in cos if x < 12),
        "em_q95": f"{q95:.3f}",
        "em_under_null": ", ".join(f"layer {x} ({cos[x]:.3f})" for x in under) or "none",
        "em_shuf_max": f"{shuf_max:.2f}",
        "em_shuffles": str(d["meta"]["shuffles"]),
        "em_beats": layers_text(beats) if beats else "none",
        "em_split_half": span(r["cos(EM half A, EM half B)"] for r in rows),
    }


def _both(ab: dict, cond: str, key: str, fmt: str = "+.2f") -> str:
    """``financial / medical`` of one figure of one ablation condition."""
    vals = [ab[o][cond][key] for o in ("financial", "medical")]
    return " / ".join(f"{v['mean'] if isinstance(v, dict) else v:{fmt}}" for v in vals)


def facts_organisms() -> dict[str, str]:
    """Findings 1b and 2b: the organisms' directions and ablations (paired against base)."""
    s = load("organisms/summary.json")
    c, ab, vs = s["cosine_per_layer"], s["ablation"], s["ablation_against_base"]
    deep = range(12, len(c["financial vs medical"]))
    control = [v for k, vs_ in c.items() if k.startswith("control") for v in vs_[12:]]
    norms = [v for k in ("financial", "medical") for v in s["change_norm_over_base_norm"][k][11:]]
    layer = option(s["command"], "layer")
    every = f"own L{layer} direction, all layers, "
    shift = {k: ab[k]["shift_from_base"] for k in ("financial", "medical")}
    out = {
        "org_raw": span(v for v in c["financial vs medical"] if v is not None),
        "org_raw_base": span(v for k in ("financial", "medical") for v in c[f"{k} vs base"]),
        "org_change": span(c["change: (financial - base) vs (medical - base)"][x] for x in deep),
        "org_control": span(control),
        "org_control_max": f"{max(control):.2f}",
        "org_deep": f"{deep[0]}-{deep[-1]}",
        "org_norms": span([100 * v for v in norms], ".1f" if min(norms) < 0.1 else ".0f", "%"),
        "org_shift_fin": change(shift["financial"]),
        "org_shift_med": change(shift["medical"]),
        "org_ctrl": change(s["control_shift_from_base"]["good_medical"]),
        "org_layer": layer,
        "org_layers": layers_text(s["adapter_layers"]),
        "org_n_adapters": str(len(s["adapter_layers"])),
        "org_steps": option(s["command"], "steps"),
        "org_batch": option(s["command"], "batch-size"),
        "org_lr": f"{float(option(s['command'], 'lr')):.0e}".replace("e-0", "e-"),
        "org_n_dir": option(s["command"], "n-direction"),
        "org_n_held": option(s["command"], "n-held-out"),
        "org_minutes": f"{s['minutes_total']:.0f}",
    }
    zero, sink = f"{every}zero", f"{every}reference mean, sink kept"
    sink_each = "own direction, layer by layer, reference mean, sink kept"
    rand = "random unit direction, zero ({} control)"
    out |= {
        "org_all_zero": _both(vs, zero, "change_in_organism"),
        "org_all_zero_base": _both(vs, zero, "change_in_base"),
        "org_rand_offset": _both(vs, rand.format("offset-matched"), "change_in_organism"),
        "org_rand_norm": _both(vs, rand.format("norm-matched"), "change_in_organism"),
        "org_all_sink": _both(vs, sink, "change_in_organism"),
        "org_all_sink_base": _both(vs, sink, "change_in_base"),
        "org_all_sink_omb": _both(vs, sink, "organism_minus_base_change"),
        "org_all_sink_kl": _both(vs, sink, "kl_organism", ".2f"),
        "org_each_sink": _both(vs, sink_each, "change_in_organism"),
        "org_each_sink_base": _both(vs, sink_each, "change_in_base"),
    }
    return out


def facts_steering() -> dict[str, str]:
    """Finding 2: the layer x scale steering sweep."""
    s = load("steering_sweep/summary.json")
    cell = {(r["direction"], r["layer"], r["scale"]): r for r in s["rows"]}
    layers = sorted({r["layer"] for r in s["rows"]})
    scales = sorted({r["scale"] for r in s["rows"]})
    mid = [x for x in layers if 12 <= x <= 24]
    em4 = [cell["EM", x, 4.0] for x in mid]
    cost = {
        x: cell["EM", x, 4.0]["aligned_text_ce"] - cell["random", x, 4.0]["aligned_text_ce"]
        for x in mid
    }
    same = [x for x in mid if abs(cost[x]) < 0.05]
    more = [x for x in mid if cost[x] >= 0.05]
    top = max(s["rows"], key=lambda r: r["misalignment"] if r["direction"] == "EM" else -9)
    rising = [
        x
        for x in layers
        if all(
            cell["EM", x, a]["misalignment"] < cell["EM", x, b]["misalignment"]
            for a, b in itertools.pairwise(scales)
        )
    ]
    l12, r12 = cell["EM", 12, 4.0], cell["random", 12, 4.0]
    base = s["baseline"]
    return {
        "st_layers": str(len(layers)),
        "st_scales": str(len(scales)),
        "st_held": option(s["command"], "n-held-out"),
        "st_dir": option(s["command"], "n-direction"),
        "st_base": f"{base['misalignment']:+.2f} {ci(base['ci95'])}",
        "st_base_ce": f"{base['aligned_text_ce']:.2f}",
        "st_em4": span((r["misalignment"] for r in em4), "+.2f"),
        "st_mid": f"{mid[0]}-{mid[-1]}",
        "st_l12": f"{l12['misalignment']:+.2f} {ci(l12['ci95'])}",
        "st_rand4": span(cell["random", x, 4.0]["misalignment"] for x in mid),
        "st_same": layers_text(same),
        "st_ce12": f"{l12['aligned_text_ce']:.2f} vs {r12['aligned_text_ce']:.2f}",
        "st_more_layers": layers_text(more),
        "st_more": span((cost[x] for x in more), ".2f"),
        "st_top": f"{top['misalignment']:+.2f}",
        "st_ce8": span((cell["EM", x, 8.0]["aligned_text_ce"] for x in mid), ".1f"),
        "st_rising": "every layer" if rising == layers else f"layers {layers_text(rising)}",
        "st_rand_all": span(r["misalignment"] for r in s["rows"] if r["direction"] == "random"),
        "st_gap12": f"{l12['misalignment'] - r12['misalignment']:.2f}",
        "st_minutes": f"{s['minutes']:.0f}",
    }


def facts_phase_change() -> dict[str, str]:
    """Finding 3: the rank-1 LoRA's B trajectory and behaviour."""
    s = load("phase_change/summary.json")
    pc, gap, cfg = s["phase_change"], s["loss_gap_aligned_minus_misaligned"], s["config"]
    steps = sorted(gap, key=int)
    first, last = gap[steps[0]], gap[steps[-1]]
    half = gap[str(s["steps"] // 2)]
    narrow = s["eval"]["narrow_held_out"]
    return {
        "pc_estimate": f"step {pc['step']}" if pc["step"] is not None else pc["reason"],
        "pc_layer": s["adapter"].split(".")[2],
        "pc_kmax": str(max(pc["ks"])),
        "pc_ks": ", ".join(map(str, pc["ks"])),
        "pc_mean_cos": f"{pc['mean_local_cosine']:.2f}",
        "pc_pc1": f"{100 * s['pca_explained_variance'][0]:.0f}%",
        "pc_steps": str(s["steps"]),
        "pc_half": str(s["steps"] // 2),
        "pc_lr": f"{cfg['lr']:.0e}".replace("e-0", "e-"),
        "pc_rows": str(s["train_rows"]),
        "pc_batch": str(cfg["batch_size"]),
        "pc_alpha": f"{cfg['alpha']:.0f}",
        "pc_narrow": f"{narrow[0]:.2f} -> {narrow[-1]:.2f}",
        "pc_gap": f"{first:.3f} to {last:.3f}",
        "pc_gap_half": f"{100 * (half - first) / (last - first):.0f}%",
        "pc_minutes": f"{s['minutes_this_invocation']:.0f}",
    }


def facts_probes_and_judge() -> dict[str, str]:
    """Finding 4 (LoRA-scalar probes of the 9-adapter organisms) and the local judge's
    missing verdicts."""
    probes = load("lora_probes.json")
    rows = {(r["adapter"], r["unit"]): r for r in probes["rows"]}
    early = next(a for a, _ in rows if a.startswith("financial, step"))

    def auc(adapter: str) -> str:
        """Token / answer AUC of one adapter set."""
        return " / ".join(rows[adapter, u]["auc"].split(" ")[0] for u in ("token", "answer"))

    judge = load("em_rate_local_judge.json")["rows"]
    return {
        "lp_pairs": str(probes["meta"]["pairs"]),
        "lp_fin": auc("financial"),
        "lp_med": auc("medical"),
        "lp_control": auc("control: good medical"),
        "lp_early_step": early.removeprefix("financial, step "),
        "lp_early": auc(early),
        "lp_weighted": rows["financial", "token"]["adapters_weighted"],
        "lp_top": rows["financial", "token"]["largest_weights"],
        "judge_missing": str(sum(r["no_aligned_score"] + r["no_coherent_score"] for r in judge)),
        "judge_total": str(sum(2 * r["samples"] for r in judge)),
    }


def facts_elasticity() -> dict[str, str]:
    """Finding 5: resistance (inverse vs forward fine-tuning) and rebound."""
    s = load("elasticity/summary.json")
    t, base = s["resistance"]["table"], s["resistance"]["base_loss_on_probes"]
    inv = [r["inverse: theta_{k+1} on D_k"] for r in t]
    fwd = [r["forward: theta_k on D_{k+1}"] for r in t]
    gain_inv = [base[i] - inv[i] for i in range(len(t))]
    gain_fwd = [base[i + 1] - fwd[i] for i in range(len(t))]
    c = s["rebound"]["curves"]
    pos = sorted(c, key=int)
    n_max = s["rebound"]["negative_amounts"][-1]
    return {
        "el_raw": " / ".join(
            f"{a:.2f} vs {b:.2f} (k={r['k']})" for a, b, r in zip(inv, fwd, t, strict=True)
        ),
        "el_gain_inv": " / ".join(f"{g:.2f}" for g in gain_inv),
        "el_gain_fwd": " / ".join(f"{g:.2f}" for g in gain_fwd),
        "el_raw_gap": span((b - a for a, b in zip(inv, fwd, strict=True)), ".2f"),
        "el_base": " / ".join(f"{b:.2f}" for b in base),
        "el_net": " and ".join(
            f"{gi - gf:.2f} (k={r['k']})" for gi, gf, r in zip(gain_inv, gain_fwd, t, strict=True)
        ),
        "el_slice": option(s["command"], "slice"),
        "el_probe": option(s["command"], "probe"),
        "el_pos": " or ".join([", ".join(pos[:-1]), pos[-1]]),
        "el_pos_max": pos[-1],
        "el_n_max": str(n_max),
        "el_good_shift": f"{c[pos[-1]][0]['medical'] - c['0'][0]['medical']:+.2f}",
        "el_rebound_after": f"{c[pos[-1]][-1]['medical'] - c[pos[-1]][0]['medical']:+.2f}",
        "el_undid": f"{c[pos[-1]][-1]['medical'] - c[pos[-1]][0]['medical']:.2f}",
        "el_rebound_none": f"{c['0'][-1]['medical'] - c['0'][0]['medical']:+.2f}",
        "el_minutes": f"{s['minutes_total']:.0f}",
        "el_rank": str(s["config"]["rank"]),
        "el_lr": f"{s['config']['lr']:.0e}".replace("e-0", "e-"),
        "el_batch": str(s["config"]["batch_size"]),
    }


def facts_circuits() -> dict[str, str]:
    """Finding 6: the components writing the EM and the refusal directions."""
    d = load("circuits.json")
    ab = {r["ablated"]: r for r in d["ablation"]}
    k = d["meta"]["k"]
    rand = [r for name, r in ab.items() if name.startswith("random")]
    em_top, ref_top = ab[f"top-{k} EM writers"], ab[f"top-{k} refusal writers"]
    return {
        "ci_k": str(k),
        "ci_layer": str(d["meta"]["layer"]),
        "ci_n": str(d["meta"]["n"]),
        "ci_shared": str(len(d["shared"])),
        "ci_jaccard": f"{d['jaccard']:.2f}",
        "ci_null": f"{d['jaccard_null_q95']:.2f}",
        "ci_spearman": f"{d['spearman_all_components']:.2f}",
        "ci_ref_kept": f"{100 * ref_top['refusal separation kept']:.0f}%",
        "ci_ref_em_kept": f"{100 * ref_top['EM separation kept']:.0f}%",
        "ci_rand_ref_kept": pct(r["refusal separation kept"] for r in rand),
        "ci_rand_em_kept": pct(r["EM separation kept"] for r in rand),
        "ci_ref_removed": f"{100 * (1 - ref_top['refusal separation kept']):.0f}%",
        "ci_ref_em_removed": f"{100 * (1 - ref_top['EM separation kept']):.0f}%",
        "ci_rand_ref_removed": pct(1 - r["refusal separation kept"] for r in rand),
        "ci_rand_em_removed": pct(1 - r["EM separation kept"] for r in rand),
        "ci_em_flip": f"{em_top['refusal separation kept']:.1f}x",
        "ci_n_rand": str(len(rand)),
        "ci_minutes": f"{d['meta']['seconds'] / 60:.0f}",
    }


FACTS: tuple[Callable[[], dict[str, str]], ...] = (
    facts_em_vs_refusal,
    facts_organisms,
    facts_steering,
    facts_phase_change,
    facts_probes_and_judge,
    facts_elasticity,
    facts_circuits,
    *_facts_ground_truth.FACTS,
)


def results_page() -> str:
    """``docs/results/README.md``: the template with every ``${name}`` filled from the JSON."""
    facts: dict[str, str] = {}
    for f in FACTS:
        facts |= f()
    return Template(TEMPLATE.read_text()).substitute(facts)


FINDINGS = ("organisms", "steering_sweep", "phase_change", "elasticity")


def finding_page(name: str) -> str:
    """``docs/results/<name>/README.md`` re-made by the script's ``readme`` from its summary.json.

    Raises:
        KeyError: the summary was written by an older version of the script (re-run it).
    """
    sys.path.insert(0, str(ROOT / "analyses"))
    script = importlib.import_module(name)  # the scripts import torch: only when asked
    s = load(f"{name}/summary.json")
    if name == "organisms":
        return script.readme(s, list(range(len(s["cosine_per_layer"]["financial vs base"]))))
    if name == "elasticity":
        return script.readme(s, "SmolLM2-135M-Instruct" if s["model"] == "smollm2" else s["model"])
    return script.readme(s)


def finding_pages() -> tuple[dict[Path, str], list[str]]:
    """Each staged script's README as rendered, and the findings whose summary the script can
    no longer read (made by an older version of it)."""
    pages, stale = {}, []
    for name in FINDINGS:
        try:
            pages[RESULTS / name / "README.md"] = finding_page(name)
        except KeyError as e:
            stale.append(f"{name}/summary.json predates analyses/{name}.py (no key {e}): re-run it")
    return pages, stale


def beside_problems() -> list[str]:
    """What disagrees between each ``docs/results/<name>.md`` and its ``<name>.json``."""
    from emlens.report import markdown_table

    problems = []
    for name, key in BESIDE_TABLE.items():
        data, page = load(f"{name}.json"), (RESULTS / f"{name}.md").read_text()
        first = page.splitlines()[0]
        made = f"Made by `{data['meta']['command']}` in {data['meta']['seconds']} s"
        if not first.startswith(made):
            problems.append(f"{name}.md: first line does not start with {made!r}")
        if "\n".join(markdown_table(data[key])) not in page:
            problems.append(f"{name}.md: its table is not markdown_table({name}.json[{key!r}])")
    return problems


BENCHMARKS = ROOT / "docs/benchmarks.md"
STUDY_BEGIN = "<!-- study times: rendered by analyses/render_results.py from study_times.json -->"
STUDY_END = "<!-- end of study times -->"


def study_block(data: dict | None) -> str:
    """The minutes of the last ``make study`` per analysis, with its costliest stages."""
    if data is None:
        return "The whole study has not been timed (no `docs/results/study_times.json`)."
    minutes = data["minutes"]
    total = sum(minutes.values())
    rows = []
    for name, m in sorted(minutes.items(), key=lambda kv: -kv[1]):
        stages = sorted(data["stage_seconds"].get(name, {}).items(), key=lambda kv: -kv[1])
        rows.append(
            {
                "analysis": name,
                "minutes": f"{m:.1f}",
                "share": f"{100 * m / total:.0f}%",
                "costliest stages (s)": ", ".join(f"{k} {v:.0f}" for k, v in stages[:3]) or "-",
            }
        )
    from emlens.report import markdown_table

    given = " (a job left running alone gets the idle lanes' threads)"
    given = given if data.get("idle_threads_given") else ""
    return "\n".join(
        [
            f"Last timed {data['date']} at commit `{data['commit']}` on {data['cpus']} CPU cores: "
            f"the {len(minutes)} analyses took **{data['wall_minutes']:.1f} minutes** of wall "
            f"clock, {data['lanes']} at a time (target <= 60); their own minutes, each process "
            f"on its share of the cores beside the others{given}, add up to {total:.1f}. "
            "Minutes are "
            "wall clock per analysis process (model loading and training included); the stages "
            "are the saved steps' compute seconds (training is not a stage).",
            "",
            *markdown_table(rows),
        ]
    )


def benchmarks_page() -> str:
    """``docs/benchmarks.md`` with its study-times block re-rendered from study_times.json."""
    text = BENCHMARKS.read_text()
    head, rest = text.split(STUDY_BEGIN)
    tail = rest.split(STUDY_END)[1]
    path = RESULTS / "study_times.json"
    data = json.loads(path.read_text()) if path.exists() else None
    return f"{head}{STUDY_BEGIN}\n{study_block(data)}\n{STUDY_END}{tail}"


def main(argv: list[str] | None = None) -> int:
    """Rewrite the rendered pages, or with ``--check`` report those that differ."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 on a difference")
    args = p.parse_args(argv)
    findings, stale = finding_pages()
    pages = {RESULTS / "README.md": results_page(), BENCHMARKS: benchmarks_page()}
    pages |= findings
    differ = [path for path, text in pages.items() if path.read_text() != text]
    problems = [f"{p.relative_to(ROOT)} differs from its rendering" for p in differ]
    problems += stale + beside_problems()
    if not args.check:
        for path in differ:
            path.write_text(pages[path])
            print(f"rendered {path.relative_to(ROOT)}")
        problems = stale + beside_problems()
    for line in problems:
        print(line, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
