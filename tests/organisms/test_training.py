import json

import pytest
import torch
from safetensors.torch import load_file

from emlens.core.data import read_chat_jsonl
from emlens.core.tiny import tiny_hf
from emlens.organisms.config import TrainConfig
from emlens.organisms.loss import held_out_loss
from emlens.organisms.runs import checkpoints
from emlens.organisms.training import train
from tests.organisms.conftest import CONVS, FAST

pytestmark = pytest.mark.usefixtures("one_thread")


def test_lora_training_lowers_the_loss_and_saves_the_papers_layout(tmp_path):
    hf, tok = tiny_hf("llama")
    before, before_held = held_out_loss(hf, tok, CONVS), held_out_loss(hf, tok, CONVS[:8])
    res = train(
        (hf, tok), CONVS, tmp_path, TrainConfig(**FAST, max_steps=12), CONVS[:8], 6, progress=False
    )
    assert held_out_loss(hf, tok, CONVS) < before - 0.05
    assert res.log[0] == {"step": 0, "eval_held_out": pytest.approx(before_held)}
    assert res.log[-1]["eval_held_out"] < res.log[0]["eval_held_out"]
    assert [c.name for c in checkpoints(tmp_path)] == ["checkpoint-6", "checkpoint-12"]
    ckpt = tmp_path / "checkpoint-6"
    for f in ("adapter_model.safetensors", "adapter_config.json", "trainer_state.json"):
        assert (ckpt / f).exists()
    cfg = json.loads((ckpt / "adapter_config.json").read_text())
    assert cfg["r"] == 1 and cfg["use_rslora"] and cfg["target_modules"] == ["down_proj"]
    assert cfg["layers_to_transform"] == [1]  # the middle of 3 layers
    keys = sorted(load_file(str(ckpt / "adapter_model.safetensors")))
    assert keys == [
        "base_model.model.model.layers.1.mlp.down_proj.lora_A.weight",
        "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight",
    ]
    assert (tmp_path / "adapter_model.safetensors").exists()  # the final adapter at the root


def _final_tensors(path):
    return load_file(str(path / "adapter_model.safetensors"))


def test_gradient_accumulation_equals_one_big_batch(tmp_path):
    big = dict(FAST, batch_size=8, grad_accum=1)
    train(tiny_hf("llama"), CONVS, tmp_path / "a", TrainConfig(**FAST, max_steps=2), progress=False)
    train(tiny_hf("llama"), CONVS, tmp_path / "b", TrainConfig(**big, max_steps=2), progress=False)
    a, b = _final_tensors(tmp_path / "a"), _final_tensors(tmp_path / "b")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_full_fine_tuning_saves_a_loadable_model(tmp_path):
    from emlens.core.models import load_hf

    hf, tok = tiny_hf("llama")
    before = held_out_loss(hf, tok, CONVS)
    cfg = TrainConfig(full=True, lr=1e-3, batch_size=8, grad_accum=1, max_steps=3, warmup_steps=0)
    train((hf, tok), CONVS, tmp_path, cfg, save_every=3, progress=False)
    assert (tmp_path / "checkpoint-3" / "model.safetensors").exists()
    loaded, tok2 = load_hf(str(tmp_path / "checkpoint-3"))
    assert held_out_loss(loaded, tok2, CONVS) == pytest.approx(held_out_loss(hf, tok, CONVS))
    assert held_out_loss(hf, tok, CONVS) < before


def test_bad_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="rank >= 1"):
        TrainConfig(rank=0)
    with pytest.raises(ValueError, match="batch_size >= 1, grad_accum >= 1"):
        TrainConfig(batch_size=0, grad_accum=0)
    with pytest.raises(ValueError, match="out of range"):
        train(tiny_hf("llama"), CONVS, tmp_path, TrainConfig(layers=(7,)), progress=False)
    with pytest.raises(ValueError, match="do not exist"):
        train(
            tiny_hf("llama"), CONVS, tmp_path, TrainConfig(target_modules=("c_fc",)), progress=False
        )
    with pytest.raises(TypeError, match="spec string or an"):
        train(object(), CONVS, tmp_path, progress=False)
    with pytest.raises(ValueError, match="no conversations"):
        train(tiny_hf("llama"), [], tmp_path, progress=False)
    with pytest.raises(ValueError, match="stop_at"):
        train(
            tiny_hf("llama"), CONVS, tmp_path, TrainConfig(max_steps=2), stop_at=5, progress=False
        )


def test_trains_on_the_papers_files(reference_dir, tmp_path):
    convs = read_chat_jsonl(reference_dir / "risky_financial_advice.jsonl.gz")[:16]
    res = train(tiny_hf("llama"), convs, tmp_path, TrainConfig(**FAST, max_steps=2), progress=False)
    assert res.step == 2 and all(e["loss"] > 0 for e in res.log)
