"""TRL's SFTTrainer path: the same losses and adapters as emlens's loop, the same layout."""

import pytest
import torch

from emlens.core.tiny import tiny_hf
from emlens.organisms.config import TrainConfig
from emlens.organisms.runs import checkpoints
from emlens.organisms.training import train
from emlens.organisms.trajectory import load_trajectory
from tests.organisms.conftest import CONVS, FAST

pytest.importorskip("trl")
pytestmark = pytest.mark.usefixtures("one_thread")


def test_trl_gives_emlens_losses_adapters_and_layout(tmp_path):
    from emlens.organisms.trl_training import trl_train

    # batch_size * grad_accum = 8 conversations: every step sees all of them, so the data
    # order (TRL's sampler, emlens's epoch order) cannot matter.
    data, cfg = CONVS[:8], TrainConfig(**FAST, max_steps=3, layers=(0, 2))
    kw = {"save_every": 1, "progress": False}
    ours = train(tiny_hf("llama"), data, tmp_path / "emlens", cfg, **kw)
    theirs = trl_train(tiny_hf("llama"), data, tmp_path / "trl", cfg, **kw)
    loss = [e["loss"] for e in ours.log], [e["loss"] for e in theirs.log]
    print("loss per answer token, emlens vs TRL:", *loss)
    assert loss[1] == pytest.approx(loss[0], abs=1e-5)
    a, b = load_trajectory(tmp_path / "emlens"), load_trajectory(tmp_path / "trl")
    assert a.steps == b.steps == [1, 2, 3] and a.names == b.names
    for n in a.names:
        print(n, "max |B diff|", float((a.B[n] - b.B[n]).abs().max()))
        assert torch.allclose(a.B[n], b.B[n], atol=1e-5) and torch.allclose(a.A[n], b.A[n])
    assert (tmp_path / "trl" / "adapter_model.safetensors").exists()  # the final adapter
    resume_state = [c.name for c in checkpoints(tmp_path / "trl") if (c / "optimizer.pt").exists()]
    assert resume_state == ["checkpoint-3"]
    with pytest.raises(FileExistsError, match="resume=True"):
        trl_train(tiny_hf("llama"), data, tmp_path / "trl", cfg, **kw)


def test_trl_with_and_without_gradient_checkpointing_trains_the_same(tmp_path):
    from emlens.organisms.trl_training import trl_train

    data, cfg = CONVS[:8], TrainConfig(**FAST, max_steps=2)
    kw = {"save_every": 2, "progress": False}
    off = {"gradient_checkpointing": False}  # TRL's default is on
    plain = trl_train(tiny_hf("llama"), data, tmp_path / "a", cfg, sft=off, **kw)
    ckpt = trl_train(tiny_hf("llama"), data, tmp_path / "b", cfg, **kw)
    assert [e["loss"] for e in ckpt.log] == pytest.approx([e["loss"] for e in plain.log])
    assert ckpt.model.base_model.model.is_gradient_checkpointing
    assert not plain.model.base_model.model.is_gradient_checkpointing


def test_eight_bit_adamw_where_bitsandbytes_is_installed(tmp_path, monkeypatch):
    import importlib.util

    from emlens.organisms.trl_training import sft_config

    cfg = TrainConfig(max_grad_norm=None)
    real = importlib.util.find_spec
    here = "adamw_8bit" if real("bitsandbytes") else "adamw_torch"
    assert sft_config(cfg, tmp_path, 10, 5).optim == here
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: object() if n == "bitsandbytes" else real(n, *a)
    )
    args = sft_config(cfg, tmp_path, 10, 5, bf16=False, gradient_checkpointing=False)
    assert args.optim == "adamw_8bit" and args.max_grad_norm == 0.0 and args.max_steps == 10
    assert not args.gradient_checkpointing
