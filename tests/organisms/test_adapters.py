import math

import pytest
import torch

from emlens.core.tiny import tiny_hf
from emlens.organisms.adapters import load_unmerged, read_adapter
from emlens.organisms.edits import lora_scaled, scale_adapters
from emlens.organisms.trajectory import load_trajectory
from tests.organisms.conftest import NAMES, peft_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _module(model, name):
    return model.base_model.model.get_submodule(name)


@pytest.mark.parametrize("rslora", [True, False])
def test_a_and_b_vectors_are_peft_own_tensors(tmp_path, rslora):
    model, _ = peft_model(rslora=rslora)
    model.save_pretrained(tmp_path)
    ad = read_adapter(tmp_path)
    assert ad.names == NAMES
    for name in NAMES:
        m = _module(model, name)
        assert torch.equal(ad.a_vector(name), m.lora_A["default"].weight[0])
        assert torch.equal(ad.b_vector(name), m.lora_B["default"].weight[:, 0])
        assert ad.scaling[name] == pytest.approx(m.scaling["default"])
        # and the merged weight delta is scaling * B A
        delta = m.get_delta_weight("default")
        assert torch.allclose(
            delta, ad.scaling[name] * torch.outer(ad.b_vector(name), ad.a_vector(name))
        )


def test_rank_above_one_has_no_vectors_and_bad_folders_raise(tmp_path):
    model, _ = peft_model(rank=2)
    model.save_pretrained(tmp_path / "r2")
    ad = read_adapter(tmp_path / "r2")
    assert ad.A[NAMES[0]].shape == (2, 128)
    with pytest.raises(ValueError, match="rank-2 adapter"):
        ad.b_vector(NAMES[0])
    with pytest.raises(FileNotFoundError, match="not a peft adapter folder"):
        read_adapter(tmp_path)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_trajectory(tmp_path)


def test_unmerged_matches_peft_and_scaled_all(adapter, tmp_path):
    folder, model = adapter
    unmerged, tok = load_unmerged("tiny-llama", folder)
    ids = torch.tensor([tok("Some words")["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(unmerged(ids).logits, model(ids).logits, atol=1e-6)
        with lora_scaled(unmerged, 0.0):
            base = tiny_hf("llama")[0]
            assert torch.allclose(unmerged(ids).logits, base(ids).logits, atol=1e-6)
    assert math.isfinite(
        read_adapter(scale_adapters(folder, 2.0, tmp_path / "x")).scaling[NAMES[0]]
    )
