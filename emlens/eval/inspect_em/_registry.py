"""What inspect-ai finds through emlens's ``inspect_ai`` entry point: the ``emlens`` model
provider and the ``emlens/em`` task."""

from __future__ import annotations

from inspect_ai.model import ModelAPI, modelapi

from emlens.eval.inspect_em.task import em  # noqa: F401 (registers the task)


@modelapi(name="emlens")
def emlens_provider() -> type[ModelAPI]:
    from emlens.eval.inspect_em.provider import EmlensModelAPI

    return EmlensModelAPI
