"""emlens: mechanistic interpretability of Emergent Misalignment.

The top level is the researcher's vocabulary, the names a notebook uses (``import emlens as
eml``). Everything else is reachable from its subpackage, each with its own ``__all__``:

- ``emlens.core``: models, tokens, activations, directions, interventions, generation;
- ``emlens.eval``: the papers' judge, EM rate, log-prob metrics, statistics, sweeps, serving;
- ``emlens.organisms``: fine-tuning runs, adapters and trajectories, LoRA probes, elasticity.
"""

from emlens.core import (
    Conversation,
    DirectionSet,
    ablate,
    applied,
    collect_means,
    cosine_per_layer,
    em_direction,
    em_direction_from_pairs,
    em_questions,
    general_questions,
    generate,
    harmful_instructions,
    harmless_instructions,
    load_model,
    mean_diff,
    orthogonalize,
    random_like,
    random_null,
    read_chat_jsonl,
    read_questions,
    reference_em_direction,
    refusal_direction,
    steer,
)
from emlens.eval import (
    contrastive_score,
    evaluate_em,
    is_em,
    kl_divergence,
    make_judge,
    refusal_rate,
    steering_sweep,
)
from emlens.eval.judged import em_direction_from_judged, read_judged
from emlens.organisms import (
    TrainConfig,
    load_trajectory,
    load_unmerged,
    local_cosine,
    phase_change,
    rebound,
    resistance,
    train,
)

# Each name's reason to be here: tests/test_public_api.py.
__all__ = [
    "Conversation",
    "DirectionSet",
    "TrainConfig",
    "ablate",
    "applied",
    "collect_means",
    "contrastive_score",
    "cosine_per_layer",
    "em_direction",
    "em_direction_from_judged",
    "em_direction_from_pairs",
    "em_questions",
    "evaluate_em",
    "general_questions",
    "generate",
    "harmful_instructions",
    "harmless_instructions",
    "is_em",
    "kl_divergence",
    "load_model",
    "load_trajectory",
    "load_unmerged",
    "local_cosine",
    "make_judge",
    "mean_diff",
    "orthogonalize",
    "phase_change",
    "random_like",
    "random_null",
    "read_chat_jsonl",
    "read_judged",
    "read_questions",
    "rebound",
    "reference_em_direction",
    "refusal_direction",
    "refusal_rate",
    "resistance",
    "steer",
    "steering_sweep",
    "train",
]
