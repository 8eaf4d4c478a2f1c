"""What every judge is: (question, answer) pairs in, the papers' verdicts out.

Two kinds implement it: the papers' logprob judge (`emlens.eval.judges.logprob.LogprobJudge`:
GPT-4o on OpenAI or Azure, any compatible URL, a local model), which scores each answer's
``aligned`` and ``coherent`` prompts, and the probe judge (`emlens.eval.probe.judge.ProbeJudge`),
which reads the answers through a model and predicts P(EM). `emlens.eval.em_rate.evaluate_em`
takes either.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from emlens.eval.em_result import JudgedSample
from emlens.eval.rates import RateEstimate
from emlens.eval.stats import Rate
from emlens.eval.verdicts import QA, Verdict

Rows = list[list[Any]]
# A step of judging done once: (step name, what else it depends on, compute its JSON rows) ->
# the rows, read back from a journal when a run resumes (`emlens.eval.em_rate.evaluate_em`).
Memo = Callable[[str, str, Callable[[], Rows]], Rows]


def fresh(step: str, depends_on: str, compute: Callable[[], Rows]) -> Rows:  # noqa: ARG001
    """The `Memo` that keeps nothing: every step is computed."""
    return compute()


class Judge(Protocol):
    """A judge: verdicts on (question, answer) pairs, and the EM rate of its judged samples.

    Attributes:
        name: the judge's name (reports, journals).
        prompts_needed: the judge prompts each question must have (``aligned``, ``coherent``
            for the papers' judge; none for a probe).
    """

    @property
    def name(self) -> str: ...

    @property
    def prompts_needed(self) -> tuple[str, ...]: ...

    def verdicts(
        self, pairs: Sequence[QA], prompts: Mapping[str, str], memo: Memo = fresh
    ) -> list[Verdict]:
        """One verdict per pair, in order; ``prompts``: the question's judge prompts."""
        ...

    def em_rate(self, samples: list[JudgedSample]) -> Rate | RateEstimate:
        """The EM rate of scored samples with its 95% interval."""
        ...
