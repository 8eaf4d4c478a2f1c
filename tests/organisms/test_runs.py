import pytest
import torch
from safetensors.torch import load_file

from emlens.core.tiny import tiny_hf
from emlens.organisms.config import TrainConfig
from emlens.organisms.training import train
from tests.organisms.conftest import CONVS, FAST

pytestmark = pytest.mark.usefixtures("one_thread")


def _final_tensors(path):
    return load_file(str(path / "adapter_model.safetensors"))


def test_resume_gives_the_same_adapter_as_a_straight_run(tmp_path):
    cfg = TrainConfig(**FAST, max_steps=6, dropout=0.1)  # dropout: RNG state must resume too
    straight = train(tiny_hf("llama"), CONVS, tmp_path / "a", cfg, save_every=3, progress=False)
    first = train(
        tiny_hf("llama"), CONVS, tmp_path / "b", cfg, save_every=3, stop_at=3, progress=False
    )
    assert first.step == 3 and [c.name for c in first.checkpoints] == ["checkpoint-3"]
    with pytest.raises(FileExistsError, match="resume=True"):
        train(tiny_hf("llama"), CONVS, tmp_path / "b", cfg, progress=False)
    with pytest.raises(ValueError, match="config differs"):
        train(
            tiny_hf("llama"),
            CONVS,
            tmp_path / "b",
            TrainConfig(**FAST, max_steps=7),
            resume=True,
            progress=False,
        )
    with pytest.raises(ValueError, match="data differ"):
        train(tiny_hf("llama"), CONVS[:-1], tmp_path / "b", cfg, resume=True, progress=False)
    rest = train(
        tiny_hf("llama"), CONVS, tmp_path / "b", cfg, save_every=3, resume=True, progress=False
    )
    assert rest.step == 6 and [e["step"] for e in rest.log] == list(range(1, 7))
    a, b = _final_tensors(tmp_path / "a/checkpoint-6"), _final_tensors(tmp_path / "b/checkpoint-6")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert all(a[k].abs().sum() > 0 for k in a)
    assert [e["loss"] for e in straight.log] == [e["loss"] for e in rest.log]


def _with_optimizer(run):
    from emlens.organisms.runs import OPTIMIZER, checkpoints

    return [c.name for c in checkpoints(run) if (c / OPTIMIZER).exists()]


def test_optimizer_state_stays_in_the_newest_checkpoints_and_resume_stays_exact(tmp_path):
    from emlens.organisms.runs import checkpoints

    cfg = TrainConfig(**FAST, max_steps=6, dropout=0.1)
    kw = {"save_every": 1, "progress": False}
    train(tiny_hf("llama"), CONVS, tmp_path / "a", cfg, keep_optimizer=None, **kw)
    assert len(_with_optimizer(tmp_path / "a")) == 6  # None: every checkpoint, as before
    train(tiny_hf("llama"), CONVS, tmp_path / "b", cfg, stop_at=4, keep_optimizer=2, **kw)
    assert _with_optimizer(tmp_path / "b") == ["checkpoint-3", "checkpoint-4"]
    train(tiny_hf("llama"), CONVS, tmp_path / "b", cfg, resume=True, keep_optimizer=2, **kw)
    assert _with_optimizer(tmp_path / "b") == ["checkpoint-5", "checkpoint-6"]
    for c in checkpoints(tmp_path / "b"):  # every adapter and state stays for the trajectory
        assert (c / "adapter_model.safetensors").exists() and (c / "trainer_state.json").exists()
    a, b = _final_tensors(tmp_path / "a"), _final_tensors(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="keep_optimizer must be >= 1"):
        train(tiny_hf("llama"), CONVS, tmp_path / "c", cfg, keep_optimizer=0, **kw)


def test_a_full_fine_tune_keeps_one_optimizer_state_by_default(tmp_path):
    cfg = TrainConfig(full=True, lr=1e-3, batch_size=8, grad_accum=1, max_steps=3, warmup_steps=0)
    train(tiny_hf("llama"), CONVS, tmp_path, cfg, save_every=1, progress=False)
    assert _with_optimizer(tmp_path) == ["checkpoint-3"]
    assert all((tmp_path / f"checkpoint-{s}" / "model.safetensors").exists() for s in (1, 2, 3))
