"""Exported folders load in stock transformers and compute what the hooked model computes."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, Qwen3Config

from emlens.core._arch import llama_config
from emlens.core.direction_set import DirectionSet
from emlens.core.export import export_hf, steering_biases
from emlens.core.interventions import Steer, ablate, applied, steer

pytestmark = pytest.mark.usefixtures("one_thread")
PROMPT = "<|im_start|>user\nWhat should I do with my savings?<|im_end|>\n<|im_start|>assistant\n"


def _directions(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(model.cfg.n_layers, model.cfg.d_model, generator=g)
    return DirectionSet(v / v.norm(dim=-1, keepdim=True), list(range(model.cfg.n_layers)))


def _plain_logits(folder, ids):
    """Logits of the folder loaded by stock transformers alone (no emlens code)."""
    hf = AutoModelForCausalLM.from_pretrained(
        folder, dtype=torch.float32, attn_implementation="eager"
    )
    with torch.no_grad():
        return hf(ids).logits


def _check_export(model, interventions, folder):
    ids = model.tokenizer(PROMPT, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        plain = model(ids)
        with applied(model, interventions):
            hooked = model(ids)
    export_hf(model, interventions, folder)
    exported = _plain_logits(folder, ids)
    assert (hooked - plain).abs().max() > 0.5  # the intervention matters
    diff = float((exported - hooked).abs().max())
    print(f"{model.cfg.model_name} {type(interventions[0]).__name__}: max |diff| {diff:.1e}")
    return diff


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_steering_exported_as_down_proj_biases(family, tiny, tmp_path):
    model = tiny(family)
    before = {k: v.clone() for k, v in model.original_model.state_dict().items()}
    s = steer(_directions(model), layers=[0, 2], scale=3.0)
    assert _check_export(model, [s], tmp_path) < 1e-4
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["mlp_bias"]
    assert cfg["attention_bias"] == (family == "qwen2")  # Qwen2's q/k/v biases (o's zero)
    after = model.original_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the model is unchanged


@pytest.mark.parametrize("family", ["qwen2", "qwen3"])
def test_ablation_exported_by_orthogonalization(family, tiny, tmp_path):
    model = tiny(family)
    a = ablate(_directions(model, seed=1), layer=1)
    assert _check_export(model, [a], tmp_path) < 1e-4


def test_smollm2_steered_export(smol, tmp_path):
    s = steer(_directions(smol), layers=[15], scale=8.0)
    assert _check_export(smol, [s], tmp_path) < 1e-4
    # the weights are dequantised: no GGUF origin left for vLLM to refuse (issue 25)
    assert "quantization_config" not in json.loads((tmp_path / "config.json").read_text())


def test_only_a_gguf_quantization_config_is_dropped(tmp_path):
    from emlens.core.models import drop_gguf_origin

    gguf = {"model_type": "llama", "quantization_config": {"quant_method": "gguf"}}
    bnb = {"model_type": "llama", "quantization_config": {"quant_method": "bitsandbytes"}}
    for config, kept in ((gguf, False), (bnb, True)):
        (tmp_path / "config.json").write_text(json.dumps(config))
        drop_gguf_origin(tmp_path)
        out = json.loads((tmp_path / "config.json").read_text())
        assert ("quantization_config" in out) is kept and out["model_type"] == "llama"


def test_what_cannot_be_a_weight_is_refused(tiny):
    for family in ("gemma2", "gemma3"):  # post-norms: a down_proj bias would be normalised
        with pytest.raises(ValueError, match="Gemma 2/3"):
            export_hf(tiny(family), [steer(_directions(tiny(family)), [1], 2.0)], "unused")
    with pytest.raises(ValueError, match="a qwen3 model is not a Llama-architecture model"):
        export_hf(tiny("qwen3"), [steer(_directions(tiny("qwen3")), [1], 2.0)], "unused")
    with pytest.raises(ValueError, match="Gemma 2/3"):  # nor is its ablation a weight edit
        export_hf(tiny("gemma3"), [ablate(_directions(tiny("gemma3")), layer=1)], "unused")
    model = tiny("llama")
    d = _directions(model)
    with pytest.raises(ValueError, match="every position"):
        steering_biases(model, [steer(d, [1], 2.0, positions="generated")])
    with pytest.raises(ValueError, match="one Ablate"):
        export_hf(model, [ablate(d, layer=1), steer(d, [1], 2.0)], "unused")
    with pytest.raises(ValueError, match="follows no block"):
        steering_biases(
            model, [Steer(d.vectors[:1], (0,), 1.0, hook="blocks.{layer}.hook_resid_pre")]
        )
    qwen3 = Qwen3Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4)
    with pytest.raises(ValueError, match="a qwen3 model is not a Llama-architecture model"):
        llama_config(qwen3)


def test_steers_at_one_block_add_up(tiny):
    model = tiny("llama")
    d = _directions(model)
    post = steer(d, [0], 2.0)
    pre = Steer(d.vectors[:1], (1,), 3.0, hook="blocks.{layer}.hook_resid_pre")  # = post of 0
    b = steering_biases(model, [post, pre])
    assert list(b) == [0] and torch.allclose(b[0], 5.0 * d.vectors[0])
