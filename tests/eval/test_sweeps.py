import pytest
import torch

from emlens.core import data
from emlens.core.direction_set import DirectionSet
from emlens.core.directions import em_direction_from_pairs, refusal_direction
from emlens.eval.stats import Estimate
from emlens.eval.sweeps import (
    ablation_sweep,
    contrastive_metric,
    heatmap,
    kl_metric,
    select_direction,
    steering_sweep,
)

TEXTS = ["The weather today is mild and sunny.", "Please list three fruits."]


def test_small_steering_sweep_on_the_embedded_model(smol):
    pairs = data.general_questions()
    em = em_direction_from_pairs(smol, pairs[:32], layers=[8, 16], progress=False)
    metrics = {"contrastive": contrastive_metric(smol, pairs[64:70]), "kl": kl_metric(smol, TEXTS)}
    rows = steering_sweep(em, [8, 16], [0.0, 4.0], metrics, progress=False)
    assert len(rows) == 4 and {"layer", "scale", "contrastive", "kl"} <= set(rows[0])
    by = {(r["layer"], r["scale"]): r for r in rows}
    for layer in (8, 16):
        assert by[(layer, 4.0)]["contrastive"] > by[(layer, 0.0)]["contrastive"]
        assert by[(layer, 4.0)]["kl"] > by[(layer, 0.0)]["kl"] == pytest.approx(0, abs=1e-6)
    fig = heatmap(rows, "contrastive")
    assert fig.data[0].z is not None


def test_selection_under_a_kl_bound(tiny):
    model = tiny("llama")
    d = refusal_direction(
        model, ["Hack a bank.", "Steal a car."], ["Bake bread.", "Plant a tree."], progress=False
    )
    kl = kl_metric(model, TEXTS)
    rows = ablation_sweep(d, [0, 1], {"kl": kl}, progress=False)
    assert rows[0]["layer"] is None and rows[0]["kl"] == pytest.approx(0, abs=1e-6)
    sel = select_direction(model, d, effect=kl, kl=kl, kl_max=1e9, skip_last=0.34, progress=False)
    assert sel.layer in (0, 1)  # layer 2 is in the skipped last third
    assert sel.effect == max(c["effect"] for c in sel.candidates)
    assert sel.directions.provenance["selection"]["layer"] == sel.layer
    with pytest.raises(ValueError, match="KL bound"):
        select_direction(model, d, effect=kl, kl=kl, kl_max=-1, progress=False)


def test_sweeps_keep_each_metric_value_as_it_comes():
    d = DirectionSet(torch.ones(2, 8), [0, 1])

    def estimate(ivs):  # a metric returning an Estimate, not a float
        return Estimate(float(len(ivs)), (0.0, 1.0), 1)

    metrics = {"n": len, "estimate": estimate}
    rows = steering_sweep(d, [0, 1], [0.0, 2.0], metrics, progress=False)
    assert [(r["layer"], r["scale"], r["n"]) for r in rows] == [
        (0, 0.0, 0),
        (0, 2.0, 1),
        (1, 0.0, 0),
        (1, 2.0, 1),
    ]
    assert rows[1]["estimate"] == Estimate(1.0, (0.0, 1.0), 1)
    rows = ablation_sweep(d, [1], metrics, progress=False)
    assert [r["estimate"].mean for r in rows] == [0.0, 1.0] and rows[0]["layer"] is None


def test_a_sweep_with_a_row_log_resumes_without_measuring_again(tmp_path):
    d = DirectionSet(torch.ones(2, 8), [0, 1])
    calls = []

    def estimate(ivs):
        calls.append(len(ivs))
        if len(calls) == 3:
            raise RuntimeError("killed")
        return Estimate(float(len(ivs)), (0.0, 1.0), 1)

    log = tmp_path / "sweep.jsonl"
    with pytest.raises(RuntimeError, match="killed"):
        steering_sweep(d, [0, 1], [0.0, 2.0], {"e": estimate}, progress=False, log=log)
    rows = steering_sweep(d, [0, 1], [0.0, 2.0], {"e": estimate}, progress=False, log=log)
    assert len(calls) == 5  # cells 1-2 read back; cell 3 failed, then 3 and 4 measured
    assert [(r["layer"], r["scale"], r["e"].mean) for r in rows] == [
        (0, 0.0, 0.0),
        (0, 2.0, 1.0),
        (1, 0.0, 0.0),
        (1, 2.0, 1.0),
    ]
    rows = ablation_sweep(d, [0, 1], {"e": estimate}, progress=False, log=tmp_path / "a.jsonl")
    again = ablation_sweep(d, [0, 1], {"e": estimate}, progress=False, log=tmp_path / "a.jsonl")
    assert again == rows and len(calls) == 8
