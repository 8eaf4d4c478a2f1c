import pytest
import torch

from emlens.core.data import Conversation
from emlens.core.tiny import tiny_hf
from emlens.core.tokens import pad_batch
from emlens.organisms.loss import IGNORE, answer_labels, answer_loss, conversation_rows
from tests.conftest import FAMILIES
from tests.organisms.conftest import CONVS

pytestmark = pytest.mark.usefixtures("one_thread")


def test_labels_are_minus_100_exactly_off_the_answer():
    _, tok = tiny_hf("llama")
    convs = [Conversation("Q?", "A short answer."), Conversation("Longer question here?", "Yes.")]
    batch = pad_batch(conversation_rows(tok, convs), tok.pad_token_id)
    labels = answer_labels(batch)
    for row, conv, lab in zip(batch.tokens, convs, labels, strict=True):
        on = lab != IGNORE
        assert torch.equal(lab[on], row[on])
        assert tok.decode(row[on]) == conv.answer  # the answer, no template, no padding
    assert (labels[~batch.attention_mask] == IGNORE).all()


@pytest.mark.parametrize("family", FAMILIES)  # untied, tied, q/k norms, soft-capping, windows
def test_answer_only_unembedding_equals_the_full_logits_loss(family):
    hf, tok = tiny_hf(family)
    batch = pad_batch(conversation_rows(tok, CONVS[:5]), tok.pad_token_id)
    loss, n = answer_loss(hf, batch)
    out = hf(
        input_ids=batch.tokens,
        attention_mask=batch.attention_mask.long(),
        labels=answer_labels(batch),
    )
    assert n == int((answer_labels(batch)[:, 1:] != IGNORE).sum())
    assert torch.allclose(loss / n, out.loss, atol=1e-5)
