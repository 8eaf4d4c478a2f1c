import pytest
import torch

from emlens.core._atomic import write_atomic
from emlens.core.direction_set import DirectionSet


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "result.csv"
    path.write_text("old")

    def half(p):
        p.write_text("ha")
        raise KeyboardInterrupt  # killed mid-write

    with pytest.raises(KeyboardInterrupt):
        write_atomic(path, half)
    assert path.read_text() == "old" and sorted(tmp_path.iterdir()) == [path]
    write_atomic(path, lambda p: p.write_text("new"))
    assert path.read_text() == "new" and sorted(tmp_path.iterdir()) == [path]


def test_a_folder_appears_whole_and_replaces_the_old_one(tmp_path):
    path = tmp_path / "checkpoint-3"
    path.mkdir()
    (path / "old.txt").write_text("old")

    def half(p):
        p.mkdir()
        (p / "weights").write_text("ha")
        raise KeyboardInterrupt  # killed mid-write

    with pytest.raises(KeyboardInterrupt):
        write_atomic(path, half)
    assert sorted(tmp_path.iterdir()) == [path] and (path / "old.txt").read_text() == "old"

    def whole(p):
        p.mkdir()
        (p / "weights").write_text("new")

    write_atomic(path, whole)
    assert sorted(tmp_path.iterdir()) == [path]
    assert [f.name for f in path.iterdir()] == ["weights"]


def test_saving_directions_to_a_missing_folder_names_it(tmp_path):
    ds = DirectionSet(torch.ones(2, 4), [0, 1])
    with pytest.raises(FileNotFoundError, match="missing"):
        ds.save(tmp_path / "missing" / "d.safetensors")
    ds.save(tmp_path / "d.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.safetensors"]


@pytest.mark.parametrize("data", [b"", b"not a safetensors file", b"\xff" * 64])
def test_a_corrupt_direction_file_is_one_clear_error(tmp_path, data):
    path = tmp_path / "d.safetensors"
    path.write_bytes(data)
    with pytest.raises(ValueError, match="expected an emlens direction file"):
        DirectionSet.load(path)
