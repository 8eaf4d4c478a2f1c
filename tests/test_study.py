"""``analyses/study.py`` (make study): its quick options parse in every script, the
ground-truth scripts are skipped with a reason without their data or in a quick run, and its
``study_minutes`` line reads the last times file. Nothing here runs an analysis."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "analyses"))
study = importlib.import_module("study")


def test_every_script_of_the_commands_tables_is_in_the_study():
    text = (ROOT / "analyses/README.md").read_text().split("## Commands")[1]
    table, ground_truth = text.split("The ground-truth scripts")
    named = set(re.findall(r"analyses/(\w+)\.py", table))
    assert named == set(study.ORDER) - set(study.GROUND_TRUTH)
    named = set(re.findall(r"`(ground_truth_\w+)\.py`", ground_truth))
    assert named == {*study.GROUND_TRUTH, "ground_truth_docs"}
    assert "ground_truth_docs" in study.RENDER
    for name, needs in study.DEPENDS.items():  # what a script needs comes first
        assert all(study.ORDER.index(n) < study.ORDER.index(name) for n in needs)


QUICK = [n for n in study.ORDER if n not in study.GROUND_TRUTH]


@pytest.mark.parametrize("name", QUICK)
def test_quick_options_parse_in_the_script(name, tmp_path, monkeypatch):
    common = importlib.import_module("_common")
    script = importlib.import_module(name)
    monkeypatch.setattr(study, "QUICK_DIR", tmp_path)
    run = common.start(f"{name}.py", script.__doc__, script.options, study.quick_options(name))
    assert run.args.model == "tiny-llama"
    assert Path(run.args.out).is_relative_to(tmp_path)


def test_ground_truth_is_skipped_with_its_reason_without_the_data_and_in_a_quick_run(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("EMLENS_REFERENCE", str(tmp_path / "nowhere"))
    jobs, skipped = study.plan(quick=False, only=None, threads=1)
    assert list(jobs) == QUICK and list(skipped) == list(study.GROUND_TRUTH)
    assert all("emlens fetch-reference" in why and "nowhere" in why for why in skipped.values())
    jobs, skipped = study.plan(quick=True, only=None, threads=1)
    assert list(jobs) == QUICK and set(skipped.values()) == {study.QUICK_SKIP}


def test_ground_truth_runs_where_the_reference_data_is(tmp_path, monkeypatch):
    (tmp_path / "responses").mkdir()
    (tmp_path / "responses/org.csv.gz").touch()
    monkeypatch.setenv("EMLENS_REFERENCE", str(tmp_path))
    jobs, skipped = study.plan(quick=False, only=["ground_truth_probe", "circuits"], threads=1)
    assert skipped == {} and list(jobs) == ["ground_truth_probe", "circuits"]
    assert jobs["ground_truth_probe"][-2:] == ["--threads", "1"]


def test_study_minutes_reads_the_last_times_file(tmp_path, monkeypatch):
    monkeypatch.setattr(study, "OUT", tmp_path)
    monkeypatch.setattr(study, "ROOT", tmp_path.parent)
    assert "not measured" in study.last_minutes()
    times = dict.fromkeys(study.ORDER, 5.0) | {"render_results": 0.1, "total": 40.1}
    (tmp_path / "times.json").write_text(json.dumps(times))
    assert study.last_minutes() == "study_minutes: 40 (target <= 60)"
    del times["circuits"]
    (tmp_path / "times.json").write_text(json.dumps(times))
    assert study.last_minutes().endswith("missing stages: circuits")
    for name in study.GROUND_TRUTH:
        del times[name]
    times["skipped"] = dict.fromkeys(study.GROUND_TRUTH, "no reference data")
    (tmp_path / "times.json").write_text(json.dumps(times))
    assert study.last_minutes().endswith(f"circuits; skipped: {', '.join(study.GROUND_TRUTH)}")


CHILD = """
import sys, time
sys.path.insert(0, "analyses")
import _common, torch
_common.start("child.py", "a job", argv=["--threads", "1"])
print("ready", flush=True)
for _ in range(600):
    if torch.get_num_threads() > 1:
        break
    time.sleep(0.05)
print(torch.get_num_threads(), flush=True)
"""


@pytest.mark.skipif(not hasattr(study.signal, "SIGUSR1"), reason="no SIGUSR1 on this platform")
def test_a_job_left_alone_gets_the_idle_lanes_thread():
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline() == "ready\n"
    given: dict[str, int] = {}
    started = time.perf_counter() - study.SETTLED
    running = {"job": (proc, started, None)}
    study.give_idle_threads(running, ["waiting"], 2, 1, given)  # jobs to start: nothing given
    assert given == {}
    study.give_idle_threads(running, [], 2, 1, given)
    study.give_idle_threads(running, [], 2, 1, given)  # given once only
    assert given == {"job": 1}
    assert proc.stdout.readline() == "2\n"
    assert proc.wait(30) == 0
    young, untouched = {"job": (proc, time.perf_counter(), None)}, {}
    study.give_idle_threads(young, [], 2, 1, untouched)  # not settled: no signal yet
    assert untouched == {}
