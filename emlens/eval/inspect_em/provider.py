"""The ``emlens`` model provider for inspect-ai: a hooked emlens model, steered or ablated.

``--model emlens/SPEC`` loads ``SPEC`` as `emlens.load_model` does (``smollm2``, ``tiny-llama``,
a folder, a hub name); model arguments: ``steer`` (``FILE:LAYERS:SCALE``, one or a list),
``ablate`` (``FILE:LAYER``), ``device``, ``dtype``. Each completion is the one
``emlens serve`` would give for the same messages (`emlens.eval.serve.server.complete`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from inspect_ai.model import (
    ChatCompletionChoice,
    ChatMessage,
    ChatMessageAssistant,
    GenerateConfig,
    ModelAPI,
    ModelOutput,
    ModelUsage,
)
from inspect_ai.tool import ToolChoice, ToolInfo

from emlens.core.interventions import Intervention
from emlens.eval.inspect_em._shared import MODEL_LOCK, shared_model

DEFAULT_MAX_TOKENS = 128  # `emlens evaluate`'s answer length, when inspect sets none


def _specs(value: Any, name: str) -> list[str]:
    """A model argument given once (a string) or several times (a list of strings)."""
    if value is None:
        return []
    specs = [value] if isinstance(value, str) else value
    if not isinstance(specs, list | tuple) or not all(isinstance(s, str) for s in specs):
        raise ValueError(f"-M {name} takes a string or a list of strings, not {value!r}")
    return list(specs)


def interventions_of(model: Any, steer: Any = None, ablate: Any = None) -> list[Intervention]:
    """``steer`` and ``ablate`` specs (the grammar of ``emlens generate --steer/--ablate``),
    the directions read and checked against ``model``."""
    from emlens.cli._checks import ablate_spec, checked_interventions, steer_spec

    # a bad spec: a ValueError that says what it expects
    steers = [steer_spec(spec) for spec in _specs(steer, "steer")]
    ablations = [ablate_spec(spec) for spec in _specs(ablate, "ablate")]
    return checked_interventions(model, steers, ablations)


def request_body(messages: list[ChatMessage], config: GenerateConfig) -> dict[str, Any]:
    """The Chat Completions body for inspect's messages and generation config."""
    body: dict[str, Any] = {
        "messages": [{"role": m.role, "content": m.text} for m in messages],
        "max_tokens": config.max_tokens or DEFAULT_MAX_TOKENS,
        "n": config.num_choices or 1,
    }
    for key, value in (("temperature", config.temperature), ("top_p", config.top_p)):
        if value is not None:
            body[key] = value
    if config.seed is not None:
        body["seed"] = config.seed
    return body


class EmlensModelAPI(ModelAPI):
    """A model emlens loads, answering under its interventions (``-M steer=...``)."""

    def __init__(
        self,
        model_name: str,
        base_url: str | None = None,
        api_key: str | None = None,
        config: GenerateConfig = GenerateConfig(),  # noqa: B008 (inspect's signature)
        steer: Any = None,
        ablate: Any = None,
        device: str | None = None,
        dtype: str | None = None,
        **model_args: Any,
    ) -> None:
        super().__init__(model_name, base_url, api_key, [], config)
        if model_args:
            raise ValueError(
                f"the emlens provider takes -M steer, ablate, device and dtype, not "
                f"{', '.join(sorted(model_args))}"
            )
        self.model = shared_model(model_name, device, dtype)
        self.interventions = interventions_of(self.model, steer, ablate)

    def max_tokens(self) -> int | None:
        return DEFAULT_MAX_TOKENS

    def _complete(self, body: dict[str, Any]) -> dict[str, Any]:
        from emlens.eval.serve.server import complete

        with MODEL_LOCK:  # no judge reads the model while it is steered
            return complete(self.model, body, self.interventions, self.model_name)

    async def generate(
        self,
        input: list[ChatMessage],
        tools: list[ToolInfo],
        tool_choice: ToolChoice,  # noqa: ARG002
        config: GenerateConfig,
    ) -> ModelOutput:
        if tools:
            raise ValueError("emlens models do not call tools")
        reply = await asyncio.to_thread(self._complete, request_body(input, config))
        choices = [
            ChatCompletionChoice(
                message=ChatMessageAssistant(
                    content=c["message"]["content"], model=self.model_name, source="generate"
                ),
                stop_reason="stop" if c["finish_reason"] == "stop" else "max_tokens",
            )
            for c in reply["choices"]
        ]
        used = reply["usage"]
        usage = ModelUsage(
            input_tokens=used["prompt_tokens"],
            output_tokens=used["completion_tokens"],
            total_tokens=used["prompt_tokens"] + used["completion_tokens"],
        )
        return ModelOutput(model=self.model_name, choices=choices, usage=usage)
