"""``emlens evaluate``: the EM rate and coherence under the papers' judge, resumable.

Before any model loads: ``--out``'s folder is writable, the questions are read, and an HTTP
judge answers one test request. With ``--out``, progress is kept in ``OUT.progress.jsonl``
(each question's answers and scores as they complete), so a killed run resumes where it
stopped; the file is deleted once the CSV is written.

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

from emlens.cli._checks import input_file, interventions, out_file, positive
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


def _judge_before_the_model(a: argparse.Namespace) -> Any:
    """A remote judge, checked with one request (None: the judge needs the model)."""
    from emlens.eval.judge import make_judge

    if a.judge.startswith("probe:"):
        spec = a.judge.removeprefix("probe:")
        if spec != "default":
            input_file(spec, "--judge probe:")
        return None
    opts = _remote_options(a)
    if a.judge == "local" or a.judge.startswith("local:"):
        if given := [k for k, v in opts.items() if v is not None or k == "cache"]:
            flags = ", ".join(FLAGS[k] for k in given)
            raise ValueError(f"{flags}: options of remote judges, not of --judge {a.judge}")
        return None
    try:
        judge = make_judge(a.judge, a.judge_model, **opts)
    except (ValueError, ImportError) as e:
        raise ValueError(f"--judge/--judge-model: {e}") from None
    judge.check()  # type: ignore[attr-defined]  # a remote judge: fail now, not after generating
    return judge


def _print(res: Any) -> None:
    for qid, r in res.per_question().items():
        print(f"{qid:<28} EM {r['em']}  coherent {r['coherent']}")
    print(
        f"overall: EM {res.em_rate}, coherent {res.coherence_rate}, "
        f"unscored (excluded from EM) {res.n_unscored}/{len(res.samples)}"
    )
    if res.n_scored:
        print(f"EM over questions (cluster bootstrap): {res.em_rate_by_question()}")


def cmd_evaluate(a: argparse.Namespace) -> None:
    from emlens.eval.em_rate import evaluate_em
    from emlens.eval.judge import make_judge

    out_file(a.out)
    questions = questions_of(a)
    judge = _judge_before_the_model(a)
    model = load(a)
    ivs = interventions(a, model)
    if a.judge.startswith("probe:"):
        from emlens.cli._judge import evaluate_with_probe

        evaluate_with_probe(a, model, questions, ivs)
        return
    judge = judge or make_judge(a.judge, a.judge_model, model)  # local judges
    journal = Path(f"{a.out}.progress.jsonl") if a.out else None  # resumes a killed run
    if journal and journal.is_file():
        done = journal.read_bytes().count(b"\n") - 1
        print(f"resuming from {journal} ({done} finished steps)", file=sys.stderr)
    res = evaluate_em(
        model, questions, judge, ivs, n=a.n, temperature=a.temperature,
        max_new_tokens=a.max_new_tokens, free_form_only=not a.all_questions, seed=a.seed,
        journal=journal,
    )  # fmt: skip
    if a.out and journal:
        res.to_csv(a.out)
        journal.unlink()  # the result is saved: nothing left to resume
    _print(res)
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
        "--judge",
        default="local",
        help="local, local:SPEC, a URL (plain HTTP: vLLM, emlens serve), openai, openai:URL, "
        "azure (the openai SDK), or probe:FILE",
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
