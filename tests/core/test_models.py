import pytest
import torch
from peft import LoraConfig, get_peft_model

from emlens.core.models import ModelLoadError, load_model, save_hf
from emlens.core.tiny import tiny_hf
from tests.conftest import FAMILIES


def _ids(tok, text="Tell me about the sea."):
    return tok.apply_chat_template(
        [{"role": "user", "content": text}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )["input_ids"]


@pytest.mark.parametrize("family", FAMILIES)
def test_bridge_logits_equal_hf_eager(family):
    hf, tok = tiny_hf(family)
    ids = _ids(tok)
    with torch.no_grad():
        ref = hf(ids).logits
    model = load_model(f"tiny-{family}")
    with torch.no_grad():
        out = model(ids)
    assert out.shape == ref.shape
    assert (out - ref).abs().max() <= 1e-4
    assert model.cfg.n_key_value_heads < model.cfg.n_heads  # GQA


def test_embedded_model_logits_equal_hf_eager(smol_with_reference):
    model, ids, ref = smol_with_reference
    with torch.no_grad():
        out = model(ids)
    assert model.cfg.n_layers == 30 and model.cfg.d_model == 576
    assert (out - ref).abs().max() <= 1e-4
    assert model.tokenizer.chat_template


def test_local_folder_round_trip(tmp_path):
    hf, tok = tiny_hf("qwen2")
    hf.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    model = load_model(str(tmp_path))
    ids = _ids(tok)
    with torch.no_grad():
        assert torch.allclose(model(ids), hf(ids).logits, atol=1e-4)


def test_adapter_is_merged_into_a_copy(tmp_path):
    hf, tok = tiny_hf("llama")
    peft = get_peft_model(
        hf, LoraConfig(r=1, target_modules=["down_proj"], init_lora_weights=False)
    )
    peft.save_pretrained(tmp_path / "adapter")
    ids = _ids(tok)
    with torch.no_grad():
        want = peft(ids).logits
    organism = load_model("tiny-llama", adapter=tmp_path / "adapter")
    base = load_model("tiny-llama")
    with torch.no_grad():
        got, plain = organism(ids), base(ids)
    assert (got - want).abs().max() <= 1e-4
    assert (got - plain).abs().max() > 1e-3  # the adapter changed something


def test_bad_specs_say_what_was_expected(tmp_path):
    with pytest.raises(ModelLoadError, match=r"no config\.json"):
        load_model(str(tmp_path))
    with pytest.raises(ModelLoadError, match="hub"):
        load_model("no-such-org/no-such-model-xyz")
    with pytest.raises(ValueError, match="tiny family"):
        load_model("tiny-gpt9")
    with pytest.raises(ModelLoadError, match=r"adapter_config\.json"):
        load_model("tiny-llama", adapter=tmp_path)


def test_multimodal_gemma3_is_hooked_through_its_language_model(monkeypatch):
    """Gemma 3 4B-27B checkpoints are Gemma3ForConditionalGeneration (what AutoModelForCausalLM
    loads them as); on text their bridge is the language model, post-norms included. Booting
    it installs nothing (TransformerBridge would pip install torchvision, and with it a CUDA
    torch over the CPU one)."""
    import subprocess

    installs: list = []
    monkeypatch.setattr(subprocess, "check_call", lambda cmd, *_, **__: installs.append(cmd))
    from transformers import AutoModelForCausalLM, Gemma3Config, SiglipVisionConfig

    from emlens.core._arch import blocks, writer_hooks
    from emlens.core.models import bridge
    from emlens.core.orthogonalization import orthogonalize

    text, tok = tiny_hf("gemma3")
    vision = SiglipVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        image_size=28, patch_size=14,
    )  # fmt: skip
    cfg = Gemma3Config(
        text_config=text.config, vision_config=vision, mm_tokens_per_image=4,
        image_token_index=len(tok), architectures=["Gemma3ForConditionalGeneration"],
    )  # fmt: skip
    hf = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")
    missing = hf.model.language_model.load_state_dict(text.model.state_dict())
    assert not missing.missing_keys and torch.equal(hf.lm_head.weight, text.lm_head.weight)
    ids = _ids(tok)
    with torch.no_grad():
        want = text(ids).logits
        model = bridge(hf.eval(), tok, "tiny-gemma3-vision")
        got = model(ids)
    assert (got - want).abs().max() <= 1e-4  # the text model's logits, through the bridge
    assert installs == []
    assert len(blocks(hf)) == 3 and writer_hooks(model, 0)[1] == "blocks.0.ln2_post.hook_out"
    with pytest.raises(ValueError, match="Gemma 2/3"):
        orthogonalize(model, torch.ones(64))


def test_a_family_the_bridge_does_not_support_is_named():
    from transformers import AutoModelForCausalLM, HeliumConfig

    from emlens.core.models import bridge

    _, tok = tiny_hf("llama")
    cfg = HeliumConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, head_dim=16,
    )  # fmt: skip
    hf = AutoModelForCausalLM.from_config(cfg)
    with pytest.raises(ModelLoadError, match=r"does not support the helium family"):
        bridge(hf, tok, "tiny-helium")


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma3"])  # qwen2, gemma3 tie embeddings
def test_save_hf_writes_a_folder_that_reloads_with_the_same_logits(family, tmp_path):
    model = load_model(f"tiny-{family}")
    save_hf(model, tmp_path / "saved")
    assert (tmp_path / "saved" / "config.json").exists()
    reloaded = load_model(str(tmp_path / "saved"))
    ids = _ids(model.tokenizer)
    with torch.no_grad():
        assert (reloaded(ids) - model(ids)).abs().max() <= 1e-5
    # an HF model (not a bridge) saves the same way, given its tokenizer
    hf, tok = tiny_hf(family)
    save_hf(hf, tmp_path / "hf", tok)
    with torch.no_grad():
        assert (load_model(str(tmp_path / "hf"))(ids) - hf(ids).logits).abs().max() <= 1e-4
