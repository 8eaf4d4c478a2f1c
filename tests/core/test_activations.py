import pytest
import torch

from emlens.core.activations import ActivationSummary, collect_means
from emlens.core.tokens import answer_tokens, post_instruction_tokens
from tests.conftest import FAMILIES

QA = [(f"Question {i}: what now?", "word " * (i + 2) + "end.") for i in range(7)]


def _rows(tok):
    return [answer_tokens(tok, q, a) for q, a in QA]


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_equals_unbatched_and_matches_the_cache(tiny, family):
    model = tiny(family)
    rows = _rows(model.tokenizer)
    a = collect_means(model, rows, batch_size=3, per_sample=True, progress=False)
    b = collect_means(model, rows, batch_size=1, per_sample=True, progress=False)
    assert torch.allclose(a.mean, b.mean, atol=1e-5)
    assert torch.allclose(a.per_sample, b.per_sample, atol=1e-5)
    # The definition: token-weighted mean over every masked token of every sample.
    acts = []
    for ids, mask in rows:
        _, cache = model.run_with_cache(torch.tensor([ids]))
        stack = torch.stack([cache[f"blocks.{ly}.hook_resid_post"][0] for ly in a.layers])
        acts.append(stack[:, torch.tensor(mask)])
    want = torch.cat(acts, dim=1).double().mean(1).float()
    assert torch.allclose(a.mean, want, atol=1e-4)
    assert a.n_tokens == sum(sum(m) for _, m in rows)
    assert torch.allclose(a.per_sample[3], acts[3].mean(1), atol=1e-4)


def test_embedded_model_batched_equals_unbatched(smol):
    rows = [post_instruction_tokens(smol.tokenizer, q) for q, _ in QA[:4]]
    rows += _rows(smol.tokenizer)[:4]
    a = collect_means(smol, rows, layers=[3, 15], batch_size=8, progress=False)
    b = collect_means(smol, rows, layers=[3, 15], batch_size=1, progress=False)
    assert torch.allclose(a.mean, b.mean, atol=1e-3 * a.mean.abs().max())


def test_other_hooks_and_layer_subsets(tiny):
    model = tiny("llama")
    s = collect_means(model, _rows(model.tokenizer), hook="blocks.{layer}.hook_mlp_out", layers=[1])
    assert s.mean.shape == (1, model.cfg.d_model) and s.layers == [1]


def test_bad_inputs_are_clear(tiny):
    model = tiny("llama")
    rows = _rows(model.tokenizer)
    with pytest.raises(ValueError, match="empty dataset"):
        collect_means(model, [])
    with pytest.raises(ValueError, match="out of range"):
        collect_means(model, rows, layers=[99])
    with pytest.raises(ValueError, match="placeholder"):
        collect_means(model, rows, hook="blocks.0.hook_resid_post")
    with pytest.raises(ValueError, match="do not exist"):
        collect_means(model, rows, hook="blocks.{layer}.hook_nothing")
    with pytest.raises(ValueError, match="no masked token"):
        collect_means(model, [(rows[0][0], [False] * len(rows[0][0]))])


def test_layer_order_does_not_matter(tiny):
    model = tiny("llama")
    rows = _rows(model.tokenizer)
    both = collect_means(model, rows, layers=[2, 0], per_sample=True, progress=False)
    one = collect_means(model, rows, layers=[0], per_sample=True, progress=False)
    assert both.layers == [2, 0]
    assert torch.allclose(both.mean[1], one.mean[0], atol=1e-5)
    assert torch.allclose(both.per_sample[:, 1], one.per_sample[:, 0], atol=1e-5)


def test_a_summary_from_sample_means_and_counts_is_the_token_weighted_mean(tiny):
    model = tiny("llama")
    rows = _rows(model.tokenizer)
    whole = collect_means(model, rows, per_sample=True, progress=False)
    counts = [sum(m) for _, m in rows]
    pooled = ActivationSummary.from_samples(whole.per_sample, counts, whole.layers)
    assert torch.allclose(pooled.mean.float(), whole.mean, atol=1e-5)
    assert (pooled.n_samples, pooled.n_tokens) == (whole.n_samples, whole.n_tokens)
    with pytest.raises(ValueError, match="positive counts"):
        ActivationSummary.from_samples(whole.per_sample, [0] * len(rows), whole.layers)
