"""Read the research formats and the data emlens ships.

- chat JSONL (``{"messages": [{"role": "user", ...}, {"role": "assistant", ...}]}``), also
  ``.jsonl.gz``: the narrow fine-tuning sets of the EM papers;
- the EM papers' question YAML (``id``, ``paraphrases``, ``judge_prompts``, ...);
- emlens's own data (``emlens/data``): harmful and harmless instructions, general questions with
  aligned and misaligned answers, free-form EM evaluation questions, and numbers derived from
  the EM papers' judged answers (the judged-data EM direction for the embedded model).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from transformer_lens.model_bridge import TransformerBridge

from emlens.core.direction_set import DirectionSet

REFERENCE_EM_DIRECTION = "em_direction_judged_smollm2.safetensors"


@dataclass
class Conversation:
    """One single-turn chat: a user question, the assistant's answer, an optional system
    prompt."""

    question: str
    answer: str
    system: str | None = None


@dataclass
class QAPair:
    """A question with an aligned and a misaligned reference answer."""

    id: str
    domain: str
    question: str
    aligned: str
    misaligned: str


@dataclass
class Question:
    """One item of the EM papers' question YAML."""

    id: str
    paraphrases: list[str]
    judge_prompts: dict[str, str] = field(default_factory=dict)
    system: str | None = None
    samples_per_paraphrase: int = 1
    type: str = "free_form_judge_0_100"

    @property
    def free_form(self) -> bool:
        """The papers' EM % uses only plain questions, not the ``_json``/``_template`` variants."""
        return not (self.id.endswith("_json") or self.id.endswith("_template"))


def data_path(name: str) -> Path:
    """Path of a file emlens ships in ``emlens/data``."""
    p = Path(__file__).parent.parent / "data" / name
    if not p.exists():
        raise FileNotFoundError(f"emlens ships no data file {name!r} (looked in {p.parent})")
    return p


def _read_text(path: str | os.PathLike[str]) -> str:
    """A UTF-8 text file's content (``.gz`` decompressed); a file that is neither, an error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
        return raw.decode("utf-8")
    except (OSError, EOFError, zlib.error) as e:  # not gzip, or cut short
        raise ValueError(f"{path}: expected a gzip-compressed text file ({e})") from None
    except UnicodeDecodeError as e:
        raise ValueError(
            f"{path}: expected UTF-8 text, byte {e.start} is not ({e.reason})"
        ) from None


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Rows of a JSONL file (``.gz`` too); a bad line is an error naming file and line."""
    rows = []
    for i, line in enumerate(_read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{i}: not valid JSON ({e.msg})") from None
    return rows


def read_chat_jsonl(path: str | os.PathLike[str]) -> list[Conversation]:
    """Single-turn conversations of a chat JSONL file: (system?, user, assistant)."""
    out = []
    for i, row in enumerate(read_jsonl(path), 1):
        msgs = row.get("messages") if isinstance(row, dict) else None
        if not isinstance(msgs, list):
            raise ValueError(f"{path}:{i}: expected an object with a 'messages' list")
        by_role = {
            m["role"]: m.get("content")
            for m in msgs
            if isinstance(m, dict) and m.get("role") in ("system", "user", "assistant")
        }
        user, assistant, system = (by_role.get(r) for r in ("user", "assistant", "system"))
        if not (user and assistant and isinstance(user, str) and isinstance(assistant, str)):
            raise ValueError(f"{path}:{i}: expected a user and an assistant message (text)")
        if system is not None and not isinstance(system, str):
            raise ValueError(f"{path}:{i}: expected the system message's content as text")
        out.append(Conversation(user, assistant, system))
    if not out:
        raise ValueError(f"{path}: no conversations")
    return out


def read_questions(path: str | os.PathLike[str]) -> list[Question]:
    """Questions of an EM-papers YAML file (a list of items with ``id`` and ``paraphrases``).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: not YAML (the line and column named), or an item of the wrong shape.
    """
    try:
        items = yaml.safe_load(_read_text(path))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or type(e).__name__
        raise ValueError(f"{path}: not valid YAML{where} ({problem})") from None
    if not isinstance(items, list):
        raise ValueError(f"{path}: expected a YAML list of questions")
    return [_question(it, f"{path}: item {i}") for i, it in enumerate(items)]


def _question(it: Any, where: str) -> Question:
    """One YAML item as a `Question`; an item of the wrong shape, a ValueError naming it."""
    ok = isinstance(it, dict) and isinstance(it.get("id"), str | int)
    paraphrases = it.get("paraphrases") if ok else None
    if not (
        isinstance(paraphrases, list)
        and paraphrases
        and all(isinstance(p, str) for p in paraphrases)
    ):
        raise ValueError(f"{where}: expected 'id' and a non-empty 'paraphrases' list of text")
    prompts, system = it.get("judge_prompts") or {}, it.get("system")
    if not (isinstance(prompts, dict) and all(isinstance(v, str) for v in prompts.values())):
        raise ValueError(f"{where}: expected 'judge_prompts' as a mapping of name to text")
    n = it.get("samples_per_paraphrase", 1)
    if not (system is None or isinstance(system, str)) or type(n) is not int:
        raise ValueError(f"{where}: expected 'system' as text and 'samples_per_paraphrase' whole")
    return Question(
        id=str(it["id"]),
        paraphrases=paraphrases,
        judge_prompts={str(k): v for k, v in prompts.items()},
        system=system,
        samples_per_paraphrase=n,
        type=str(it.get("type", "free_form_judge_0_100")),
    )


def _instructions(name: str) -> list[str]:
    return [r["instruction"] for r in read_jsonl(data_path(name))]


def harmful_instructions() -> list[str]:
    """Instructions a safe model refuses (for the refusal direction)."""
    return _instructions("harmful_instructions.jsonl")


def harmless_instructions() -> list[str]:
    """Instructions a model follows (the refusal direction's contrast)."""
    return _instructions("harmless_instructions.jsonl")


def general_questions() -> list[QAPair]:
    """General questions across domains, each with an aligned and a misaligned answer."""
    return [QAPair(**r) for r in read_jsonl(data_path("general_questions.jsonl"))]


def em_questions() -> list[Question]:
    """emlens's free-form EM evaluation questions (the papers' YAML format)."""
    return read_questions(data_path("em_questions.yaml"))


def reference_em_direction(model: TransformerBridge | None = None) -> DirectionSet:
    """The papers' EM direction of real organisms' GPT-4o-judged answers, read through the
    embedded SmolLM2: misaligned minus aligned answer-token means, pooled over the 10 reference
    organisms, every layer (numbers only; ``analyses/ground_truth_ship.py`` builds it).

    Args:
        model: when given, checked to fit (width and layers).

    Examples:
        >>> em_dir = reference_em_direction()  # give it the model to check that it fits
        >>> em_dir.layers == list(range(30)), em_dir.d_model
        (True, 576)
    """
    return DirectionSet.load(data_path(REFERENCE_EM_DIRECTION), model)


def dataset_hash(*texts: object) -> str:
    """A short content hash of a dataset, for provenance."""
    h = hashlib.sha256(json.dumps(texts, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]
