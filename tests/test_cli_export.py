"""``emlens export``: the folder loads in stock transformers with the hooked model's logits."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from emlens.cli import main
from emlens.core.direction_set import DirectionSet
from emlens.core.interventions import ablate, applied, steer
from emlens.core.models import load_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("kind", ["steer", "ablate"])
def test_export_matches_the_hooked_model(kind, tmp_path):
    model = load_model("tiny-qwen2")
    v = torch.randn(3, model.cfg.d_model, generator=torch.Generator().manual_seed(0))
    ds = DirectionSet(v, [0, 1, 2])
    ds.save(tmp_path / "em.safetensors")
    spec = f"{tmp_path / 'em.safetensors'}:1" + (":2.5" if kind == "steer" else "")
    main(["export", "--model", "tiny-qwen2", f"--{kind}", spec, "--out", str(tmp_path / "x")])
    iv = steer(ds, [1], 2.5) if kind == "steer" else ablate(ds, layer=1)
    ids = torch.tensor([[1, 40, 50, 60, 70, 80]])
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "x", attn_implementation="eager")
    with torch.no_grad(), applied(model, [iv]):
        hooked = model(ids)
        assert (plain(ids).logits - hooked).abs().max() < 1e-4


def test_export_needs_an_intervention(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["export", "--model", "tiny-llama", "--out", str(tmp_path)])
    assert "give --steer" in capsys.readouterr().err
