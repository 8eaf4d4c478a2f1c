"""Shared-prefix passes: block k onwards from a saved residual equals the full pass, and the blocks
below do not run."""

import pytest
import torch

from emlens.core.interventions import Steer, applied
from emlens.core.shared_prefix import first_block, logits_from, saved_residuals
from emlens.core.tokens import answer_tokens, batches
from tests.conftest import FAMILIES


def batch_of(model):
    tok = model.tokenizer
    rows = [
        answer_tokens(tok, "What is up?", "Nothing much at all."),
        answer_tokens(tok, "Hi", "Yo"),
    ]
    return next(iter(batches(rows, 2, tok.pad_token_id)))  # right-padded: one row is shorter


def test_first_block_is_the_lowest_block_hooked():
    assert first_block(["blocks.7.hook_resid_post", "blocks.12.attn.hook_z"]) == 7
    assert first_block(["blocks.3.hook_resid_pre", "hook_embed"]) == 0  # embedding: no prefix
    assert first_block([]) == 0


@pytest.mark.parametrize("family", FAMILIES)
def test_shared_prefix_passes_equal_full_passes(tiny, family):
    model = tiny(family)
    batch = batch_of(model)
    n = model.cfg.n_layers
    full, saved = saved_residuals(model, batch, range(1, n), logits=True)
    assert full is not None and sorted(saved) == list(range(1, n))
    for k in range(1, n):
        assert torch.allclose(logits_from(model, batch, k, saved[k]), full, atol=1e-5)
        # a steer at block k (its input or its output) applied to the shared-prefix pass
        for hook in ("blocks.{layer}.hook_resid_pre", "blocks.{layer}.hook_resid_post"):
            s = [Steer(torch.randn(1, model.cfg.d_model), (k,), 3.0, hook=hook)]
            with applied(model, s):
                steered = model(batch.tokens, attention_mask=batch.attention_mask)
                resumed = logits_from(model, batch, k, saved[k])
            assert not torch.allclose(steered, full, atol=1e-3)  # the steer does something
            assert torch.allclose(resumed, steered, atol=1e-5)


def test_blocks_below_do_not_run_and_a_stopped_pass_saves_only_what_is_asked(tiny):
    model = tiny("llama")
    batch = batch_of(model)
    logits, saved = saved_residuals(model, batch, [2])
    assert logits is None and list(saved) == [2]
    fired = []
    spy = [(f"blocks.{i}.hook_mlp_out", lambda *_, i=i, **__: fired.append(i)) for i in range(3)]
    with model.hooks(fwd_hooks=spy):
        logits_from(model, batch, 2, saved[2])
        assert fired == [2]
        model(batch.tokens, attention_mask=batch.attention_mask)  # every block runs again
    assert fired == [2, 0, 1, 2]


def test_bad_resume_input(tiny):
    model = tiny("llama")
    batch = batch_of(model)
    _, saved = saved_residuals(model, batch, [1])
    with pytest.raises(ValueError, match="out of range"):
        logits_from(model, batch, 3, saved[1])
    with pytest.raises(ValueError, match="does not match the batch"):
        logits_from(model, batch, 1, saved[1][:1])
