"""llama.cpp steered with an exported control vector moves as emlens's steering does.

Runs where llama-cpp-python is installed (it compiles llama.cpp from source; how to install it
is in docs/formats.md), and is skipped elsewhere. The control vector file is read as llama.cpp's
``common_control_vector_load_one`` reads it (``direction.N`` at offset ``n_embd * (N - 1)``,
times the scale of ``--control-vector-scaled``; read here with ``gguf``, not with emlens) and
applied with ``llama_set_adapter_cvec`` over layers ``1 .. n_layer``, as ``llama-cli`` does by
default. The GGUF is quantised and emlens runs its float32 dequantisation, so the scores differ
a little: the test compares the direction of each shift, not its size.
"""

import ctypes

import numpy as np
import pytest
import torch
from gguf import GGUFReader

from emlens.core.compare import random_like
from emlens.core.data import general_questions
from emlens.core.directions import em_direction_from_pairs
from emlens.core.formats import export_control_vector
from emlens.core.interventions import steer
from emlens.core.models import embedded_gguf_path
from emlens.core.tokens import answer_tokens
from emlens.eval.metrics import contrastive_scores

llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")

LAYER = 15
SCALE = 4.0  # the tutorial's: adds 4 * the mean difference (norm ~15 against ~130 at layer 15)


def cvec_buffer(path, scale: float, n_embd: int, n_layer: int) -> np.ndarray:
    """The buffer llama.cpp builds from ``--control-vector-scaled path:scale``."""
    buf = np.zeros(n_embd * n_layer, dtype=np.float32)
    for t in GGUFReader(str(path)).tensors:
        layer = int(t.name.removeprefix("direction."))
        assert 1 <= layer < n_layer and t.data.shape == (n_embd,), t.name
        buf[n_embd * (layer - 1) : n_embd * layer] += scale * t.data
    return buf


class LlamaScorer:
    """Mean answer log-probs under llama.cpp, on emlens's own token ids."""

    def __init__(self, tok):
        path = str(embedded_gguf_path())
        self.llm = llama_cpp.Llama(path, n_ctx=1024, logits_all=True, verbose=False, seed=0)
        self.tok = tok

    def set_cvec(self, buf: np.ndarray | None) -> None:
        apply = getattr(llama_cpp, "llama_set_adapter_cvec", None)
        apply = apply or llama_cpp.llama_apply_adapter_cvec  # before 0.3.17
        n_embd, n_layer = self.llm.n_embd(), llama_cpp.llama_model_n_layer(self.llm.model)
        if buf is None:
            assert apply(self.llm.ctx, None, 0, n_embd, 0, 0) == 0
            return
        data = buf.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        assert apply(self.llm.ctx, data, buf.size, n_embd, 1, n_layer) == 0

    def mean_logprob(self, question: str, answer: str) -> float:
        ids, mask = answer_tokens(self.tok, question, answer)
        self.llm.reset()
        self.llm.eval(ids)
        logits = torch.tensor(np.array(self.llm.scores[: len(ids)]))
        logp = logits.log_softmax(-1)[:-1].gather(-1, torch.tensor(ids[1:])[:, None])[:, 0]
        m = torch.tensor(mask[1:])
        return float(logp[m].mean())

    def contrastive(self, pairs) -> np.ndarray:
        return np.array(
            [
                self.mean_logprob(p.question, p.misaligned)
                - self.mean_logprob(p.question, p.aligned)
                for p in pairs
            ]
        )


def test_llama_cpp_steers_the_same_way(smol, tmp_path):
    pairs = general_questions()
    train, held = pairs[0::2][:16], pairs[1::2][:4]  # 24 llama.cpp passes, ~6 s each here
    em = em_direction_from_pairs(smol, train, layers=[LAYER], progress=False)
    rnd = random_like(em, seed=0)
    scorer = LlamaScorer(smol.tokenizer)
    try:
        shifts, base_em, base_lc = _shifts(smol, scorer, em, rnd, held, tmp_path)
    finally:
        scorer.llm.close()
    print("baseline emlens", np.round(base_em, 3), "llama.cpp", np.round(base_lc, 3))
    assert np.corrcoef(base_em, base_lc)[0, 1] > 0.9  # the same model, up to quantisation
    ours, lc = shifts["em"]
    assert (np.sign(ours) == np.sign(lc)).all(), shifts["em"]
    ours, lc = shifts["random"]
    assert (np.sign(ours) == np.sign(lc)).all() and np.corrcoef(ours, lc)[0, 1] > 0.8


def _shifts(smol, scorer, em, rnd, held, tmp_path):
    """Per held-out pair, the shift of the contrastive score under each direction's steering,
    by emlens and by llama.cpp, and both baselines."""
    n_embd, n_layer = smol.cfg.d_model, smol.cfg.n_layers
    scorer.set_cvec(None)
    base_lc = scorer.contrastive(held)
    base_em = contrastive_scores(smol, held).numpy()
    shifts = {}
    for name, ds in {"em": em, "random": rnd}.items():
        path = export_control_vector(ds, tmp_path / f"{name}.gguf", layers=[LAYER])
        scorer.set_cvec(cvec_buffer(path, SCALE, n_embd, n_layer))
        lc = scorer.contrastive(held) - base_lc
        scorer.set_cvec(None)
        ours = (contrastive_scores(smol, held, [steer(ds, [LAYER], SCALE)]) - base_em).numpy()
        shifts[name] = (ours, lc)
        print(name, "emlens", np.round(ours, 3), "llama.cpp", np.round(lc, 3))
    return shifts, base_em, base_lc
