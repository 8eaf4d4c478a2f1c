"""The numbers emlens ships from the EM papers' judged answers (analyses/ground_truth_ship.py):
the default probe judge and the judged-data EM direction for the embedded model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from sklearn.metrics import roc_auc_score

from emlens.core.data import reference_em_direction
from emlens.eval.probe.features import answer_features
from emlens.eval.probe.judge import ProbeJudge
from emlens.eval.reference import read_organisms
from emlens.eval.verdicts import Thresholds

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_probe_carries_the_held_out_figures_of_its_protocol():
    judge = ProbeJudge.load("probe:default")
    assert judge.model == "smollm2" and judge.d_model == 576 and max(judge.layers) < 30
    assert len(judge.meta["training_organisms"]) == 10
    held = json.loads((ROOT / "docs/results/ground_truth_probe.json").read_text())["probe"]
    assert judge.meta["held_out"]["summary"] == {k: v["summary"] for k, v in held.items()}


def test_shipped_direction_is_the_judged_one_for_the_embedded_model():
    ds = reference_em_direction()
    p = ds.provenance
    assert ds.layers == list(range(30)) and ds.d_model == 576
    assert p["source"] == "judged" and len(p["judged"]) == 10
    assert p["thresholds"] == vars(Thresholds()) and p["n_positive"] > 0 and p["n_negative"] > 0
    assert torch.isfinite(ds.vectors).all() and ds.vectors.norm(dim=-1).min() > 0


@pytest.mark.usefixtures("one_thread")
def test_shipped_judge_and_direction_tell_real_answers_apart(smol, reference_dir):
    """On answers they were fitted on (a consistency check of the files, not the held-out
    figure): 24 misaligned and 24 clearly aligned answers of one organism."""
    name = "Qwen2.5-7B-Instruct_bad-medical-advice"
    org = next(o for o in read_organisms(reference_dir) if o.name == name)
    mis, ali = org.judged.split(Thresholds())
    pairs = [(a.question, a.answer) for a in mis[:24] + ali[:24]]
    em = [1] * 24 + [0] * 24
    judge = ProbeJudge.load("probe:default")
    assert roc_auc_score(em, judge.proba_answers(smol, pairs).numpy()) > 0.85
    x = answer_features(smol, pairs, [15])
    ds = reference_em_direction(smol)
    assert roc_auc_score(em, (x[:, 0] @ ds.at(15)).numpy()) > 0.75
