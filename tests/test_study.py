"""``analyses/study.py`` (make study): its quick options parse in every script, and its
``study_minutes`` line reads the last times file. Nothing here runs an analysis."""

from __future__ import annotations

import importlib
import json
import re
import sys
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
