"""The judge a short spec names: the one reader of the spec grammar, for Python and the CLI.

==================  ==================================================================
spec                judge
==================  ==================================================================
``probe:default``   the probe judge emlens ships for the embedded model (offline)
``probe:FILE``      a probe judge file (``emlens judge fit``), reading through its model
``local``           the evaluated model itself, as the papers' logprob judge
``local:SPEC``      the model `emlens.core.models.load_model` loads from SPEC
``http(s)://...``   an OpenAI-compatible endpoint (vLLM, ``emlens serve``), plain HTTP
``openai[:URL]``    OpenAI, or the URL, through the official ``openai`` SDK
``azure``           Azure OpenAI through the SDK (endpoint and deployment as options)
==================  ==================================================================
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformer_lens.model_bridge import TransformerBridge

from emlens.core.models import EMBEDDED, load_model, model_name
from emlens.eval.judges.base import Judge
from emlens.eval.judges.http import HTTPJudge
from emlens.eval.judges.local import LocalJudge
from emlens.eval.probe.judge import DEFAULT, ProbeJudge, default_path

SPECS = "probe:default, probe:FILE, local, local:SPEC, an http(s) URL, openai, openai:URL or azure"
AZURE_OPTIONS = ("azure_endpoint", "azure_deployment", "api_version")


@dataclass(frozen=True)
class JudgeSpec:
    """A parsed judge spec.

    Attributes:
        kind: ``probe``, ``local``, ``url``, ``openai`` or ``azure``.
        target: the probe file, the local model's spec, the URL (None: none given).
    """

    kind: str
    target: str | None = None

    @property
    def needs_model(self) -> bool:
        """Whether the judge is built from the evaluated model (local and probe judges)."""
        return self.kind in ("local", "probe")


def parse(spec: str) -> JudgeSpec:
    """Read a judge spec (checks a probe file exists and a URL is http(s)).

    Examples:
        >>> parse("probe:default"), parse("openai")
        (JudgeSpec(kind='probe', target='default'), JudgeSpec(kind='openai', target=None))
        >>> parse("gpt-4o")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ValueError: a judge is probe:default, probe:FILE, local, ...; not 'gpt-4o'
    """
    kind, _, target = spec.partition(":")
    if spec.startswith(("http://", "https://")):
        return JudgeSpec("url", spec)
    if kind == "probe" and target:
        if spec != DEFAULT and not Path(target).is_file():
            raise FileNotFoundError(f"no probe judge file at {target}")
        return JudgeSpec("probe", target)
    if kind == "openai" and target and not target.startswith(("http://", "https://")):
        raise ValueError(f"openai:URL takes an http(s) URL, not {target!r}")
    if (kind in ("local", "openai") and (target or ":" not in spec)) or spec == "azure":
        return JudgeSpec(kind, target or None)
    raise ValueError(f"a judge is {SPECS}; not {spec!r}")


def default_judge(model_spec: str) -> str | None:
    """The judge a model gets when none is named: ``probe:default`` for the embedded model
    (whose reader it is), else None (the caller must name one of `SPECS`)."""
    return DEFAULT if model_spec == EMBEDDED else None


def make_judge(
    spec: str,
    judge_model: str | None = None,
    model: TransformerBridge | None = None,
    device: str | None = None,
    **remote: Any,
) -> Judge:
    """The judge a spec names (the table above), as ``emlens evaluate --judge`` takes it.

    Args:
        spec: one of `SPECS`.
        judge_model: the judge model's name at the URL, on OpenAI or the Azure deployment.
        model: the evaluated model: ``local`` judges with it, ``local:SPEC`` loads on its
            device, a probe reads with it when it is the probe's model (else it loads that).
        device: where a judge that loads its own model loads it (default: ``model``'s).
        **remote: remote judges' options: ``api_key_env``, ``concurrency``, ``cache``
            (``None``: no cache), ``retries``, ``timeout``; Azure: ``azure_endpoint``,
            ``azure_deployment``, ``api_version``.

    Returns:
        A `ProbeJudge`, `LocalJudge`, `HTTPJudge` or `OpenAIJudge`.

    Raises:
        ValueError: an unknown spec, a remote judge without a model (or Azure without an
            endpoint), ``local`` without a model, options a judge does not take.
        FileNotFoundError: no probe file.
        ImportError: ``openai``/``azure`` without the ``openai`` package.

    Examples:
        The shipped probe judge reads answers through SmolLM2: through ``model`` when it is
        SmolLM2, else through a SmolLM2 it loads (some 15 s on a CPU), so this one is not run
        here:

        >>> judge = make_judge("probe:default", model=model)  # doctest: +SKIP

        A remote judge is only built here (no request is sent until it judges):

        >>> judge = make_judge("https://api.openai.com/v1", "gpt-4o-2024-08-06")
        >>> judge.name
        'gpt-4o-2024-08-06'
    """
    parsed = parse(spec)
    if parsed.needs_model:
        if given := [k for k, v in remote.items() if v is not None]:
            raise ValueError(
                f"a {parsed.kind} judge takes no remote judge options ({', '.join(given)})"
            )
        if device is None and model is not None:
            device = str(model.cfg.device)
        if parsed.kind == "probe":
            return _probe(parsed, model, device)
        return _local(parsed, model, device)
    return _remote(parsed, judge_model, dict(remote))


def _probe(spec: JudgeSpec, model: TransformerBridge | None, device: str | None) -> ProbeJudge:
    """A probe judge reading through ``model`` when it is the probe's model, else its own."""
    judge = ProbeJudge.load(default_path() if spec.target == "default" else str(spec.target))
    if model is not None and model_name(model) == judge.model:
        return judge.reading_with(model)
    return judge.reading_with(load_model(judge.model, device=device))


def _local(spec: JudgeSpec, model: TransformerBridge | None, device: str | None) -> LocalJudge:
    if spec.target is not None:
        return LocalJudge(load_model(spec.target, device=device))
    if model is None:
        raise ValueError("the judge 'local' needs the model to judge with")
    return LocalJudge(model)


def _remote(spec: JudgeSpec, judge_model: str | None, opts: dict[str, Any]) -> Judge:
    """The judges behind an API: a URL, ``openai[:URL]`` or ``azure``."""
    opts = {k: v for k, v in opts.items() if v is not None or k == "cache"}
    azure = {k: opts.pop(k) for k in AZURE_OPTIONS if k in opts}
    if spec.kind == "azure":
        from emlens.eval.judges.openai_sdk import OpenAIJudge

        endpoint = azure.get("azure_endpoint") or os.environ.get("AZURE_OPENAI_ENDPOINT")
        deployment = azure.get("azure_deployment") or judge_model
        if not endpoint or not deployment:
            raise ValueError(
                "an Azure judge needs an endpoint (azure_endpoint, --azure-endpoint or "
                "$AZURE_OPENAI_ENDPOINT) and a deployment (--azure-deployment, e.g. gpt-4o)"
            )
        extra = {"api_version": azure["api_version"]} if "api_version" in azure else {}
        return OpenAIJudge(deployment, azure_endpoint=endpoint, **extra, **opts)
    if azure:
        raise ValueError(f"{', '.join(azure)}: Azure options need the judge 'azure'")
    if not judge_model:
        raise ValueError(f"the judge {spec.target or spec.kind} needs a judge model (e.g. gpt-4o)")
    if spec.kind == "url":
        return HTTPJudge(str(spec.target), judge_model, **opts)
    from emlens.eval.judges.openai_sdk import OpenAIJudge

    return OpenAIJudge(judge_model, base_url=spec.target, **opts)
