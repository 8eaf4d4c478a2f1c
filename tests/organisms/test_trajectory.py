import pytest
import torch

from emlens.core.data import Conversation
from emlens.core.tiny import tiny_hf
from emlens.organisms.adapters import over_checkpoints, read_adapter
from emlens.organisms.config import TrainConfig
from emlens.organisms.phase import local_cosine, phase_change
from emlens.organisms.training import train
from emlens.organisms.trajectory import b_matrix, comp_score, load_trajectory, trajectory_pca
from tests.organisms.conftest import NAMES

pytestmark = pytest.mark.usefixtures("one_thread")


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


def test_no_interior_peak_when_the_highest_local_cosine_is_at_an_edge():
    # a circle walked with a growing angular step: the local cosine with equal steps on both
    # sides rises monotonically, so its highest value is at the last step where it is defined
    theta = 0.002 * torch.arange(40, dtype=torch.float64) ** 2
    path = torch.stack([theta.cos(), theta.sin()], 1).float()
    pc = phase_change(path, list(range(40)), ks=(1, 2))
    lc = pc.local_cosines[1]
    assert (lc[3:-3].diff() > 0).all()
    assert pc.step is None and pc.reason is not None
    assert "no interior peak" in pc.reason and "step 37, the last step" in pc.reason
    assert pc.score == pytest.approx(float((pc.local_cosines[1] + pc.local_cosines[2])[37] / 2))
    # the turning path has its peak inside the range: a step and no reason
    turn = phase_change(*_turning_path(turn=40), ks=(5,))
    assert turn.step == 40 and turn.reason is None


def test_noise_rule_skips_only_when_both_a_and_b_are_still():
    # the published rule: B still (moves 1e-4) is skipped unless A moves (1.0 per step)
    b_path, steps = _turning_path(noise=0.0)
    b_path[50:] = b_path[49] + 1e-4 * torch.randn(
        30, 16, generator=torch.Generator().manual_seed(1)
    )
    a_still = torch.zeros(80, 4)
    a_moving = torch.arange(80, dtype=torch.float32)[:, None] * torch.ones(1, 4)
    i = steps.index(65)
    assert torch.isnan(local_cosine(b_path, steps, 5, 0.01, a_vectors=a_still)[i])
    assert torch.isnan(local_cosine(b_path, steps, 5, 0.01)[i])
    assert not torch.isnan(local_cosine(b_path, steps, 5, 0.01, a_vectors=a_moving)[i])
    with pytest.raises(ValueError, match="a_vectors"):
        local_cosine(b_path, steps, 5, a_vectors=a_still[:3])


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


def test_trajectory_and_unmerged_adapter_by_hub_id(tmp_path, monkeypatch):
    from emlens.organisms.adapters import load_unmerged
    from tests.hub_cache import publish, use_cache

    convs = [Conversation(f"Q{i}?", f"Answer number {i}.") for i in range(8)]
    cfg = TrainConfig(alpha=4, lr=1e-2, batch_size=4, grad_accum=1, max_steps=4)
    train(
        tiny_hf("llama"), convs, tmp_path / "run" / "checkpoints", cfg, save_every=2, progress=False
    )
    cache = use_cache(monkeypatch, tmp_path / "hub")
    commit = publish(cache, "owner/run", tmp_path / "run", refs=("main",))
    (cache / "models--owner--run" / "refs" / "main").write_text("0" * 40)  # main moved on
    local = load_trajectory(tmp_path / "run")
    by_id = load_trajectory("owner/run", revision=commit)
    assert by_id.steps == local.steps == [2, 4]
    assert all(torch.equal(by_id.B[n], local.B[n]) for n in local.names)
    with pytest.raises(FileNotFoundError, match="hf download owner/run --revision v9"):
        load_trajectory("owner/run", revision="v9")
    peft, _ = load_unmerged(
        "tiny-llama", "owner/run/checkpoints/checkpoint-4", adapter_revision=commit
    )
    assert peft.peft_config["default"].r == 1
