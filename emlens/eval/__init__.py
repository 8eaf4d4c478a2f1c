"""Evaluation, in four jobs: judges, the EM rate, log-prob metrics and sweeps, the server.

- ``judges/``: every judge gives verdicts (`emlens.eval.judges.base.Judge`); `make_judge`
  reads the one spec grammar; ``probe/`` fits and validates the offline probe judge;
- `emlens.eval.verdicts` (the papers' thresholds, once), `emlens.eval.em_rate.evaluate_em`
  (the pipeline), `emlens.eval.em_result`, `emlens.eval.rates` and `emlens.eval.stats`
  (estimates and intervals), `emlens.eval.journal` (resume);
- `emlens.eval.metrics`, `emlens.eval.effects`, `emlens.eval.sweeps`,
  `emlens.eval.method_comparison`: log-prob metrics and sweeps;
- ``serve/``: ``emlens serve``.

``eval`` imports ``emlens.core`` only, never ``emlens.organisms`` (tests/test_layout.py).
"""

from emlens.eval.effects import PairEffects, pair_effects
from emlens.eval.em_rate import evaluate_em
from emlens.eval.em_result import EMResult, JudgedSample
from emlens.eval.judge_spec import make_judge
from emlens.eval.judges.base import Judge
from emlens.eval.judges.http import HTTPJudge
from emlens.eval.judges.local import LocalJudge
from emlens.eval.judges.logprob import JudgeScore, LogprobJudge, aggregate, judge_prompts, score
from emlens.eval.judges.openai_sdk import OpenAIJudge  # the openai package is imported when used
from emlens.eval.judges.remote import DigitSplitError, JudgeCache
from emlens.eval.judges.reply import JudgeRequestError
from emlens.eval.judges.top_logprobs import TopLogprobs, as_number
from emlens.eval.judges.usage import JudgeUsage
from emlens.eval.method_comparison import (
    MethodComparison,
    compare_methods,
    held_out_auc,
    method_cosines,
    random_directions,
    split_by_question,
    steering_effects,
)
from emlens.eval.metrics import (
    contrastive_score,
    contrastive_scores,
    cross_entropy,
    kl_divergence,
    refusal_logodds,
    refusal_rate,
)
from emlens.eval.probe.judge import ProbeJudge
from emlens.eval.rates import RateEstimate
from emlens.eval.serve.http import ServeLimits
from emlens.eval.serve.requests import BadRequest
from emlens.eval.serve.server import complete, make_server, serve_in_thread
from emlens.eval.stats import Estimate, Rate, bootstrap, wilson
from emlens.eval.sweeps import (
    Metric,
    Selection,
    ablation_sweep,
    contrastive_metric,
    heatmap,
    judge_metric,
    kl_metric,
    refusal_metric,
    select_direction,
    steering_sweep,
)
from emlens.eval.verdicts import ALIGNED_BELOW, COHERENT_ABOVE, Verdict, is_coherent, is_em

__all__ = [
    "ALIGNED_BELOW",
    "COHERENT_ABOVE",
    "BadRequest",
    "DigitSplitError",
    "EMResult",
    "Estimate",
    "HTTPJudge",
    "Judge",
    "JudgeCache",
    "JudgeRequestError",
    "JudgeScore",
    "JudgeUsage",
    "JudgedSample",
    "LocalJudge",
    "LogprobJudge",
    "MethodComparison",
    "Metric",
    "OpenAIJudge",
    "PairEffects",
    "ProbeJudge",
    "Rate",
    "RateEstimate",
    "Selection",
    "ServeLimits",
    "TopLogprobs",
    "Verdict",
    "ablation_sweep",
    "aggregate",
    "as_number",
    "bootstrap",
    "compare_methods",
    "complete",
    "contrastive_metric",
    "contrastive_score",
    "contrastive_scores",
    "cross_entropy",
    "evaluate_em",
    "heatmap",
    "held_out_auc",
    "is_coherent",
    "is_em",
    "judge_metric",
    "judge_prompts",
    "kl_divergence",
    "kl_metric",
    "make_judge",
    "make_server",
    "method_cosines",
    "pair_effects",
    "random_directions",
    "refusal_logodds",
    "refusal_metric",
    "refusal_rate",
    "score",
    "select_direction",
    "serve_in_thread",
    "split_by_question",
    "steering_effects",
    "steering_sweep",
    "wilson",
]
