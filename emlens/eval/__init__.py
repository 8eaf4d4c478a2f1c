"""Evaluation: the papers' judge, EM rate, log-prob metrics, statistics, sweeps, the server.

``eval`` imports ``emlens.core`` only, never ``emlens.organisms`` (tests/test_layout.py).
"""

from emlens.eval.effects import PairEffects, pair_effects
from emlens.eval.em_rate import (
    ALIGNED_BELOW,
    COHERENT_ABOVE,
    EMResult,
    JudgedSample,
    evaluate_em,
    is_coherent,
    is_em,
)
from emlens.eval.http_judge import DigitSplitError, HTTPJudge, JudgeCache, JudgeRequestError
from emlens.eval.judge import (
    Judge,
    JudgeScore,
    TopLogprobs,
    aggregate,
    as_number,
    judge_prompts,
    make_judge,
    score,
)
from emlens.eval.judge_usage import JudgeUsage
from emlens.eval.local_judge import LocalJudge
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
from emlens.eval.openai_judge import OpenAIJudge  # the openai package is imported when used
from emlens.eval.serve import BadRequest, ServeLimits, complete, make_server, serve_in_thread
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
    "MethodComparison",
    "Metric",
    "OpenAIJudge",
    "PairEffects",
    "Rate",
    "Selection",
    "ServeLimits",
    "TopLogprobs",
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
