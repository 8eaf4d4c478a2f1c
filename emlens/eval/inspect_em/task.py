"""The EM task for inspect-ai: the papers' free-form questions, ``n`` answers each."""

from __future__ import annotations

from inspect_ai import Task, task
from inspect_ai.dataset import MemoryDataset, Sample
from inspect_ai.model import ChatMessageSystem, GenerateConfig
from inspect_ai.solver import Generate, Solver, TaskState, generate, solver

from emlens.core.data import Question, em_questions, read_questions
from emlens.eval.inspect_em.scorer import em_metric, em_scorer


def em_samples(questions: list[Question], n: int) -> list[Sample]:
    """One inspect sample per answer: every paraphrase of every free-form question, ``n`` times
    (ids ``QUESTION/PARAPHRASE/SAMPLE``; the question's judge prompts in the metadata)."""
    if n < 1:
        raise ValueError(f"n is the number of answers per question, at least 1, not {n}")
    out = []
    for q in (q for q in questions if q.free_form):
        for p, text in enumerate(q.paraphrases):
            for i in range(n):
                meta = {"question_id": q.id, "paraphrase": p, "sample": i, "system": q.system}
                meta["judge_prompts"] = q.judge_prompts
                out.append(Sample(input=text, id=f"{q.id}/{p}/{i}", metadata=meta))
    if not out:
        raise ValueError(
            "no free-form question to ask (ids ending _json or _template are left out)"
        )
    return out


@solver
def question_system() -> Solver:
    """The question's own system prompt (from its YAML), where it has one."""

    async def solve(state: TaskState, generate: Generate) -> TaskState:  # noqa: ARG001
        if system := state.metadata.get("system"):
            state.messages.insert(0, ChatMessageSystem(content=system))
        return state

    return solve


@task
def em(
    n: int = 1,
    questions: str | None = None,
    judge: str = "probe:default",
    temperature: float = 1.0,
    max_tokens: int = 128,
) -> Task:
    """The papers' EM evaluation: ``n`` answers to each free-form question, each judged.

    Args:
        n: answers per question paraphrase (the papers: 50 or more).
        questions: a question YAML in the papers' format (default: emlens's EM questions).
        judge: an emlens judge spec (``probe:default`` offline; GPT-4o or a URL for the
            papers' logprob judge; `emlens.eval.judge_spec.SPECS`).
        temperature: sampling temperature (the papers: 1).
        max_tokens: answer length limit.
    """
    qs = read_questions(questions) if questions else em_questions()
    return Task(
        dataset=MemoryDataset(em_samples(qs, n), name="emlens-em"),
        solver=[question_system(), generate()],
        scorer=em_scorer(judge),
        metrics=[em_metric(judge)],
        config=GenerateConfig(temperature=temperature, max_tokens=max_tokens),
    )


em_task = em  # the name in Python; ``emlens/em`` on inspect's command line
