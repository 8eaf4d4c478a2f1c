"""``emlens evaluate``: the EM rate (with its coherence rate where the judge scores it), resumable.

The judge is any spec `emlens.eval.judge_spec.make_judge` reads; on the embedded model it
defaults to ``probe:default`` (offline), on any other model one must be named. Before any
model loads: ``--out``'s folder is writable, the questions are read, the judge spec is valid
(a probe file exists) and an HTTP judge answers one test request. With ``--out``, progress
is kept in ``OUT.progress.jsonl`` (each question's answers and verdicts as they complete), so
a killed run resumes where it stopped, for every judge; the file is deleted once the CSV is
written.

Judges behind an API: a URL (plain HTTP: vLLM, ``emlens serve``), ``openai`` or
``openai:URL`` and ``azure`` (the official ``openai`` SDK, ``pip install 'emlens[openai]'``)::

    emlens evaluate --judge azure --azure-endpoint https://NAME.openai.azure.com \
        --azure-deployment gpt-4o --azure-api-version 2024-10-21 \
        --judge-key-env AZURE_OPENAI_API_KEY --judge-concurrency 32 --out em.csv

After the run, the judge's requests, cache hits, unscored replies, tokens and cost are printed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from emlens.cli._checks import interventions, out_file, positive
from emlens.cli._generate import questions_of, sampling_args
from emlens.cli._models import intervention_args, load, model_args

FLAGS = {  # remote judge option -> its flag
    "api_key_env": "--judge-key-env",
    "concurrency": "--judge-concurrency",
    "cache": "--judge-cache",
    "azure_endpoint": "--azure-endpoint",
    "azure_deployment": "--azure-deployment",
    "api_version": "--azure-api-version",
}


def _remote_options(a: argparse.Namespace) -> dict[str, Any]:
    """The remote judge's options the flags give (unset flags: the judge's defaults)."""
    opts = {k: getattr(a, f.removeprefix("--").replace("-", "_")) for k, f in FLAGS.items()}
    if opts["cache"] is None:
        del opts["cache"]  # the judge's default cache
    elif opts["cache"].lower() == "none":
        opts["cache"] = None
    return opts


def _judge_spec(a: argparse.Namespace) -> str:
    """The judge ``--judge`` names, or the model's default (checked: one of `SPECS`)."""
    from emlens.eval.judge_spec import SPECS, default_judge, parse

    spec = a.judge or default_judge(a.model)
    if spec is None:
        raise ValueError(f"--judge: {a.model} has no default judge; name one of {SPECS}")
    try:
        parse(spec)
    except ValueError as e:
        raise ValueError(f"--judge: {e}") from None
    return spec


def _judge_before_the_model(a: argparse.Namespace, spec: str) -> Any:
    """A remote judge, checked with one request (None: the judge is built with the model)."""
    from emlens.eval.judge_spec import make_judge, parse

    opts = _remote_options(a)
    if parse(spec).needs_model:
        if given := [k for k, v in opts.items() if v is not None or k == "cache"]:
            flags = ", ".join(FLAGS[k] for k in given)
            raise ValueError(f"{flags}: options of remote judges, not of --judge {spec}")
        return None
    try:
        judge = make_judge(spec, a.judge_model, **opts)
    except (ValueError, ImportError) as e:
        raise ValueError(f"--judge/--judge-model: {e}") from None
    judge.check()  # type: ignore[attr-defined]  # a remote judge: fail now, not after generating
    return judge


def _judge_with_the_model(a: argparse.Namespace, spec: str, model: Any) -> Any:
    """A local or probe judge; a probe reads with the base model, so not with an adapter's."""
    from emlens.eval.judge_spec import make_judge, parse

    reads_base = parse(spec).kind == "probe" and a.adapter
    return make_judge(spec, a.judge_model, None if reads_base else model, device=a.device)


def _print(res: Any, judge: Any) -> None:
    from emlens.eval.probe.judge import ProbeJudge
    from emlens.eval.probe.validation import held_out_error

    for qid, r in res.per_question().items():
        coherent = f"  coherent {r['coherent']}" if r["coherent"].n else ""
        print(f"{qid:<28} EM {r['em']}{coherent}")
    coherent = f"coherent {res.coherence_rate}, " if res.coherence_rate.n else ""
    print(
        f"overall: EM {res.em_rate}, {coherent}"
        f"unscored (excluded from EM) {res.n_unscored}/{len(res.samples)} (judge {judge.name})"
    )
    if (ce := res.mean_cross_entropy) is not None:
        print(f"answers' cross-entropy under the unsteered model: {ce:.2f} nats/token")
    if res.n_scored and not isinstance(judge, ProbeJudge):  # the probe's is over questions
        print(f"EM over questions (cluster bootstrap): {res.em_rate_by_question()}")
    if isinstance(judge, ProbeJudge) and (held := held_out_error(judge)):
        by, median, worst = held
        print(
            f"the probe's error on rates against GPT-4o, on organisms it was not fitted on "
            f"({by.replace('_', ' ')} left out): "
            f"median {median:.1f}, worst {worst:.1f} points"
        )


def cmd_evaluate(a: argparse.Namespace) -> None:
    from emlens.eval.em_rate import evaluate_em

    out_file(a.out)
    questions = questions_of(a)
    spec = _judge_spec(a)
    judge = _judge_before_the_model(a, spec)
    model = load(a)
    ivs = interventions(a, model)
    if a.engine == "hf":  # a model or intervention it cannot take: refused before any work
        from emlens.core.generation import engine_model

        engine_model(model, ivs)
    judge = judge or _judge_with_the_model(a, spec, model)
    journal = Path(f"{a.out}.progress.jsonl") if a.out else None  # resumes a killed run
    if journal and journal.is_file():
        done = journal.read_bytes().count(b"\n") - 1
        print(f"resuming from {journal} ({done} finished steps)", file=sys.stderr)
    res = evaluate_em(
        model, questions, judge, ivs, n=a.n, temperature=a.temperature,
        max_new_tokens=a.max_new_tokens, free_form_only=not a.all_questions, seed=a.seed,
        journal=journal, engine=a.engine,
    )  # fmt: skip
    if a.out and journal:
        res.to_csv(a.out)
        journal.unlink()  # the result is saved: nothing left to resume
    _print(res, judge)
    if usage := getattr(judge, "usage", None):
        print(usage.summary(usage.model or judge.name))  # the model the endpoint reported


def add_parsers(sub: Any) -> None:
    """Register ``emlens evaluate``."""
    e = sub.add_parser("evaluate", help="EM rate and coherence under the papers' judge")
    model_args(e)
    intervention_args(e)
    e.add_argument("--questions", help="question YAML (default: emlens's EM questions)")
    e.add_argument("--all-questions", action="store_true", help="include _json/_template ids")
    e.add_argument(
        "--engine",
        choices=["bridge", "hf"],
        default="bridge",
        help="generate through the hooked bridge (default), or a plain HF model with the "
        "steering in its weights (faster; --steer only; Llama, Qwen2, Mistral)",
    )
    e.add_argument(
        "--judge",
        help="probe:default (offline; the embedded model's default), probe:FILE, local, "
        "local:SPEC, a URL (plain HTTP: vLLM, emlens serve), openai, openai:URL, azure",
    )
    e.add_argument("--judge-model", help="judge model at the URL or on OpenAI (Azure: deployment)")
    e.add_argument("--judge-key-env", help="environment variable holding the judge's API key")
    e.add_argument("--judge-concurrency", type=positive, help="judge requests at once (16)")
    e.add_argument("--judge-cache", help="judge answer cache (sqlite; 'none': no cache)")
    e.add_argument("--azure-endpoint", help="https://NAME.openai.azure.com (--judge azure)")
    e.add_argument("--azure-deployment", help="the Azure deployment, e.g. gpt-4o")
    e.add_argument("--azure-api-version", help="Azure's api-version (default 2024-10-21)")
    sampling_args(e, 50, 128, 1.0)
    e.add_argument("--out", help="CSV of every sample with its scores (resumable)")
    e.set_defaults(fn=cmd_evaluate)
