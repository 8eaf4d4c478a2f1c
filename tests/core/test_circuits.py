import pytest
import torch

from emlens.core.circuits import (
    component_means,
    component_outputs,
    component_scores,
    components,
    mean_ablated,
    overlap,
    top_components,
)
from emlens.core.tokens import answer_tokens

QA = [("Why is the sky blue?", "Light scatters."), ("Name a fruit.", "An apple, I think.")]


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_component_projections_add_up_to_the_residual_stream(tiny, family):
    model = tiny(family)
    rows = [answer_tokens(model.tokenizer, q, a) for q, a in QA]
    r = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(0))
    per = component_outputs(model, rows, r, layers=[0, 1])
    assert per.shape == (2 * (model.cfg.n_heads + 1),)
    # resid_post(1) - resid_pre(0) is exactly the sum of every head's and MLP's output
    # (Qwen2's attention biases live in q/k/v, not in the output projection).
    u = r / r.norm()
    diffs = []
    for ids, mask in rows:
        _, c = model.run_with_cache(torch.tensor([ids]))
        d = (c["blocks.1.hook_resid_post"] - c["blocks.0.hook_resid_pre"])[0] @ u
        diffs.append(d[torch.tensor(mask)])
    assert per.sum() == pytest.approx(float(torch.cat(diffs).mean()), abs=1e-3)


def test_scores_overlap_and_top_components(tiny):
    model = tiny("llama")
    tok = model.tokenizer
    pos = [answer_tokens(tok, q, a) for q, a in QA]
    neg = [answer_tokens(tok, q, a.upper()) for q, a in QA]
    r = torch.ones(model.cfg.d_model)
    comps = components(model)
    s = component_scores(model, pos, neg, r)
    assert s.shape == (len(comps),)
    top = top_components(comps, s, 3)
    assert s[comps.index(top[0])] == s.max()
    same = overlap(comps, s, s, 3)
    assert same.jaccard == 1 and same.spearman == pytest.approx(1)
    flipped = overlap(comps, s, -s, 3)
    assert flipped.jaccard == 0 and flipped.spearman == pytest.approx(-1)
    with pytest.raises(ValueError, match="non-zero vector"):
        component_outputs(model, pos, torch.zeros(model.cfg.d_model))


def test_mean_ablation_replaces_outputs_and_cleans_up(tiny):
    model = tiny("llama")
    rows = [answer_tokens(model.tokenizer, q, a) for q, a in QA]
    comps = components(model, [1])
    means = component_means(model, rows, [comps[0], comps[-1]])
    toks = torch.tensor([rows[0][0]])
    with torch.no_grad():
        before = model(toks)
        with mean_ablated(model, means):
            _, c = model.run_with_cache(
                toks, names_filter=["blocks.1.attn.hook_z", "blocks.1.hook_mlp_out"]
            )
            changed = model(toks)
        after = model(toks)
    assert torch.allclose(
        c["blocks.1.attn.hook_z"][0, :, 0], means[comps[0]].expand(len(rows[0][0]), -1)
    )
    assert torch.allclose(
        c["blocks.1.hook_mlp_out"][0], means[comps[-1]].expand(len(rows[0][0]), -1)
    )
    assert not torch.allclose(before, changed) and torch.equal(before, after)
