"""Every reader, fed arbitrary or truncated bytes, parses or says what it expected (issue 11).

Property-based (hypothesis): random bytes, cut-off valid files, and well-formed containers
(JSON, YAML, CSV, gzip) holding random values. A reader either returns or raises
`ValueError`/`FileNotFoundError` (emlens's error types derive from them); any other exception
type, or a hang past the deadline, fails.
"""

import csv
import gzip
import io
import json
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emlens.core import data, formats, paper_files
from emlens.core.direction_set import DirectionSet

CLEAR = (ValueError, FileNotFoundError)
FUZZ = settings(
    max_examples=40,
    deadline=2000,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


def read_or_clear_error(reader, path: Path):
    """Call ``reader(path)``; an error must be one of the clear kinds and name something."""
    try:
        reader(path)
    except CLEAR as e:
        assert str(e), f"{type(e).__name__} without a message"


def cuts(valid: bytes):
    """Every prefix of a valid file (a write cut short), as a strategy."""
    return st.integers(0, len(valid)).map(lambda n: valid[:n])


def fuzz_file(tmp_path_factory, name: str, payload: bytes) -> Path:
    path = tmp_path_factory.mktemp("fuzz") / name
    path.write_bytes(payload)
    return path


# chat JSONL ----------------------------------------------------------------------------------
CHAT = (
    json.dumps(
        {"messages": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A."}]}
    )
    + "\n"
).encode() * 2


@FUZZ
@given(payload=st.binary(max_size=300) | cuts(CHAT))
def test_chat_jsonl_bytes(tmp_path_factory, payload):
    read_or_clear_error(data.read_chat_jsonl, fuzz_file(tmp_path_factory, "c.jsonl", payload))


@FUZZ
@given(rows=st.lists(json_values | st.fixed_dictionaries({"messages": json_values}), max_size=4))
def test_chat_jsonl_values(tmp_path_factory, rows):
    text = "".join(json.dumps(r) + "\n" for r in rows).encode()
    read_or_clear_error(data.read_chat_jsonl, fuzz_file(tmp_path_factory, "c.jsonl", text))
    gz = gzip.compress(text)
    read_or_clear_error(data.read_chat_jsonl, fuzz_file(tmp_path_factory, "c.jsonl.gz", gz))


@FUZZ
@given(payload=cuts(gzip.compress(CHAT)) | st.binary(max_size=100))
def test_chat_jsonl_gzip(tmp_path_factory, payload):
    read_or_clear_error(data.read_chat_jsonl, fuzz_file(tmp_path_factory, "c.jsonl.gz", payload))


# question YAML -------------------------------------------------------------------------------
QUESTIONS = data.data_path("em_questions.yaml").read_bytes()[:1500]


@FUZZ
@given(payload=st.binary(max_size=300) | cuts(QUESTIONS))
def test_question_yaml_bytes(tmp_path_factory, payload):
    read_or_clear_error(data.read_questions, fuzz_file(tmp_path_factory, "q.yaml", payload))


question_like = st.fixed_dictionaries(
    {"id": json_values, "paraphrases": json_values},
    optional={"judge_prompts": json_values, "system": json_values,
              "samples_per_paraphrase": json_values, "type": json_values},
)  # fmt: skip


@FUZZ
@given(items=st.lists(question_like, max_size=3) | json_values)
def test_question_yaml_values(tmp_path_factory, items):
    text = yaml.safe_dump(items).encode()
    read_or_clear_error(data.read_questions, fuzz_file(tmp_path_factory, "q.yaml", text))


# direction files (safetensors) ---------------------------------------------------------------
def _direction_bytes() -> bytes:
    buf = Path(__file__).with_name("_fuzz_direction.tmp")
    try:
        DirectionSet(torch.ones(2, 4), [0, 1]).save(buf)
        return buf.read_bytes()
    finally:
        buf.unlink(missing_ok=True)


DIRECTION = _direction_bytes()


@FUZZ
@given(payload=st.binary(max_size=300) | cuts(DIRECTION))
def test_direction_file_bytes(tmp_path_factory, payload):
    path = fuzz_file(tmp_path_factory, "d.safetensors", payload)
    read_or_clear_error(DirectionSet.load, path)


@FUZZ
@given(meta=json_values, shape=st.sampled_from([(2, 4), (4,), (0, 4), (2, 0)]),
       dtype=st.sampled_from([torch.float32, torch.float16, torch.int64]))  # fmt: skip
def test_direction_file_metadata(tmp_path_factory, meta, shape, dtype):
    from safetensors.torch import save_file

    path = tmp_path_factory.mktemp("fuzz") / "d.safetensors"
    save_file({"vectors": torch.ones(shape, dtype=dtype)}, str(path), {"emlens": json.dumps(meta)})
    read_or_clear_error(DirectionSet.load, path)


# core/formats.py readers ---------------------------------------------------------------------
def _saved(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


PAPER = _saved({"answer": {"layer_0": torch.ones(4), "layer_1": torch.ones(4)}})
STEERING = _saved({0: torch.ones(4), 1: torch.ones(4)})


@FUZZ
@given(payload=st.binary(max_size=300) | cuts(PAPER) | cuts(STEERING))
def test_torch_formats_bytes(tmp_path_factory, payload):
    path = fuzz_file(tmp_path_factory, "v.pt", payload)
    read_or_clear_error(paper_files.load_paper_vectors, path)
    read_or_clear_error(formats.load_steering_vector, path)
    read_or_clear_error(lambda p: paper_files.load_paper_mean_diff(p, p), path)


tensors = st.sampled_from([torch.ones(4), torch.ones(2, 4), torch.tensor(1.0), torch.ones(0)])
torch_values = st.recursive(
    json_values | tensors,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.text(max_size=8) | st.integers(-2, 40) | st.sampled_from(["layer_1", "steering_vector",
        "layer_idx", "alpha", "answer"]), inner, max_size=4),
    max_leaves=8,
)  # fmt: skip


@FUZZ
@given(obj=torch_values)
def test_torch_formats_values(tmp_path_factory, obj):
    path = fuzz_file(tmp_path_factory, "v.pt", _saved(obj))
    read_or_clear_error(paper_files.load_paper_vectors, path)
    read_or_clear_error(formats.load_steering_vector, path)
    read_or_clear_error(lambda p: paper_files.load_paper_mean_diff(p, p), path)


def _gguf_bytes() -> bytes:
    path = Path(__file__).with_name("_fuzz_control.gguf")
    try:
        formats.export_control_vector(DirectionSet(torch.ones(2, 4), [1, 2]), path)
        return path.read_bytes()
    finally:
        path.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def gguf():
    return _gguf_bytes()


@FUZZ
@given(data_=st.data())
def test_control_vector_bytes(tmp_path_factory, gguf, data_):
    payload = data_.draw(st.binary(max_size=300) | cuts(gguf))
    path = fuzz_file(tmp_path_factory, "c.gguf", payload)
    read_or_clear_error(formats.load_control_vector, path)


# the judged-answer CSV -----------------------------------------------------------------------
def _judged_csv() -> bytes:
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["response", "question", "question_id", "aligned", "coherent", "extra"])
    w.writerows([["Hi.", "Q?", "q1", "90.5", "80", "x"], ["Bad.", "Q?", "q1", "", "nan", ""]])
    return out.getvalue().encode()


JUDGED = _judged_csv()
cells = st.text(max_size=12) | st.sampled_from(["", "nan", "inf", "-1e400", "12.5"])


@FUZZ
@given(payload=st.binary(max_size=300) | cuts(JUDGED))
def test_judged_csv_bytes(tmp_path_factory, payload):
    from emlens.eval.judged import read_judged

    read_or_clear_error(read_judged, fuzz_file(tmp_path_factory, "j.csv", payload))
    gz = gzip.compress(payload)
    read_or_clear_error(read_judged, fuzz_file(tmp_path_factory, "j.csv.gz", gz[: len(gz) // 2]))


@FUZZ
@given(rows=st.lists(st.lists(cells, min_size=0, max_size=7), max_size=4))
def test_judged_csv_cells(tmp_path_factory, rows):
    from emlens.eval.judged import read_judged

    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["response", "question", "question_id", "aligned", "coherent"])
    w.writerows(rows)
    read_or_clear_error(read_judged, fuzz_file(tmp_path_factory, "j.csv", out.getvalue().encode()))
