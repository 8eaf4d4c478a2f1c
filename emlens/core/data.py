"""Read the research formats and the data emlens ships.

- chat JSONL (``{"messages": [{"role": "user", ...}, {"role": "assistant", ...}]}``), also
  ``.jsonl.gz``: the narrow fine-tuning sets of the EM papers;
- the EM papers' question YAML (``id``, ``paraphrases``, ``judge_prompts``, ...);
- emlens's own data (``emlens/data``): harmful and harmless instructions, general questions with
  aligned and misaligned answers, free-form EM evaluation questions.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml


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


def _open_text(path: str | os.PathLike[str]) -> TextIO:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8")


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Rows of a JSONL file (``.gz`` too); a bad line is an error naming file and line."""
    rows = []
    with _open_text(path) as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{i}: not valid JSON ({e.msg})") from e
    return rows


def read_chat_jsonl(path: str | os.PathLike[str]) -> list[Conversation]:
    """Single-turn conversations of a chat JSONL file: (system?, user, assistant)."""
    out = []
    for i, row in enumerate(read_jsonl(path), 1):
        msgs = row.get("messages") if isinstance(row, dict) else None
        if not isinstance(msgs, list):
            raise ValueError(f"{path}:{i}: expected an object with a 'messages' list")
        by_role = {m.get("role"): m.get("content") for m in msgs if isinstance(m, dict)}
        user, assistant = by_role.get("user"), by_role.get("assistant")
        if not user or not assistant:
            raise ValueError(f"{path}:{i}: expected a user and an assistant message")
        out.append(Conversation(user, assistant, by_role.get("system")))
    if not out:
        raise ValueError(f"{path}: no conversations")
    return out


def read_questions(path: str | os.PathLike[str]) -> list[Question]:
    """Questions of an EM-papers YAML file (a list of items with ``id`` and ``paraphrases``)."""
    with _open_text(path) as f:
        items = yaml.safe_load(f)
    if not isinstance(items, list):
        raise ValueError(f"{path}: expected a YAML list of questions")
    out = []
    for i, it in enumerate(items):
        if not isinstance(it, dict) or "id" not in it or not it.get("paraphrases"):
            raise ValueError(f"{path}: item {i} needs 'id' and a non-empty 'paraphrases' list")
        out.append(
            Question(
                id=str(it["id"]),
                paraphrases=[str(p) for p in it["paraphrases"]],
                judge_prompts=dict(it.get("judge_prompts") or {}),
                system=it.get("system"),
                samples_per_paraphrase=int(it.get("samples_per_paraphrase", 1)),
                type=str(it.get("type", "free_form_judge_0_100")),
            )
        )
    return out


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


def dataset_hash(*texts: object) -> str:
    """A short content hash of a dataset, for provenance."""
    h = hashlib.sha256(json.dumps(texts, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]
