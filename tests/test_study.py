"""``analyses/study.py`` (make study): its quick options parse in every script, and its
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


def test_every_script_of_the_commands_table_is_in_the_study():
    text = (ROOT / "analyses/README.md").read_text().split("## Commands")[1]
    table = text.split("The ground-truth scripts")[0]
    named = set(re.findall(r"analyses/(\w+)\.py", table))
    assert named == set(study.ORDER)
    assert study.ORDER.index("organisms") < study.ORDER.index("lora_probes")


@pytest.mark.parametrize("name", study.ORDER)
def test_quick_options_parse_in_the_script(name, tmp_path, monkeypatch):
    common = importlib.import_module("_common")
    script = importlib.import_module(name)
    monkeypatch.setattr(study, "QUICK_DIR", tmp_path)
    run = common.start(f"{name}.py", script.__doc__, script.options, study.quick_options(name))
    assert run.args.model == "tiny-llama"
    assert Path(run.args.out).is_relative_to(tmp_path)


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
