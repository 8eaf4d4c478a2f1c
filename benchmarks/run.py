"""emlens benchmarks: ratios against baselines measured in the same run.

    make bench            # or: .venv/bin/python benchmarks/run.py

Prints one line per figure, ``name: value (target)``. Absolute times move by 2x between runs
on a shared machine; the ratios are what to read.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import batches, best_of, masked_means_from_hidden, rows

from emlens.core.activations import collect_means
from emlens.core.generation import generate
from emlens.core.interventions import Steer
from emlens.core.models import bridge, load_embedded_hf

N = 64
LAYERS = list(range(30))


def line(name: str, value: float, target: str) -> None:
    print(f"{name}: {value:.3f} ({target})", flush=True)


@torch.no_grad()
def bare_hf_extraction(hf, bs) -> None:
    """What a researcher writes without a library: hidden states, masked sums."""
    for b in bs:
        out = hf(b.tokens, attention_mask=b.attention_mask.long(), output_hidden_states=True)
        for layer in LAYERS:
            masked_means_from_hidden(out.hidden_states[layer + 1], b.mask)


def nnsight_extraction(hf, tok, bs) -> None:
    from nnsight import LanguageModel

    lm = LanguageModel(hf, tokenizer=tok)
    with torch.no_grad():
        for b in bs:
            saved = []
            with lm.trace({"input_ids": b.tokens, "attention_mask": b.attention_mask.long()}):
                for layer in LAYERS:
                    saved.append(lm.model.layers[layer].output[0].save())
            for h in saved:
                masked_means_from_hidden(h if h.dim() == 3 else h[None], b.mask)


def main() -> None:
    torch.set_num_threads(2)
    hf_bare, tok = load_embedded_hf()
    hf_bare.set_attn_implementation("eager")
    hf_b, tok_b = load_embedded_hf()
    model = bridge(hf_b, tok_b, "smollm2")
    bs = batches(tok, N)
    rs = rows(tok, N)
    n_tokens = sum(int(b.attention_mask.sum()) for b in bs)

    t_hf = best_of(lambda: bare_hf_extraction(hf_bare, bs))
    t_em = best_of(lambda: collect_means(model, rs, layers=LAYERS, progress=False))
    print(
        f"# extraction of {N} samples, {n_tokens} tokens, 30 layers: "
        f"emlens {n_tokens / t_em:.0f} tok/s, bare HF {n_tokens / t_hf:.0f} tok/s"
    )
    line("extraction_throughput_vs_bare_hf", t_hf / t_em, "target >= 0.9")

    t_nn = best_of(lambda: nnsight_extraction(hf_bare, tok, bs))
    line("extraction_time_vs_nnsight", t_em / t_nn, "target < 1")

    sv = Path(__file__).with_name("steering_vectors_bench.py")
    venv = Path(".venv-sv/bin/python")
    if venv.exists():
        res = subprocess.run([str(venv), str(sv), str(N)], capture_output=True, text=True)
        ratio_sv = float(res.stdout.strip().splitlines()[-1]) if res.returncode == 0 else None
        if ratio_sv is None:
            print(f"# steering-vectors run failed: {res.stderr[-500:]}")
        else:
            # Both sides are ratios to a bare HF forward measured in their own venv.
            line("extraction_time_vs_steering_vectors", (t_em / t_hf) / ratio_sv, "target < 1")
    else:
        print("# steering-vectors: run `make bench-sv` once to build its own venv (.venv-sv)")

    questions = [q for q, _ in [(c[0], 0) for c in __import__("common").conversations(16)][::2]]
    prompts = [
        tok.apply_chat_template(
            [{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True
        )
        for q in questions
    ]
    enc = tok(
        prompts, add_special_tokens=False, return_tensors="pt", padding=True, padding_side="left"
    )
    new = 32

    def hf_gen():
        hf_bare.generate(
            **enc,
            max_new_tokens=new,
            min_new_tokens=new,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
        )

    steer = [Steer(torch.randn(1, 576), (15,), 1.0)]

    def em_gen():
        generate(model, questions, steer, max_new_tokens=new, batch_size=len(questions))

    t_hg = best_of(hf_gen)
    t_eg = best_of(em_gen)
    line("steered_generation_tokens_per_s_vs_bare_hf", t_hg / t_eg, "target >= 0.8")

    rss = {}
    for n in (64, 512):
        out = subprocess.run(
            [sys.executable, str(Path(__file__).with_name("rss_extraction.py")), str(n)],
            capture_output=True,
            text=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        rss[n] = float(out.stdout.strip().splitlines()[-1])
    print(f"# peak RSS: N=64 {rss[64]:.0f} MB, N=512 {rss[512]:.0f} MB")
    line("peak_rss_extraction_n512_vs_n64", rss[512] / rss[64], "target <= 1.1")


if __name__ == "__main__":
    main()
