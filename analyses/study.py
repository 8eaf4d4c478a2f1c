"""The whole study in one command: every analysis, then the results pages.

    .venv/bin/python analyses/study.py            # make study: every finding, then render
    .venv/bin/python analyses/study.py --quick    # smoke options, tiny model, out/study/quick
    .venv/bin/python analyses/study.py --minutes  # the last run's study_minutes (make bench)

Each analysis runs as its own process (``python analyses/<name>.py``), ``--lanes`` of them at a
time (default 2, each with its share of the CPU cores as torch threads: on 2 cores, two
one-thread processes get more done than one two-thread process), each starting when what it
needs has finished (``organisms`` before ``lora_probes``, which probes its organisms; the
ground-truth features before the scripts that read them, the probe's held-out figures before
the shipped judge, the shipped judge before the steering it judges: `DEPENDS`); once
nothing is left to start, the jobs still running share the idle lanes' threads (SIGUSR1, which
``_common.start`` handles). The output of each goes to ``out/study/logs/<name>.log``. What
exists is reused, not recomputed: each script loads its finished stages from ``<out>/stages/``
and the organisms it already trained in ``out/``. The minutes of every analysis go to
``out/study/times.json`` (``out/study/quick/times.json`` with ``--quick``) as each finishes, so
an interrupted study still says where the time went; ``total`` is the wall clock of the whole
run. The full run writes ``docs/results/study_times.json`` (rendered into docs/benchmarks.md)
and ends with ``analyses/render_results.py`` and ``analyses/ground_truth_docs.py``; the quick
one writes outside ``docs/results`` and renders nothing.

The ground-truth scripts (`GROUND_TRUTH`) read the EM papers' judged answers, which are not in
the repository (``analyses/_reference.py`` says where they are looked for): without them the
study prints that it skipped those scripts and why, and runs the rest. ``--quick`` skips them
too: they have no smoke options (their layers and the 4,000 answers are SmolLM2's and the
papers'; a tiny model has neither).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _reference import reference_missing

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "out/study"
# The longest first, so that the lanes finish close together; lora_probes as soon as the
# organisms it probes exist (last in the 2026-12-02 run, it ran 4 minutes alone at the end);
# the ground-truth chain (features, probe, ship, steering: about 95 minutes on one thread from
# nothing) starts first, each step as soon as the one before is done.
ORDER = (
    "ground_truth_features",
    "organisms",
    "ground_truth_judge",
    "ground_truth_probe",
    "ground_truth_ship",
    "ground_truth_steering",
    "elasticity",
    "ground_truth_convergence",
    "steering_sweep",
    "lora_probes",
    "phase_change",
    "circuits",
    "em_rate_local_judge",
    "coherence_temperature",
    "steering_em_rate",
    "direction_methods",
    "em_vs_refusal",
)
GROUND_TRUTH = tuple(name for name in ORDER if name.startswith("ground_truth_"))
# After the analyses: the pages rendered from their JSON (no model, no reference data).
RENDER = ("render_results", "ground_truth_docs")
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
        "coherence_temperature": [
            *"--samples 1 --temperatures 0.5 1.0 --max-new-tokens 4 --judge local".split()
        ],
        "steering_em_rate": [
            *"--layers 1 --scales 2 --random 2 --n 1 --n-random 1 --n-baseline 1".split(),
            *"--max-new-tokens 4 --judge local".split(),
        ],
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


DEPENDS = {
    "lora_probes": ("organisms",),  # probes the organisms that organisms.py trains
    # they read the features it caches (two writing one cache file at once would clash)
    "ground_truth_convergence": ("ground_truth_features",),
    "ground_truth_probe": ("ground_truth_features",),
    "ground_truth_judge": ("ground_truth_features",),
    # stamps the probe's held-out figures and the judge's rate margin
    "ground_truth_ship": ("ground_truth_probe", "ground_truth_judge"),
    "ground_truth_steering": ("ground_truth_ship",),  # judges with the shipped probe
    "coherence_temperature": ("ground_truth_ship",),  # so does this one
    "steering_em_rate": ("ground_truth_ship",),  # and this one, with the shipped direction
}
QUICK_SKIP = (
    "no smoke options: the ground-truth scripts read the papers' 4,000 judged answers through "
    "SmolLM2 at its own layers"
)


def skip_reason(name: str, quick: bool) -> str | None:
    """Why the study leaves ``name`` out (a ground-truth script in a quick run or without the
    reference data), or None when it runs."""
    if name not in GROUND_TRUTH:
        return None
    return QUICK_SKIP if quick else reference_missing()


SETTLED = 60.0  # seconds: a job has installed its SIGUSR1 handler (_common.start) by then


def save_times(times: dict[str, float], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(times, indent=1) + "\n")


def give_idle_threads(
    running: dict, pending: list[str], lanes: int, threads: int, given: dict[str, int]
) -> None:
    """Once nothing is left to start, the jobs still running share the threads of the lanes
    that went idle: one SIGUSR1 per extra thread (``given`` counts what each has had)."""
    if pending or not running or not hasattr(signal, "SIGUSR1"):
        return
    share = lanes * threads // len(running) - threads
    for name, (proc, t0, _) in running.items():
        if time.perf_counter() - t0 < SETTLED:
            continue  # still importing: the signal would kill it
        while given.get(name, 0) < share:
            proc.send_signal(signal.SIGUSR1)
            given[name] = given.get(name, 0) + 1
            print(f"study: {name} now has {threads + given[name]} threads", flush=True)


def run_lanes(
    jobs: dict[str, list[str]], lanes: int, times: dict, path: Path, threads: int = 1
) -> None:
    """Run the ``jobs`` (name -> command), ``lanes`` at a time, each when what it depends on
    has finished, each with ``threads`` torch threads until lanes go idle at the end
    (`give_idle_threads`); each job's output goes to ``<times folder>/logs/<name>.log``. Adds
    each job's minutes to ``times`` and saves them as each finishes."""
    logs = path.parent / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    pending, running, given = list(jobs), {}, {}
    while pending or running:
        for name in list(pending):
            if len(running) >= lanes:
                break
            if any(d in pending or d in running for d in DEPENDS.get(name, ())):
                continue
            pending.remove(name)
            log = (logs / f"{name}.log").open("w")
            print(f"study: {name}: {' '.join(jobs[name])} > {log.name}", flush=True)
            proc = subprocess.Popen(jobs[name], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
            running[name] = (proc, time.perf_counter(), log)
        time.sleep(1)
        give_idle_threads(running, pending, lanes, threads, given)
        for name, (proc, t0, log) in list(running.items()):
            if proc.poll() is None:
                continue
            log.close()
            del running[name]
            if proc.returncode != 0:
                for other, _, _ in running.values():
                    other.terminate()
                raise SystemExit(f"study: {name} failed (exit {proc.returncode}); see {log.name}")
            times[name] = round((time.perf_counter() - t0) / 60, 2)
            save_times(times, path)
            print(f"study: {name} took {times[name]:.1f} min", flush=True)


def plan(
    quick: bool, only: list[str] | None, threads: int
) -> tuple[dict[str, list[str]], dict[str, str]]:
    """The analyses to run (name -> command) in `ORDER`, ``only`` those named, and those
    left out with the reason (`skip_reason`)."""
    jobs, skipped = {}, {}
    for name in ORDER:
        if only is not None and name not in only:
            continue
        reason = skip_reason(name, quick)
        if reason is not None:
            skipped[name] = reason
            continue
        options = quick_options(name) if quick else []
        script = str(ROOT / f"analyses/{name}.py")
        jobs[name] = [sys.executable, script, *options, "--threads", str(threads)]
    return jobs, skipped


def study(quick: bool, only: list[str] | None = None, lanes: int = 2) -> dict[str, Any]:
    """Run the analyses (``only`` those named), ``lanes`` processes at a time with the cores
    shared out among them, then render; return the minutes (``total``: wall clock) and, under
    ``skipped``, the analyses left out and why."""
    path = (QUICK_DIR if quick else OUT) / "times.json"
    # a partial run (--only) keeps the other stages' last minutes; a whole run starts afresh
    times: dict[str, Any] = json.loads(path.read_text()) if only and path.exists() else {}
    threads = max(1, (os.cpu_count() or 1) // lanes)
    jobs, skipped = plan(quick, only, threads)
    times.pop("skipped", None)
    if skipped:
        times["skipped"] = skipped
    for name, reason in skipped.items():
        print(f"study: {name} skipped: {reason}", flush=True)
    t0 = time.perf_counter()
    run_lanes(jobs, lanes, times, path, threads)
    if not quick:
        record(times, lanes, round((time.perf_counter() - t0) / 60, 2))
        render = {name: [sys.executable, str(ROOT / f"analyses/{name}.py")] for name in RENDER}
        run_lanes(render, 1, times, path)
    # the whole study's minutes: wall clock; after a partial run, the sum (an upper bound)
    wall = round((time.perf_counter() - t0) / 60, 2)
    times["total"] = wall if only is None else round(sum(times[n] for n in ORDER if n in times), 2)
    save_times(times, path)
    return times


def stage_seconds(name: str) -> dict[str, float]:
    """The compute seconds of each saved stage of analysis ``name`` (its stages/seconds.json)."""
    path = ROOT / "docs/results" / name / "stages/seconds.json"
    return json.loads(path.read_text()) if path.exists() else {}


def record(times: dict[str, Any], lanes: int, wall: float) -> None:
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
                "lanes": lanes,
                "idle_threads_given": hasattr(signal, "SIGUSR1"),  # give_idle_threads
                "wall_minutes": wall,
                "minutes": {n: times[n] for n in ORDER if n in times},
                "stage_seconds": {n: stage_seconds(n) for n in ORDER if n in times},
                **({"skipped": times["skipped"]} if times.get("skipped") else {}),
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
    skipped = times.get("skipped", {})
    missing = [n for n in ORDER if n not in times and n not in skipped]
    note = f"; missing stages: {', '.join(missing)}" if missing else ""
    note += f"; skipped: {', '.join(skipped)}" if skipped else ""
    return f"study_minutes: {times.get('total', 0):.0f} (target <= 60){note}"


def main(argv: list[str] | None = None) -> int:
    """Parse the options, then run the study or print the last one's minutes."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny model, smoke options, no rendering")
    p.add_argument("--only", nargs="+", choices=ORDER, help="run only these analyses")
    p.add_argument("--minutes", action="store_true", help="print the last run's study_minutes")
    p.add_argument("--lanes", type=int, default=2, help="analyses run at once (default 2)")
    args = p.parse_args(argv)
    if args.minutes:
        print(last_minutes(args.quick))
        return 0
    if args.lanes < 1:
        raise SystemExit("--lanes must be >= 1")
    times = study(args.quick, args.only, args.lanes)
    print(json.dumps(times, indent=1))
    print(last_minutes(args.quick))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
