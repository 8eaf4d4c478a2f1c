import pytest
import torch

from emlens.core.direction_set import DirectionSet
from emlens.core.finite import NonFiniteActivations
from emlens.core.generation import generate
from emlens.core.interventions import ablate, applied, steer
from emlens.core.models import load_model


@pytest.fixture(scope="module")
def half():
    return load_model("tiny-llama", dtype=torch.float16)


@pytest.mark.usefixtures("one_thread")
def test_steering_that_overflows_float16_stops_naming_layer_and_scale(half):
    d = DirectionSet(torch.ones(3, 64) / 8, [0, 1, 2])
    fine = generate(half, ["Hi"], [steer(d, [1], 4.0)], max_new_tokens=3)
    assert len(fine) == 1  # a sane scale runs as before, guard and all
    with pytest.raises(NonFiniteActivations) as e:
        generate(half, ["Hi"], [steer(d, [1], 1e6)], max_new_tokens=3)
    msg = str(e.value)
    assert "layer 1" in msg and "scale 1e+06" in msg and "float16" in msg


def test_ablation_to_an_extreme_reference_stops_naming_the_layer(tiny):
    model = tiny("llama")
    ids = model.to_tokens("Hello there")
    big = torch.full((1, 64), 1e39, dtype=torch.float64)  # inf in float32
    with pytest.raises(NonFiniteActivations, match=r"layer 1 .*under ablation at layer 1"):
        with applied(model, [ablate(torch.ones(64), layers=[1], reference=big)]):
            model(ids)
    with applied(model, []):  # the hooks are gone: the model runs as before
        assert torch.isfinite(model(ids)).all()


def test_a_non_finite_scale_is_refused_up_front():
    d = DirectionSet(torch.ones(3, 64), [0, 1, 2])
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="finite number"):
            steer(d, [1], bad)
