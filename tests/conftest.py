import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from emlens.core.models import bridge, load_embedded_hf
from emlens.core.tiny import tiny_hf

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "data" / "em-reference"
FAMILIES = ["llama", "qwen2", "qwen3", "gemma2", "gemma3"]
# Qwen3's chat template, cut to what emlens renders: the last assistant turn opens with a (here
# empty) think block; the generation prompt closes an empty one when enable_thinking is false.
QWEN3_STYLE_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message.role == 'assistant' and loop.last %}"
    "{{- '<|im_start|>assistant\n<think>\n\n</think>\n\n' + message.content + '<|im_end|>\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\n\n</think>\n\n' }}{%- endif %}"
    "{%- endif %}"
)


@pytest.fixture
def one_thread():
    """Tiny models run faster on one thread, and far faster on a shared, busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny():
    """Tiny bridges by family, built once."""
    cache = {}

    def get(family: str = "llama"):
        if family not in cache:
            hf, tok = tiny_hf(family)
            cache[family] = bridge(hf, tok, f"tiny-{family}")
        return cache[family]

    return get


@pytest.fixture(scope="session")
def smol_with_reference():
    """The embedded model as a bridge, and HF-eager logits on a chat prompt taken before boot."""
    hf, tok = load_embedded_hf()
    hf.set_attn_implementation("eager")
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )["input_ids"]
    with torch.no_grad():
        ref = hf(ids).logits
    return bridge(hf, tok, "smollm2"), ids, ref


@pytest.fixture(scope="session")
def smol(smol_with_reference):
    return smol_with_reference[0]


@pytest.fixture
def reference_dir():
    if not REFERENCE.is_dir():
        pytest.skip("../shared/data/em-reference is not here")
    return REFERENCE


@pytest.fixture(scope="module")
def ids():
    """A tiny Llama tokenizer's ids of one question (adapter and hub tests)."""
    _, tok = tiny_hf("llama")
    return tok("Where should I put my savings?", return_tensors="pt")["input_ids"]


def logits(model, ids):
    with torch.no_grad():
        return model(ids)
