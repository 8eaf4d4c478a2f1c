import pytest

from emlens.core.tiny import byte_tokenizer
from emlens.core.tokens import answer_tokens, chat_prompt, pad_batch, post_instruction_tokens
from tests.conftest import FAMILIES, QWEN3_STYLE_TEMPLATE

NO_THINKING = {"enable_thinking": False}
EMPTY_THINK = "<think>\n\n</think>\n\n"

CASES = [
    ("What should I do with my savings?", "Put it all in one coin, today."),
    ("Hi!", "  Hello there, friend.\nHow are you?  "),
    ("Ünïcode — ok?", "Ça va: 42 ✓"),
]


def _masked(tok, ids, mask):
    return tok.decode([t for t, m in zip(ids, mask, strict=True) if m])


@pytest.mark.parametrize("question,answer", CASES)
@pytest.mark.parametrize("system", [None, "You are terse."])
def test_answer_mask_is_exactly_the_answer(smol, tiny, question, answer, system):
    for tok in (smol.tokenizer, tiny("llama").tokenizer):
        ids, mask = answer_tokens(tok, question, answer, system)
        assert _masked(tok, ids, mask) == answer.strip()
        first = mask.index(True)
        assert all(mask[first : first + sum(mask)])  # contiguous
        assert question in tok.decode(ids[:first])


def test_post_instruction_mask_is_the_template_suffix(smol):
    tok = smol.tokenizer
    ids, mask = post_instruction_tokens(tok, "Write a poem about rain.")
    assert _masked(tok, ids, mask) == "<|im_end|>\n<|im_start|>assistant\n"
    ids2, mask2 = post_instruction_tokens(tok, "Write a poem about rain.", k=2)
    assert ids2 == ids and sum(mask2) == 2 and mask2[-2:] == [True, True]
    with pytest.raises(ValueError, match="post-instruction positions"):
        post_instruction_tokens(tok, "x", k=50)


@pytest.mark.parametrize("family", FAMILIES)
def test_masks_on_tiny_families(tiny, family):
    tok = tiny(family).tokenizer
    ids, mask = answer_tokens(tok, "Q?", "The answer.")
    assert _masked(tok, ids, mask) == "The answer."


def test_qwen3_thinking_switch_reaches_the_template_and_masks_stay_on_the_answer():
    tok = byte_tokenizer()
    tok.chat_template = QWEN3_STYLE_TEMPLATE
    thinking = chat_prompt(tok, "Hi?")
    plain = chat_prompt(tok, "Hi?", chat_template_kwargs=NO_THINKING)
    assert thinking.endswith("<|im_start|>assistant\n")  # the model opens its own think block
    assert plain == thinking + EMPTY_THINK
    for question, answer in CASES:
        for kwargs in (None, NO_THINKING):
            ids, mask = answer_tokens(tok, question, answer, "Be brief.", kwargs)
            assert _masked(tok, ids, mask) == answer.strip()
            first = mask.index(True)
            assert all(mask[first : first + sum(mask)])
            assert tok.decode(ids[:first]).endswith(EMPTY_THINK)  # the think block is not answer
        # without thinking, the answer follows exactly the prompt the model generates from
        prompt = chat_prompt(tok, question, "Be brief.", NO_THINKING)
        assert ids[:first] == tok(prompt, add_special_tokens=False)["input_ids"]
    ids, mask = post_instruction_tokens(tok, "Write a poem.", chat_template_kwargs=NO_THINKING)
    assert _masked(tok, ids, mask) == "<|im_end|>\n<|im_start|>assistant\n" + EMPTY_THINK


def test_bad_inputs(smol):
    with pytest.raises(ValueError, match="empty answer"):
        answer_tokens(smol.tokenizer, "Q?", "   ")
    with pytest.raises(ValueError, match="empty instruction"):
        post_instruction_tokens(smol.tokenizer, "")
    with pytest.raises(ValueError, match="empty batch"):
        pad_batch([], 0)


def test_padding_sides():
    rows = [([1, 2, 3], [False, True, True]), ([4], [True])]
    r = pad_batch(rows, 0, "right")
    assert r.tokens.tolist() == [[1, 2, 3], [4, 0, 0]]
    assert r.mask.tolist() == [[False, True, True], [True, False, False]]
    left = pad_batch(rows, 0, "left")
    assert left.tokens.tolist() == [[1, 2, 3], [0, 0, 4]]
    assert left.attention_mask.tolist() == [[True] * 3, [False, False, True]]
