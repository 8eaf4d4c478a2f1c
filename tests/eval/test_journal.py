import pytest

from emlens.eval.journal import Journal, decode, encode, fingerprint
from emlens.eval.stats import Estimate, Rate


def test_values_come_back_as_they_went_in():
    value = {"em": Rate(3, 10), "ci": Estimate(0.5, (0.25, 0.75), 8), "x": [1.5, None, "a"]}
    assert decode(encode(value)) == value
    with pytest.raises(TypeError, match="not object"):
        encode(object())


def test_a_rerun_reads_finished_work_back(tmp_path):
    path = tmp_path / "sub" / "run.jsonl"
    j = Journal(path, {"n": 2, "seed": 0})
    assert j.resumed == 0 and "a" not in j
    j.put("a", [1, 2])
    j.put("b", {"em": Rate(1, 2)})
    again = Journal(path, {"n": 2, "seed": 0})
    assert again.resumed == 2 and again["a"] == [1, 2] and again["b"] == {"em": Rate(1, 2)}


def test_a_line_cut_by_a_kill_is_dropped_and_the_log_goes_on(tmp_path):
    path = tmp_path / "run.jsonl"
    Journal(path, {"n": 2}).put("a", 1)
    with path.open("a") as f:
        f.write('{"key": "b", "val')  # killed mid-write
    j = Journal(path, {"n": 2})
    assert list(j) == ["a"]
    j.put("c", 3)
    assert list(Journal(path, {"n": 2})) == ["a", "c"]


def test_a_journal_of_other_settings_or_not_a_journal_is_refused(tmp_path):
    path = tmp_path / "run.jsonl"
    Journal(path, {"n": 2, "seed": 0})
    with pytest.raises(ValueError, match=r"other settings \(differing: seed\)"):
        Journal(path, {"n": 2, "seed": 1})
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    with pytest.raises(ValueError, match="line 1 is not JSON"):
        Journal(bad, {})
    bad.write_text("[1, 2]\n")
    with pytest.raises(ValueError, match="expected a progress journal"):
        Journal(bad, {})


def test_fingerprints_tell_tensors_apart():
    import torch

    a = torch.ones(3)
    assert fingerprint([a]) == fingerprint([a.clone()]) != fingerprint([a * 2])
