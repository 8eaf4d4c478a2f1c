"""LoRA scalars: the number A . x a rank-1 adapter reads at each token.

Convergent Linear Representations of EM (arXiv 2506.11618) reads each rank-1 adapter as one
number per token, the LoRA scalar A . x (x the adapter's input), before the scaling and B.
Here: scalars on answer tokens through forward hooks on peft's own ``lora_A`` modules of an
unmerged model; `emlens.organisms.probes` fits probes on them.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from emlens.core._arch import decoder
from emlens.core.data import Conversation
from emlens.core.models import input_device
from emlens.core.tokens import batches
from emlens.organisms.loss import conversation_rows

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedTokenizerBase


@dataclass
class LoraScalars:
    """Per-token LoRA scalars A . x on answer tokens.

    Attributes:
        values: ``values[i, j]`` is adapter ``names[j]`` at answer token i.
        sample: the conversation (index in the data) each token belongs to.
        names: the adapters, in layer order.
    """

    values: Float[Tensor, "n_tokens n_adapters"]
    sample: Int[Tensor, " n_tokens"]
    names: list[str]

    @property
    def n_samples(self) -> int:
        """The number of conversations."""
        return int(self.sample.max()) + 1 if len(self.sample) else 0

    def per_sample_mean(self) -> Float[Tensor, "n_samples n_adapters"]:
        """Mean scalar of each adapter over each conversation's answer tokens."""
        sums = torch.zeros(self.n_samples, len(self.names), dtype=torch.float64)
        sums.index_add_(0, self.sample, self.values.double())
        counts = torch.bincount(self.sample, minlength=self.n_samples).clamp_min(1)
        return (sums / counts[:, None]).float()


def _lora_a_modules(peft_model: PeftModel) -> dict[str, torch.nn.Module]:
    from peft.tuners.lora import LoraLayer

    out = {}
    for name, m in peft_model.named_modules():
        if isinstance(m, LoraLayer):
            for adapter in m.active_adapters:
                if adapter in m.lora_A:
                    r = m.r[adapter]
                    if r != 1:
                        raise ValueError(f"{name} is rank {r}: LoRA scalars need rank-1 adapters")
                    out[re.sub(r"^base_model\.model\.", "", name)] = m.lora_A[adapter]
    if not out:
        raise ValueError("the model has no active LoRA adapter (expected an unmerged PeftModel)")
    return out


@contextlib.contextmanager
def _captured(modules: dict[str, torch.nn.Module]) -> Iterator[dict[str, Tensor]]:
    """Inside the block, the last output of each rank-1 ``lora_A`` module, as ``[batch, pos]``."""
    captured: dict[str, Tensor] = {}

    def hook_for(name: str) -> Callable[..., None]:
        def fn(_module: torch.nn.Module, _inputs: object, output: Tensor) -> None:
            captured[name] = output[..., 0]

        return fn

    handles = [m.register_forward_hook(hook_for(n)) for n, m in modules.items()]
    try:
        yield captured
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def lora_scalars(
    peft_model: PeftModel,
    tok: PreTrainedTokenizerBase,
    data: Sequence[Conversation],
    batch_size: int = 8,
    progress: bool = True,
) -> LoraScalars:
    """The LoRA scalar A . x of every rank-1 adapter at every answer token of ``data``.

    Hooks read the outputs of peft's ``lora_A`` modules: A . x (dropout is off in eval mode),
    before the scaling and B. Only the decoder runs (no logits).

    Args:
        peft_model: an unmerged model (`emlens.organisms.adapters.load_unmerged`, or a run's
            ``TrainResult.model``) with rank-1 adapters.
        tok: its tokenizer.
        data: the conversations whose answer tokens are read.
        batch_size: conversations per forward pass.
        progress: show a progress bar.

    Returns:
        The scalars (float32, on the CPU), one row per answer token.

    Examples:
        A short run of a tiny model (one rank-1 adapter), read on two conversations:

        >>> from emlens.core.data import data_path, read_chat_jsonl
        >>> from emlens.organisms.adapters import load_unmerged
        >>> from emlens.organisms.config import TrainConfig
        >>> from emlens.organisms.training import train
        >>> data = data_path("narrow/risky_financial_advice.jsonl")
        >>> config = TrainConfig(max_steps=2, batch_size=2, grad_accum=1)
        >>> _ = train("tiny-llama", data, "runs/fin", config, progress=False)
        >>> model, tok = load_unmerged("tiny-llama", "runs/fin")
        >>> conversations = read_chat_jsonl(data)[:2]
        >>> lora_scalars(model, tok, conversations, progress=False).per_sample_mean().shape
        torch.Size([2, 1])
    """
    modules = _lora_a_modules(peft_model)
    stack = decoder(cast(PreTrainedModel, peft_model.get_base_model()))
    device = input_device(stack)
    names = list(modules)
    rows = conversation_rows(tok, data)
    values, samples = [], []
    was_training = peft_model.training
    peft_model.eval()
    bar = tqdm(
        batches(rows, batch_size, tok.pad_token_id),
        desc="lora scalars",
        total=math.ceil(len(rows) / batch_size),
        disable=not progress,
    )
    try:
        with _captured(modules) as captured:
            for batch in bar:
                captured.clear()
                stack(**batch.inputs(device))
                missing = [n for n in names if n not in captured]
                if missing:
                    raise RuntimeError(f"adapters {missing} did not run (merged or disabled?)")
                mask = batch.mask & batch.attention_mask
                per = [captured[n][mask.to(captured[n].device)].float().cpu() for n in names]
                values.append(torch.stack(per, dim=-1))
                samples.append(torch.tensor(batch.index)[:, None].expand_as(mask)[mask])
    finally:
        peft_model.train(was_training)
    return LoraScalars(torch.cat(values), torch.cat(samples), names)
