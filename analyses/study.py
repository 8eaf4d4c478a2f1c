"""The whole study in one command: every analysis in sequence, then the results pages.

    .venv/bin/python analyses/study.py            # make study: every finding, then render
    .venv/bin/python analyses/study.py --quick    # smoke options, tiny model, out/study/quick
    .venv/bin/python analyses/study.py --minutes  # the last run's study_minutes (make bench)

Each analysis runs as its own process (``python analyses/<name>.py``), in the order the data
needs (``organisms`` before ``lora_probes``, which probes its organisms). What exists is
reused, not recomputed: each script loads its finished stages from ``<out>/stages/`` and the
organisms it already trained in ``out/``. The time of every stage (an analysis, then the
rendering) goes to ``out/study/times.json`` (``out/study/quick/times.json`` with ``--quick``),
written after each stage, so an interrupted study still says where the time went. The full run
ends with ``analyses/render_results.py``; the quick one writes outside ``docs/results`` and
renders nothing.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "out/study"
ORDER = (
    "em_vs_refusal",
    "organisms",
    "steering_sweep",
    "em_rate_local_judge",
    "phase_change",
    "lora_probes",
    "elasticity",
    "circuits",
    "direction_methods",
)
QUICK_DIR = OUT / "quick"
RECORD = ROOT / "docs/results/study_times.json"  # what docs/benchmarks.md is rendered from
TINY = ("--model", "tiny-llama")


def quick_options(name: str) -> list[str]:
    """The smoke-run options of each script's docstring (analyses/README.md), out of the repo."""
    out = QUICK_DIR / name
    options = {
        "em_vs_refusal": [],
        "organisms": [
            *"--steps 2 --adapter-layers 1 --layer 1 --n-direction 8 --n-held-out 8".split(),
            *("--runs", str(out / "runs")),
        ],
        "steering_sweep": "--layers 1 --scales 4 --n-direction 8 --n-held-out 4".split(),
        "em_rate_local_judge": "--layer 1 --questions 1 --samples 1 --max-new-tokens 4".split(),
        "phase_change": [
            *"--steps 6 --held-out 4 --general 4 --eval-every 3".split(),
            *("--run", str(QUICK_DIR / "phase_change_run")),
        ],
        "lora_probes": ["--runs", str(QUICK_DIR / "organisms/runs")],
        "elasticity": "--slice 8 --probe 4 --positive 0 8 --negative 0 4 --held-out 4".split(),
        "circuits": "--layer 1 --k 2 --n 4".split(),
        "direction_methods": "--layers 0 1 --steer-layers 1".split(),
    }[name]
    return [*TINY, *options, "--out", str(out)]


def run_stage(name: str, command: list[str], times: dict[str, float], path: Path) -> None:
    """Run ``command``, add its minutes to ``times`` under ``name``, and save ``times``."""
    print(f"study: {name}: {' '.join(command)}", flush=True)
    t0 = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True)
    times[name] = round((time.perf_counter() - t0) / 60, 2)
    times["total"] = round(sum(v for k, v in times.items() if k != "total"), 2)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(times, indent=1) + "\n")
    print(f"study: {name} took {times[name]:.1f} min", flush=True)


def study(quick: bool, only: list[str] | None = None) -> dict[str, float]:
    """Run the analyses (``only`` those named, in study order) and render; return the minutes."""
    path = (QUICK_DIR if quick else OUT) / "times.json"
    # a partial run (--only) keeps the other stages' last minutes; a whole run starts afresh
    times: dict[str, float] = json.loads(path.read_text()) if only and path.exists() else {}
    for name in [n for n in ORDER if only is None or n in only]:
        command = [sys.executable, str(ROOT / f"analyses/{name}.py")]
        run_stage(name, command + (quick_options(name) if quick else []), times, path)
    if not quick:
        record(times)
        run_stage(
            "render_results",
            [sys.executable, str(ROOT / "analyses/render_results.py")],
            times,
            path,
        )
    return times


def stage_seconds(name: str) -> dict[str, float]:
    """The compute seconds of each saved stage of analysis ``name`` (its stages/seconds.json)."""
    path = ROOT / "docs/results" / name / "stages/seconds.json"
    return json.loads(path.read_text()) if path.exists() else {}


def record(times: dict[str, float]) -> None:
    """Write ``docs/results/study_times.json``: minutes per analysis (wall clock, model loading
    and training included) and each analysis's stage seconds, for docs/benchmarks.md."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    RECORD.write_text(
        json.dumps(
            {
                "date": datetime.date.today().isoformat(),
                "commit": commit,
                "cpus": os.cpu_count(),
                "minutes": {n: times[n] for n in ORDER if n in times},
                "stage_seconds": {n: stage_seconds(n) for n in ORDER if n in times},
            },
            indent=1,
        )
        + "\n"
    )


def last_minutes(quick: bool = False) -> str:
    """``study_minutes: N (target <= 60)`` from the last times file, or why there is none."""
    path = (QUICK_DIR if quick else OUT) / "times.json"
    if not path.exists():
        return f"study_minutes: not measured (no {path.relative_to(ROOT)}; run make study)"
    times = json.loads(path.read_text())
    missing = [n for n in ORDER if n not in times]
    note = f"; missing stages: {', '.join(missing)}" if missing else ""
    return f"study_minutes: {times.get('total', 0):.0f} (target <= 60){note}"


def main(argv: list[str] | None = None) -> int:
    """Parse the options, then run the study or print the last one's minutes."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny model, smoke options, no rendering")
    p.add_argument("--only", nargs="+", choices=ORDER, help="run only these analyses")
    p.add_argument("--minutes", action="store_true", help="print the last run's study_minutes")
    args = p.parse_args(argv)
    if args.minutes:
        print(last_minutes(args.quick))
        return 0
    times = study(args.quick, args.only)
    print(json.dumps(times, indent=1))
    print(last_minutes(args.quick))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
