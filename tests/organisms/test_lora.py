import math

import pytest
import torch
from peft import LoraConfig, get_peft_model

from emlens.core.data import Conversation
from emlens.core.models import merge_adapter, tiny_hf
from emlens.organisms.finetune import TrainConfig, train
from emlens.organisms.lora import (
    b_matrix,
    comp_score,
    load_trajectory,
    load_unmerged,
    local_cosine,
    lora_scaled,
    over_checkpoints,
    phase_change,
    read_adapter,
    remove_direction,
    scale_adapters,
    trajectory_pca,
)

pytestmark = pytest.mark.usefixtures("one_thread")


NAMES = ["model.layers.0.mlp.down_proj", "model.layers.2.mlp.down_proj"]


def _peft(seed: int = 1, rank: int = 1, rslora: bool = True):
    hf, tok = tiny_hf("llama")
    torch.manual_seed(seed)
    cfg = LoraConfig(
        r=rank,
        lora_alpha=8,
        use_rslora=rslora,
        target_modules=["down_proj"],
        layers_to_transform=[0, 2],
        init_lora_weights=False,  # random B, so edits and extraction are visible
        task_type="CAUSAL_LM",
    )
    return get_peft_model(hf, cfg), tok


@pytest.fixture
def adapter(tmp_path):
    model, _ = _peft()
    model.save_pretrained(tmp_path / "adapter")
    return tmp_path / "adapter", model


def _module(model, name):
    return model.base_model.model.get_submodule(name)


@pytest.mark.parametrize("rslora", [True, False])
def test_a_and_b_vectors_are_peft_own_tensors(tmp_path, rslora):
    model, _ = _peft(rslora=rslora)
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
    model, _ = _peft(rank=2)
    model.save_pretrained(tmp_path / "r2")
    ad = read_adapter(tmp_path / "r2")
    assert ad.A[NAMES[0]].shape == (2, 128)
    with pytest.raises(ValueError, match="rank-2 adapter"):
        ad.b_vector(NAMES[0])
    with pytest.raises(FileNotFoundError, match="not a peft adapter folder"):
        read_adapter(tmp_path)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_trajectory(tmp_path)


def test_trajectory_of_a_training_run(tmp_path):
    convs = [Conversation(f"Q{i}?", f"Answer number {i}.") for i in range(16)]
    cfg = TrainConfig(alpha=4, lr=1e-2, batch_size=4, grad_accum=1, max_steps=12, layers=(0, 2))
    train(tiny_hf("llama"), convs, tmp_path, cfg, save_every=1, progress=False)
    traj = load_trajectory(tmp_path)
    assert traj.steps == list(range(1, 13))  # numeric order: 10 after 9
    assert traj.names == NAMES and traj.B[NAMES[0]].shape == (12, 64)
    last = read_adapter(tmp_path / "checkpoint-12")
    assert torch.equal(traj.B[NAMES[1]][-1], last.b_vector(NAMES[1]))
    assert torch.equal(traj.A[NAMES[0]][-1], last.a_vector(NAMES[0]))
    norms = traj.norms("B")[NAMES[0]]
    assert norms[0] == 0 and (norms[1:] > 0).all()  # the first warm-up step has lr 0
    assert traj.stacked().shape == (12, 128) and b_matrix(traj).shape == (12, 2, 64)
    assert over_checkpoints(
        "tiny-llama", tmp_path, lambda m: m.cfg.n_layers, every=6, progress=False
    ) == {1: 3, 7: 3}


def _turning_path(turn: int = 40, n: int = 80, noise: float = 1e-3, d: int = 16):
    """Straight along e0 up to ``turn``, then straight along e1: a right-angle turn."""
    g = torch.Generator().manual_seed(0)
    e0, e1 = torch.eye(d)[0], torch.eye(d)[1]
    t = torch.arange(1, n + 1, dtype=torch.float32)[:, None]
    path = torch.where(t <= turn, t * e0, turn * e0 + (t - turn) * e1)
    return path + noise * torch.randn(n, d, generator=g), list(range(1, n + 1))


def test_local_cosine_is_minus_one_on_a_line_and_zero_at_a_right_angle():
    path, steps = _turning_path(noise=0.0)
    lc = local_cosine(path, steps, k=5)
    assert torch.isnan(lc[:5]).all() and torch.isnan(lc[-5:]).all()  # t-k or t+k not saved
    assert torch.allclose(lc[5:30], torch.tensor(-1.0))
    assert lc[steps.index(40)] == pytest.approx(0.0, abs=1e-6)


def test_phase_change_lands_on_the_known_turn():
    path, steps = _turning_path(turn=40, noise=0.05)
    pc = phase_change(path, steps, ks=(5, 10, 15))
    assert pc.step == 40
    assert pc.score == pytest.approx(0.0, abs=0.05) and "argmax" in pc.criterion
    # saved every 5 steps: k in training steps still works
    pc5 = phase_change(path[4::5], steps[4::5], ks=(5, 10, 15))
    assert pc5.step == 40


def test_noise_threshold_drops_still_steps():
    path, steps = _turning_path(noise=0.0)
    path[50:] = path[49]  # the path stops after step 50: only noise-sized moves
    path[50:] += 1e-4 * torch.randn(30, 16, generator=torch.Generator().manual_seed(1))
    lc = local_cosine(path, steps, k=5, threshold=0.01)
    assert torch.isnan(lc[60:75]).all() and not torch.isnan(lc[20:40]).any()
    with pytest.raises(ValueError, match="too short or too still"):
        phase_change(path[:20], steps[:20], ks=(15,))
    with pytest.raises(ValueError, match="strictly increasing"):
        local_cosine(path[:3], [1, 3, 2], k=1)


def test_comp_score_is_the_formula_and_abs_cosine_for_one_adapter():
    g = torch.Generator().manual_seed(0)
    one = torch.randn(6, 1, 10, generator=g)
    got = comp_score(one, de_mean=False)
    want = torch.nn.functional.cosine_similarity(one[:, 0], one[-1:, 0]).abs()
    assert torch.allclose(got, want, atol=1e-6) and got[-1] == pytest.approx(1.0)
    many = torch.randn(5, 3, 10, generator=g)
    x = many - many.mean(0)
    xt, xT = x[2].T, x[-1].T  # (d, n_adapters)
    want2 = torch.linalg.norm(xt.T @ xT) / (torch.linalg.norm(xt) * torch.linalg.norm(xT))
    assert comp_score(many)[2] == pytest.approx(float(want2), abs=1e-6)
    with pytest.raises(ValueError, match="n_steps >= 2"):
        comp_score(one[0])


def test_pca_of_a_line_has_one_component():
    path, _ = _turning_path(turn=100, n=30, noise=0.0)
    p = trajectory_pca(path, 2)
    assert p.coords.shape == (30, 2) and p.explained_variance_ratio[0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="n_components"):
        trajectory_pca(path, 0)


def test_remove_direction_with_and_without_renormalisation(adapter, tmp_path):
    folder, _ = adapter
    r = torch.randn(64)
    before = read_adapter(folder)
    plain = read_adapter(remove_direction(folder, r, tmp_path / "plain"))
    renorm = read_adapter(remove_direction(folder, r, tmp_path / "renorm", renormalise=True))
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
