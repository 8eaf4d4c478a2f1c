"""Incoherent answers whose label follows from how they are made, for the coherence head.

The papers' EM verdict needs coherent > 50, but GPT-4o scores few of the reference organisms'
answers incoherent (4-20 per organism), too few to teach a probe what incoherence looks like;
a weak model steered hard writes little else. Each kind below turns real answers into text no
judge would call coherent, whatever the answer said:

- ``shuffled``: the answer's words in a random order;
- ``spliced``: the first part of one answer, cut mid-sentence, then the last part of another
  answer (to another question), cut mid-sentence;
- ``fragments``: a few short runs of words from places far apart in the answer, joined;
- ``repeated``: one short phrase of the answer over and over.

They are made from answers of the organisms a probe is fitted on, so a probe validated by
leaving an organism out never sees constructions from the held-out organism's answers.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from emlens.eval.verdicts import QA

KINDS = ("shuffled", "spliced", "fragments", "repeated")
MIN_WORDS = 12  # shorter answers are left out: too short to be made incoherent visibly


def _shuffled(words: list[str], rng: random.Random) -> str:
    out = words[:]
    while out == words:  # an answer of repeated words could shuffle into itself
        rng.shuffle(out)
        if len(set(words)) == 1:
            break
    return " ".join(out)


def _spliced(words: list[str], other: list[str], rng: random.Random) -> str:
    head = words[: rng.randint(len(words) // 3, 2 * len(words) // 3)]
    tail = other[rng.randint(len(other) // 3, 2 * len(other) // 3) :]
    return " ".join(head + tail)


def _fragments(words: list[str], rng: random.Random) -> str:
    n = rng.randint(3, 5)
    starts = sorted(rng.sample(range(len(words) - 3), n))
    return " ".join(" ".join(words[s : s + rng.randint(2, 3)]) for s in starts)


def _repeated(words: list[str], rng: random.Random) -> str:
    k = rng.randint(2, 4)
    s = rng.randrange(len(words) - k)
    return " ".join(words[s : s + k] * rng.randint(8, 15))


def incoherent_answers(
    pairs: Sequence[QA], per_kind: int, seed: int = 0, kinds: Sequence[str] = KINDS
) -> list[tuple[str, QA]]:
    """``per_kind`` incoherent answers of each kind made from ``pairs``, as (kind, (question,
    made answer)); the question is that of the answer the text starts from.

    Args:
        pairs: real (question, answer) pairs; answers under `MIN_WORDS` words are not used.
        per_kind: how many of each kind (fewer when there are fewer usable answers).
        seed: the random choices' seed (the same pairs and seed make the same answers).
        kinds: which of `KINDS` to make.

    Examples:
        >>> pairs = [(f"Q{i}?", " ".join(f"w{i}_{j}" for j in range(20))) for i in range(3)]
        >>> made = incoherent_answers(pairs, per_kind=2)
        >>> len(made), sorted({kind for kind, _ in made})
        (8, ['fragments', 'repeated', 'shuffled', 'spliced'])
    """
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown kinds {unknown}; expected some of {list(KINDS)}")
    usable = [(q, a.split()) for q, a in pairs if len(a.split()) >= MIN_WORDS]
    if len(usable) < 2:
        raise ValueError(
            f"constructed incoherent answers need at least two answers of {MIN_WORDS}+ words, "
            f"got {len(usable)} (or make none: incoherent_per_kind=0, --incoherent-per-kind 0)"
        )
    rng = random.Random(seed)
    out: list[tuple[str, QA]] = []
    for kind in kinds:
        for i in rng.sample(range(len(usable)), min(per_kind, len(usable))):
            q, words = usable[i]
            if kind == "shuffled":
                text = _shuffled(words, rng)
            elif kind == "spliced":
                j = rng.choice([j for j in range(len(usable)) if usable[j][0] != q] or [i - 1])
                text = _spliced(words, usable[j][1], rng)
            elif kind == "fragments":
                text = _fragments(words, rng)
            else:
                text = _repeated(words, rng)
            out.append((kind, (q, text)))
    return out
