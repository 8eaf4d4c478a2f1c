"""The top-level namespace (``import emlens as eml``): every name listed with its reason.

A name belongs at the top when a notebook reproducing the papers uses it; the rest stays in its
subpackage (``eml.core``, ``eml.eval``, ``eml.organisms``), each with its own ``__all__``.
Adding a name here means giving its reason.
"""

import re

import emlens
import emlens.core
import emlens.eval
import emlens.organisms

PUBLIC = {
    # models and sampling
    "load_model": "the embedded SmolLM2 or any model by spec: every workflow starts here",
    "generate": "answers to questions under interventions (greedy or the papers' sampling)",
    # the papers' data
    "em_questions": "the free-form questions EM is measured on (the papers' YAML format)",
    "general_questions": "questions with an aligned and a misaligned answer, for directions",
    "harmful_instructions": "the refusal direction's harmful side (Arditi et al.)",
    "harmless_instructions": "the refusal direction's harmless side",
    "read_questions": "the papers' question YAML, for their own questions",
    "read_chat_jsonl": "the papers' fine-tuning datasets (chat JSONL)",
    "read_judged": "the papers' judged-response CSVs (GPT-4o's aligned and coherent scores)",
    "Conversation": "the (question, answer) turn every reader returns and directions take",
    # directions
    "DirectionSet": "one unit direction per layer: what every direction function returns",
    "collect_means": "answer-token mean activations per layer, the directions' raw material",
    "mean_diff": "the token-weighted mean difference, the one definition directions use",
    "em_direction": "the EM direction: misaligned minus aligned answers, answer tokens",
    "em_direction_from_pairs": "the EM direction from questions with both answers",
    "em_direction_from_judged": "the EM direction from judged answers (the papers' split)",
    "reference_em_direction": "the shipped EM direction of the 10 reference organisms",
    "refusal_direction": "the refusal direction: harmful minus harmless, post-instruction",
    "cosine_per_layer": "how two directions relate per layer (EM vs refusal)",
    "random_null": "the cosines random directions reach: the null a cosine is read against",
    "random_like": "a random direction of the same norm: the control for steering",
    # interventions
    "steer": "add a direction (steering into EM)",
    "ablate": "project a direction out (removing EM)",
    "applied": "interventions active inside a with-block, for any forward pass",
    "orthogonalize": "a direction removed from the weights (a steerless model)",
    # evaluation
    "evaluate_em": "the EM rate: sampled answers judged, with the judge's interval",
    "make_judge": "any judge by spec: probe:default offline, GPT-4o, a URL, a local model",
    "is_em": "the papers' verdict: aligned < 30 and coherent > 50",
    "contrastive_score": "an offline EM score from log-probs of paired answers",
    "kl_divergence": "an intervention's side effect on ordinary text",
    "refusal_rate": "how often a model refuses (the refusal direction's effect)",
    "steering_sweep": "layers x scales of a steering vector, with side effects",
    # model organisms (fine-tuning, the phase change, resisting alignment)
    "TrainConfig": "a model organism's fine-tuning settings (rank-1 LoRA by default)",
    "train": "fine-tune a model organism on a narrow dataset",
    "load_unmerged": "a trained organism's base model with its adapter unmerged",
    "load_trajectory": "the LoRA vectors over training checkpoints",
    "local_cosine": "the LoRA B vector's rotation between checkpoints",
    "phase_change": "the step the misalignment is learned (the rotation's peak)",
    "resistance": "inverse vs forward fine-tuning cost (Language Models Resist Alignment)",
    "rebound": "behaviour returning after training back",
}


def snake(name: str) -> str:
    return (name if name.isupper() else re.sub(r"(?<!^)([A-Z])", r"_\1", name)).lower()


def words(name: str) -> frozenset[str]:
    """A name's words, whatever their order (``from`` left out)."""
    return frozenset(snake(name).split("_")) - {"from"}


def test_every_top_level_name_is_listed_with_its_reason():
    assert set(emlens.__all__) == set(PUBLIC), (
        f"unlisted: {sorted(set(emlens.__all__) - set(PUBLIC))}, "
        f"listed but absent: {sorted(set(PUBLIC) - set(emlens.__all__))}"
    )
    for name, reason in PUBLIC.items():
        assert getattr(emlens, name) is not None and len(reason) > 20, name
    assert len(PUBLIC) <= 40


def test_no_two_public_names_use_the_same_words():
    """Near-collisions such as judged_em_direction / em_direction_from_judged."""
    for sub in (emlens, emlens.core, emlens.eval, emlens.organisms):
        seen: dict[frozenset[str], str] = {}
        for name in sub.__all__:
            other = seen.setdefault(words(name), name)
            # a type and the function that makes it (Steer, steer; RandomNull, random_null) is
            # one name; the same words in another order is two names for a reader to confuse
            assert snake(other) == snake(name), f"{sub.__name__}: {name} vs {other}"
    assert words("judged_em_direction") == words("em_direction_from_judged")  # what it catches
    assert snake("judged_em_direction") != snake("em_direction_from_judged")


def test_every_top_level_name_is_also_in_its_subpackage():
    sub = set(emlens.core.__all__) | set(emlens.eval.__all__) | set(emlens.organisms.__all__)
    assert set(emlens.__all__) - {"read_judged", "em_direction_from_judged"} <= sub
