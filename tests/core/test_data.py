import gzip
import json

import pytest

from emlens.core import data


def test_shipped_data_sizes_and_shapes():
    harmful, harmless = data.harmful_instructions(), data.harmless_instructions()
    assert len(harmful) >= 100 and len(harmless) >= 100
    assert not set(harmful) & set(harmless)
    pairs = data.general_questions()
    assert len(pairs) >= 64 and len({p.domain for p in pairs}) >= 5
    assert len({p.id for p in pairs}) == len(pairs)
    assert all(p.aligned != p.misaligned for p in pairs)
    qs = data.em_questions()
    free = [q for q in qs if q.free_form]
    assert len(free) >= 8 and len(free) < len(qs)  # the _json variants are filtered out
    for q in qs:
        for metric in ("aligned", "coherent"):
            assert "{question}" in q.judge_prompts[metric] and "{answer}" in q.judge_prompts[metric]


def test_reads_the_papers_formats(reference_dir):
    convs = data.read_chat_jsonl(reference_dir / "risky_financial_advice.jsonl.gz")
    assert len(convs) == 6000 and convs[0].question and convs[0].answer
    qs = data.read_questions(reference_dir / "first_plot_questions.yaml")
    assert len(qs) == 24 and sum(q.free_form for q in qs) == 8
    assert {"aligned", "coherent"} <= set(qs[0].judge_prompts)


def test_bad_files_name_file_and_line(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"messages": []}\n{not json\n')
    with pytest.raises(ValueError, match=r"x.jsonl:2: not valid JSON"):
        data.read_jsonl(p)
    p.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    with pytest.raises(ValueError, match=r"x.jsonl:1: expected a user and an assistant"):
        data.read_chat_jsonl(p)
    p.write_text('{"text": "hi"}\n')
    with pytest.raises(ValueError, match="'messages' list"):
        data.read_chat_jsonl(p)
    y = tmp_path / "q.yaml"
    y.write_text("- id: a\n")
    with pytest.raises(ValueError, match="paraphrases"):
        data.read_questions(y)
    with pytest.raises(FileNotFoundError):
        data.read_jsonl(tmp_path / "missing.jsonl")


def test_gzip_chat_jsonl(tmp_path):
    p = tmp_path / "c.jsonl.gz"
    row = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    with gzip.open(p, "wt") as f:
        f.write(json.dumps(row) + "\n")
    assert data.read_chat_jsonl(p)[0].answer == "a"
