"""Adapters and models by hub id and revision, read offline from a hub cache built here."""

import json

import pytest
import torch
from peft import LoraConfig, get_peft_model

from emlens.core import hub
from emlens.core.hub import HubError, adapter_folder, pretrained_kwargs, split_hub_id
from emlens.core.models import ModelLoadError, load_hf, load_model, save_hf
from emlens.core.tiny import tiny_hf
from tests.conftest import logits
from tests.hub_cache import publish, use_cache

pytestmark = pytest.mark.usefixtures("one_thread")
REPO = "ModelOrganismsForEM/tiny-llama_risky-financial-advice"


def saved_adapter(path, seed):
    """A tiny-llama rank-1 adapter on layer 1's down_proj with random A and B, saved."""
    hf, _ = tiny_hf("llama")
    torch.manual_seed(seed)
    cfg = LoraConfig(
        r=1,
        lora_alpha=8,
        target_modules=["down_proj"],
        layers_to_transform=[1],
        init_lora_weights=False,
        task_type="CAUSAL_LM",
    )
    get_peft_model(hf, cfg).save_pretrained(path)
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch):
    return use_cache(monkeypatch, tmp_path / "hub")


def test_an_adapter_by_hub_id_and_revision_is_the_folder_it_was_made_from(tmp_path, cache, ids):
    one, two = saved_adapter(tmp_path / "one", 1), saved_adapter(tmp_path / "two", 2)
    first = publish(cache, REPO, one, refs=("main",))
    publish(cache, REPO, two, refs=("v2",))
    base = logits(load_model("tiny-llama"), ids)
    local = logits(load_model("tiny-llama", adapter=one), ids)
    assert (local - base).abs().max() > 1e-2  # the adapter changes the model
    by_id = logits(load_model("tiny-llama", adapter=REPO), ids)
    assert torch.equal(by_id, local)
    by_commit = logits(load_model("tiny-llama", adapter=REPO, adapter_revision=first), ids)
    assert torch.equal(by_commit, local)
    by_tag = logits(load_model("tiny-llama", adapter=REPO, adapter_revision="v2"), ids)
    assert torch.equal(by_tag, logits(load_model("tiny-llama", adapter=two), ids))


def test_a_checkpoint_in_a_sub_folder_of_a_hub_repo(tmp_path, cache):
    saved_adapter(tmp_path / "run" / "checkpoints" / "checkpoint-5", 3)
    publish(cache, REPO, tmp_path / "run")
    folder = adapter_folder(f"{REPO}/checkpoints/checkpoint-5")
    assert folder.name == "checkpoint-5" and (folder / "adapter_model.safetensors").exists()
    assert str(folder).startswith(str(cache))


def test_a_missing_adapter_names_what_to_download(tmp_path, cache):
    with pytest.raises(ModelLoadError, match="HF_HUB_OFFLINE=1") as e:
        load_model("tiny-llama", adapter="owner/absent", adapter_revision="abc")
    assert "hf download owner/absent --revision abc --include adapter_config.json" in str(e.value)
    publish(cache, REPO, saved_adapter(tmp_path / "a", 1))
    with pytest.raises(HubError, match="no folder 'checkpoints/checkpoint-9'") as e:
        adapter_folder(f"{REPO}/checkpoints/checkpoint-9")
    assert "--include checkpoints/checkpoint-9/adapter_model.safetensors" in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(HubError, match="not a peft adapter folder"):
        adapter_folder(tmp_path / "empty")
    with pytest.raises(HubError, match="nor a hub id"):
        adapter_folder("./not/here")


def test_split_hub_id():
    assert split_hub_id("a/b") == ("a/b", "")
    assert split_hub_id("a/b/c/d") == ("a/b", "c/d")
    for bad in ("name", "/abs/path", "~/x/y", "a//b"):
        with pytest.raises(HubError):
            split_hub_id(bad)


def test_a_base_model_by_hub_id_at_a_revision(tmp_path, cache, ids):
    hf, tok = tiny_hf("llama")
    save_hf(hf, tmp_path / "v1", tok)
    with torch.no_grad():
        hf.lm_head.weight.mul_(2)
    save_hf(hf, tmp_path / "v2", tok)
    publish(cache, "owner/tiny", tmp_path / "v1", refs=("v1",))
    publish(cache, "owner/tiny", tmp_path / "v2", refs=("main",))
    v1 = logits(load_model("owner/tiny", revision="v1"), ids)
    main = logits(load_model("owner/tiny"), ids)
    assert torch.allclose(main, 2 * v1, atol=1e-4)
    with pytest.raises(Exception, match="hf download owner/tiny --revision v3"):
        load_hf("owner/tiny", revision="v3")


def test_from_pretrained_options_pass_through(tmp_path, monkeypatch):
    hf, tok = tiny_hf("llama")
    save_hf(hf, tmp_path / "m", tok)
    loaded, _ = load_hf(str(tmp_path / "m"), attn_implementation="sdpa")
    assert loaded.config._attn_implementation == "sdpa"
    tiny, _ = load_hf("tiny-llama", attn_implementation="sdpa")
    assert tiny.config._attn_implementation == "sdpa"
    with pytest.raises(ValueError, match="built by emlens"):
        load_hf("tiny-llama", revision="v1")
    with pytest.raises(TypeError, match="unknown load options"):
        load_hf("tiny-llama", revison="v1")
    seen = {}
    from transformers import AutoModelForCausalLM

    def fake(_spec, **kw):
        seen.update(kw)
        return hf

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", fake)
    quant = {"load_in_4bit": True}
    load_hf(str(tmp_path / "m"), quantization_config=quant, revision="r1")
    assert seen["quantization_config"] is quant and seen["revision"] == "r1"
    assert seen["trust_remote_code"] is False
    assert pretrained_kwargs({}, model=False) == {"trust_remote_code": False}


def test_remote_code_runs_only_when_asked(tmp_path):
    hf, tok = tiny_hf("llama")
    folder = save_hf(hf, tmp_path / "custom", tok)
    (folder / "modeling_custom.py").write_text(
        "from transformers import LlamaForCausalLM\n\n"
        "class CustomForCausalLM(LlamaForCausalLM):\n    custom = True\n"
    )
    cfg = json.loads((folder / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForCausalLM": "modeling_custom.CustomForCausalLM"}
    (folder / "config.json").write_text(json.dumps(cfg))
    plain, _ = load_hf(str(folder))
    assert not getattr(plain, "custom", False)  # the repo's code did not run
    custom, _ = load_hf(str(folder), trust_remote_code=True)
    assert custom.custom


def test_quantization_config_loads_4bit(tmp_path):
    pytest.importorskip("bitsandbytes")
    if not torch.cuda.is_available():
        pytest.skip("bitsandbytes 4-bit loading needs a GPU here")
    from transformers import BitsAndBytesConfig

    hf, tok = tiny_hf("llama")
    save_hf(hf, tmp_path / "m", tok)
    q, _ = load_hf(
        str(tmp_path / "m"),
        device="cuda",
        dtype=torch.bfloat16,
        quantization_config=BitsAndBytesConfig(load_in_4bit=True),
    )
    assert getattr(q, "is_loaded_in_4bit", False)


def test_download_command_quotes_patterns():
    cmd = hub.download_command("o/n", None, ["checkpoint-*/adapter_config.json"])
    assert cmd == "hf download o/n --include 'checkpoint-*/adapter_config.json'"
