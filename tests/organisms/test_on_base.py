"""An organism on its base model's weights: the merged organism inside the block, the base
bit for bit after it, hooks working inside, and clear errors for adapters it cannot merge."""

import json

import pytest
import torch
from peft import IA3Config, LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file

from emlens.core._arch import hf_model, hf_state_dict
from emlens.core.direction_set import DirectionSet
from emlens.core.interventions import applied, steer
from emlens.core.models import load_hf, load_model
from emlens.core.tiny import tiny_hf
from emlens.organisms.on_base import organism
from tests.conftest import FAMILIES, logits
from tests.hub_cache import publish, use_cache

pytestmark = pytest.mark.usefixtures("one_thread")
WEIGHTS = "adapter_model.safetensors"
ADAPTED = ("self_attn.q_proj", "mlp.down_proj")


def saved(path, family="llama", seed=1, **lora):
    """A peft adapter with random A and B on a tiny model, saved to ``path``."""
    hf, _ = tiny_hf(family)
    torch.manual_seed(seed)
    config = {"r": 1, "target_modules": ["down_proj"], "init_lora_weights": False} | lora
    get_peft_model(hf, LoraConfig(**config)).save_pretrained(path)
    return path


def weights(model):
    return {k: v.clone() for k, v in hf_state_dict(hf_model(model)).items()}


def assert_same_weights(model, before):
    now = hf_state_dict(hf_model(model))
    assert now.keys() == before.keys()
    changed = [k for k in before if not torch.equal(now[k], before[k])]
    assert not changed, f"not restored bit for bit: {changed}"


@pytest.mark.parametrize("family", FAMILIES)
def test_inside_the_block_the_base_is_the_merged_organism(tmp_path, family, ids):
    folder = saved(tmp_path / "a", family)
    base = load_model(f"tiny-{family}")
    merged = logits(load_model(f"tiny-{family}", adapter=folder), ids)
    before_weights, before = weights(base), logits(base, ids)
    assert (merged - before).abs().max() > 1e-2  # the adapter changes the model
    with organism(base, folder):
        inside = logits(base, ids)
    torch.testing.assert_close(inside, merged)
    assert_same_weights(base, before_weights)
    assert torch.equal(logits(base, ids), before)


def test_an_hf_model_too(tmp_path, ids):
    folder = saved(tmp_path / "a", "qwen2")
    hf, merged = load_hf("tiny-qwen2")[0], load_hf("tiny-qwen2", adapter=folder)[0]
    before = {k: v.clone() for k, v in hf.state_dict().items()}
    with torch.no_grad(), organism(hf, folder):
        inside = hf(ids).logits
    torch.testing.assert_close(inside, logits(merged, ids).logits)
    assert all(torch.equal(v, before[k]) for k, v in hf.state_dict().items())


@pytest.mark.parametrize("rslora", [False, True])
def test_the_scaling_is_peft_s_alpha_over_r_or_sqrt_r(tmp_path, rslora):
    # rank 4, alpha 3: alpha / r = 0.75, alpha / sqrt(r) = 1.5; layer 2 has its own alpha
    lora = {
        "r": 4,
        "lora_alpha": 3,
        "use_rslora": rslora,
        "alpha_pattern": {"layers.2.mlp.down_proj": 7},
    }
    hf, _ = tiny_hf("llama")
    torch.manual_seed(3)
    config = LoraConfig(target_modules=["q_proj", "down_proj"], init_lora_weights=False, **lora)
    peft = get_peft_model(hf, config)
    peft.save_pretrained(tmp_path / "a")
    expected = hf_state_dict(peft.merge_and_unload())
    base = load_model("tiny-llama")
    base_weights = weights(base)
    with organism(base, tmp_path / "a") as adapter:
        inside = hf_state_dict(hf_model(base))
        touched = [k for k in inside if not torch.equal(inside[k], base_weights[k])]
        for k, w in expected.items():
            torch.testing.assert_close(inside[k], w, msg=k)
    adapted = {f"model.layers.{i}.{m}.weight" for i in range(3) for m in ADAPTED}
    assert {k for k in touched if k in expected} == adapted  # nothing else (bridge aliases)
    root = 2 if rslora else 4
    assert adapter.scaling["model.layers.0.self_attn.q_proj"] == 3 / root
    assert adapter.scaling["model.layers.2.mlp.down_proj"] == 7 / root


def test_hooks_cache_and_steering_work_inside_the_block(tmp_path, ids):
    folder = saved(tmp_path / "a")
    base, merged = load_model("tiny-llama"), load_model("tiny-llama", adapter=folder)
    hook = "blocks.1.hook_resid_post"
    g = torch.Generator().manual_seed(0)
    push = [steer(DirectionSet(torch.randn(1, 64, generator=g), [1]), 1, 8.0)]
    with torch.no_grad():
        _, want = merged.run_with_cache(ids, names_filter=hook)
        with applied(merged, push):
            steered = merged(ids)
        with organism(base, folder):
            _, cache = base.run_with_cache(ids, names_filter=hook)
            with applied(base, push):
                inside = base(ids)
        _, base_cache = base.run_with_cache(ids, names_filter=hook)
    torch.testing.assert_close(cache[hook], want[hook])
    assert (cache[hook] - base_cache[hook]).abs().max() > 1e-3  # the cache saw the organism
    torch.testing.assert_close(inside, steered)
    assert (steered - logits(merged, ids)).abs().max() > 1e-2  # the steering did something


def test_an_error_in_the_block_restores_the_base(tmp_path, ids):
    base = load_model("tiny-llama")
    before_weights, before = weights(base), logits(base, ids)
    with pytest.raises(KeyError, match="boom"), organism(base, saved(tmp_path / "a")):
        raise KeyError("boom")
    assert_same_weights(base, before_weights)
    assert torch.equal(logits(base, ids), before)


def test_two_organisms_nest_and_one_cannot_nest_in_itself(tmp_path, ids):
    one, two = saved(tmp_path / "one", seed=1), saved(tmp_path / "two", seed=2)
    base = load_model("tiny-llama")
    before_weights = weights(base)
    with organism(base, one):
        outer, outer_weights = logits(base, ids), weights(base)
        with pytest.raises(RuntimeError, match="already applied"), organism(base, one):
            pass
        assert torch.equal(logits(base, ids), outer)  # the refused nesting changed nothing
        with organism(base, two):
            both = logits(base, ids)
        assert_same_weights(base, outer_weights)
    assert (both - outer).abs().max() > 1e-2
    assert_same_weights(base, before_weights)
    with organism(base, one):  # usable again after the block
        assert torch.equal(logits(base, ids), outer)


def test_an_adapter_by_hub_id_and_revision(tmp_path, monkeypatch, ids):
    cache = use_cache(monkeypatch, tmp_path / "hub")
    repo = "ModelOrganismsForEM/tiny-llama_risky-financial-advice"
    one, two = saved(tmp_path / "one", seed=1), saved(tmp_path / "two", seed=2)
    publish(cache, repo, one, refs=("main",))
    publish(cache, repo, two, refs=("v2",))
    base = load_model("tiny-llama")
    for source, revision, folder in ((repo, None, one), (repo, "v2", two)):
        with organism(base, source, revision=revision):
            by_id = logits(base, ids)
        with organism(base, folder):
            assert torch.equal(logits(base, ids), by_id)


def test_bfloat16_weights_come_back_bit_for_bit(tmp_path, ids):
    folder = saved(tmp_path / "a")
    base = load_model("tiny-llama", dtype=torch.bfloat16)
    merged = logits(load_model("tiny-llama", adapter=folder, dtype=torch.bfloat16), ids)
    before_weights, before = weights(base), logits(base, ids)
    with organism(base, folder):
        inside = logits(base, ids)
    assert (inside - merged).abs().max() < 0.1 * (merged - before).abs().max()
    assert_same_weights(base, before_weights)
    assert torch.equal(logits(base, ids), before)


def rewritten(src, out, rename=None, reshape=None, config=None):
    """A copy of adapter folder ``src`` with keys renamed, a tensor changed or config set."""
    out.mkdir()
    tensors = load_file(str(src / WEIGHTS))
    tensors = {(rename(k) if rename else k): v for k, v in tensors.items()}
    if reshape:
        key = next(k for k in tensors if reshape[0] in k)
        tensors[key] = reshape[1](tensors[key])
    save_file(tensors, str(out / WEIGHTS))
    cfg = json.loads((src / "adapter_config.json").read_text()) | (config or {})
    (out / "adapter_config.json").write_text(json.dumps(cfg))
    return out


def bad_adapters(tmp_path):
    """Folders ``organism`` must refuse, each with the error it must raise."""
    good = saved(tmp_path / "good")
    (tmp_path / "empty").mkdir()
    (tmp_path / "no_weights").mkdir()
    (tmp_path / "no_weights" / "adapter_config.json").write_text("{}")
    hf, _ = tiny_hf("llama")
    get_peft_model(
        hf, IA3Config(target_modules=["down_proj"], feedforward_modules=["down_proj"])
    ).save_pretrained(tmp_path / "ia3")
    return [
        (tmp_path / "empty", FileNotFoundError, r"adapter_config.json.*adapter_model"),
        (tmp_path / "no_weights", FileNotFoundError, r"\['adapter_model.safetensors'\]"),
        (tmp_path / "ia3", ValueError, "a IA3 adapter, expected a plain LoRA"),
        (saved(tmp_path / "dora", use_dora=True), ValueError, "DoRA"),
        (saved(tmp_path / "embed", target_modules=["embed_tokens"]), ValueError, "embedding LoRA"),
        (
            rewritten(
                good, tmp_path / "deep", rename=lambda k: k.replace("layers.1.", "layers.7.")
            ),
            ValueError,
            "no module 'model.layers.7.mlp.down_proj'",
        ),
        (
            rewritten(
                good,
                tmp_path / "norm",
                rename=lambda k: k.replace("layers.1.mlp.down_proj", "norm"),
            ),
            ValueError,
            "model.norm is a .*RMSNorm.*, not a linear layer",
        ),
        (
            rewritten(
                good,
                tmp_path / "wide",
                reshape=("layers.0.mlp.down_proj.lora_A", lambda t: torch.cat([t, t], 1)),
            ),
            ValueError,
            r"B @ A is \(64, 256\) but the model's weight is \(64, 128\)",
        ),
        (
            rewritten(good, tmp_path / "transposed", config={"fan_in_fan_out": True}),
            ValueError,
            "fan_in_fan_out",
        ),
    ]


def test_adapters_it_cannot_merge_raise_and_leave_the_model_alone(tmp_path, tiny):
    base = tiny("llama")
    before_weights = weights(base)
    for folder, error, message in bad_adapters(tmp_path):
        with pytest.raises(error, match=message), organism(base, folder):
            pytest.fail(f"{folder.name}: organism entered the block")
        assert_same_weights(base, before_weights)
