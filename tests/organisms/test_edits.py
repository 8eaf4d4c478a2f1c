import pytest
import torch

from emlens.core.models import merge_adapter
from emlens.core.tiny import tiny_hf
from emlens.organisms.adapters import load_unmerged, read_adapter
from emlens.organisms.edits import lora_scaled, remove_direction, scale_adapters
from tests.organisms.conftest import NAMES

pytestmark = pytest.mark.usefixtures("one_thread")


def test_remove_direction_with_and_without_renormalization(adapter, tmp_path):
    folder, _ = adapter
    r = torch.randn(64)
    before = read_adapter(folder)
    plain = read_adapter(remove_direction(folder, r, tmp_path / "plain"))
    renorm = read_adapter(remove_direction(folder, r, tmp_path / "renorm", renormalize=True))
    only = read_adapter(remove_direction(folder, r, tmp_path / "only", adapters=NAMES[:1]))
    for name in NAMES:
        assert plain.b_vector(name) @ r == pytest.approx(0.0, abs=1e-4)
        assert renorm.b_vector(name) @ r == pytest.approx(0.0, abs=1e-4)
        assert renorm.b_vector(name).norm() == pytest.approx(float(before.b_vector(name).norm()))
        assert torch.equal(plain.A[name], before.A[name])
    assert torch.equal(only.B[NAMES[1]], before.B[NAMES[1]])
    with pytest.raises(ValueError, match="writes width 64"):
        remove_direction(folder, torch.randn(5), tmp_path / "bad")
    with pytest.raises(KeyError, match="not in"):
        remove_direction(folder, r, tmp_path / "bad", adapters=["model.layers.1.mlp.down_proj"])
    with pytest.raises(ValueError, match="new folder"):
        remove_direction(folder, r, folder)


def test_scaling_adapters_scales_the_weight_delta_merged_and_unmerged(adapter, tmp_path):
    folder, _ = adapter
    base, tok = tiny_hf("llama")
    out = scale_adapters(folder, {NAMES[1]: 3.0}, tmp_path / "scaled")
    w0 = base.model.layers[2].mlp.down_proj.weight
    w1 = merge_adapter(base, folder).model.layers[2].mlp.down_proj.weight
    w3 = merge_adapter(base, out).model.layers[2].mlp.down_proj.weight
    assert torch.allclose(w3 - w0, 3 * (w1 - w0), atol=1e-6)
    assert torch.equal(
        merge_adapter(base, out).model.layers[0].mlp.down_proj.weight,
        merge_adapter(base, folder).model.layers[0].mlp.down_proj.weight,
    )
    # the in-memory context manager gives the same model as the scaled folder
    ids = torch.tensor([tok("Hello there")["input_ids"]])
    model, _ = load_unmerged("tiny-llama", folder)
    plain = model(ids).logits
    with torch.no_grad(), lora_scaled(model, {NAMES[1]: 3.0}):
        inside = model(ids).logits
    merged3 = merge_adapter(base, out)(ids).logits
    assert torch.allclose(inside, merged3, atol=1e-5)
    assert torch.allclose(model(ids).logits, plain)  # restored on exit
    assert torch.allclose(plain, merge_adapter(base, folder)(ids).logits, atol=1e-5)
    with pytest.raises(KeyError, match="not in this model"):
        with lora_scaled(model, {"nope": 2.0}):
            pass
