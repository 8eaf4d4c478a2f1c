"""Direction files of other tools: round trips, the files read independently, and files that
are not what they claim (never executed)."""

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType, GGUFReader, GGUFWriter
from safetensors.torch import save_file

from emlens.core.direction_set import DirectionSet
from emlens.core.formats import (
    export_control_vector,
    from_steering_vector,
    load_control_vector,
    load_steering_vector,
    to_steering_vector,
)
from emlens.core.paper_files import (
    load_paper_mean_diff,
    load_paper_vectors,
    save_paper_steering_vector,
)


def directions(layers=(1, 5, 7), d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    prov = {"model": "tiny-llama", "n_layers": 8, "method": "mean_difference"}
    return DirectionSet(torch.randn(len(layers), d, generator=g), list(layers), provenance=prov)


def gguf_file(path, arch, tensors, **strings):
    w = GGUFWriter(str(path), arch)
    for k, v in strings.items():
        w.add_string(k.replace("__", "."), v)
    for name, t in tensors.items():
        w.add_tensor(name, t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_control_vector_round_trip_and_the_file_llama_cpp_reads(tmp_path):
    ds = directions()
    path = export_control_vector(ds, tmp_path / "em.gguf", model_hint="llama")
    back = load_control_vector(path)
    assert back.layers == [1, 5, 7] and torch.equal(back.vectors, ds.vectors)
    assert back.hook == "blocks.{layer}.hook_resid_post"
    assert back.provenance["method"] == "mean_difference"  # the original provenance
    assert back.provenance["source"] == "llama.cpp control vector"
    assert back.provenance["file"] == str(path) and back.provenance["model_hint"] == "llama"
    # read independently: what llama.cpp and repeng look for
    r = GGUFReader(path)
    assert r.fields["general.architecture"].contents() == "controlvector"
    assert r.fields["controlvector.model_hint"].contents() == "llama"
    assert r.fields["controlvector.layer_count"].contents() == 3
    assert [t.name for t in r.tensors] == ["direction.1", "direction.5", "direction.7"]
    for t, v in zip(r.tensors, ds.vectors, strict=True):
        assert t.tensor_type == GGMLQuantizationType.F32 and list(t.shape) == [16]
        assert np.array_equal(np.asarray(t.data), v.numpy())


def test_control_vector_export_picks_layers_and_refuses_what_llama_cpp_cannot_apply(tmp_path):
    ds = directions(layers=(0, 1, 2))
    with pytest.raises(ValueError, match=r"direction\.0"):
        export_control_vector(ds, tmp_path / "a.gguf")
    path = export_control_vector(ds, tmp_path / "b.gguf", layers=[2])
    back = load_control_vector(path)
    assert back.layers == [2] and torch.equal(back.vectors[0], ds.at(2))
    assert back.provenance["model_hint"] == "tiny-llama"  # from the provenance
    other = DirectionSet(ds.vectors, ds.layers, "blocks.{layer}.hook_resid_mid")
    with pytest.raises(ValueError, match="hook_resid_mid"):
        export_control_vector(other, tmp_path / "c.gguf", layers=[1])


def test_control_vector_written_as_repeng_writes_it_loads(tmp_path):
    vecs = {4: np.ones(8, np.float32), 2: np.arange(8, dtype=np.float32)}
    path = gguf_file(
        tmp_path / "repeng.gguf",
        "controlvector",
        {f"direction.{k}": v for k, v in vecs.items()},
        controlvector__model_hint="mistral",
    )
    ds = load_control_vector(path)
    assert ds.layers == [2, 4] and torch.equal(ds.at(2), torch.arange(8.0))
    assert ds.provenance["model_hint"] == "mistral"


@pytest.mark.parametrize(
    ("arch", "tensors", "match"),
    [
        ("llama", {"direction.1": np.ones(4, np.float32)}, "architecture 'llama'"),
        ("controlvector", {"direction.0": np.ones(4, np.float32)}, "N >= 1"),
        ("controlvector", {"token_embd": np.ones(4, np.float32)}, "token_embd"),
        ("controlvector", {"direction.1": np.ones(4, np.float16)}, "float32"),
        ("controlvector", {"direction.1": np.ones((2, 4), np.float32)}, "1-D"),
        ("controlvector", {}, "one width"),
    ],
)
def test_control_vector_that_is_not_one_is_refused(tmp_path, arch, tensors, match):
    path = gguf_file(tmp_path / "x.gguf", arch, tensors)
    with pytest.raises(ValueError, match=match):
        load_control_vector(path)


def test_a_file_that_is_not_gguf_names_itself(tmp_path):
    path = tmp_path / "notes.gguf"
    path.write_text("not a gguf file at all")
    with pytest.raises(ValueError, match=r"notes\.gguf is not a llama\.cpp control vector"):
        load_control_vector(path)
    with pytest.raises(FileNotFoundError, match="missing"):
        load_control_vector(tmp_path / "missing.gguf")


@dataclass
class SteeringVector:  # the shape of steering-vectors' class, without installing it
    layer_activations: dict
    layer_type: str = "decoder_block"


def test_steering_vectors_layer_dicts(tmp_path):
    ds = directions(layers=(3, 6))
    acts = to_steering_vector(ds)
    assert sorted(acts) == [3, 6] and torch.equal(acts[6], ds.at(6))
    back = from_steering_vector(SteeringVector(acts))
    assert torch.equal(back.vectors, ds.vectors) and back.layers == [3, 6]
    assert back.provenance["source"] == "steering-vectors SteeringVector"
    with pytest.raises(ValueError, match="'mlp'"):
        from_steering_vector(SteeringVector(acts, layer_type="mlp"))
    torch.save(acts, tmp_path / "sv.pt")
    assert torch.equal(load_steering_vector(tmp_path / "sv.pt").vectors, ds.vectors)
    save_file({str(k): v for k, v in acts.items()}, str(tmp_path / "sv.safetensors"))
    loaded = load_steering_vector(tmp_path / "sv.safetensors")
    assert loaded.layers == [3, 6] and loaded.provenance["file"].endswith("sv.safetensors")


class Payload:
    """Unpickling this would write a file: loading must refuse it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_loading_never_runs_code(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"layer_activations": Payload(marker)}, tmp_path / "evil.pt")
    for load in (load_steering_vector, load_paper_vectors):
        with pytest.raises(ValueError, match=r"evil\.pt is not .*weights_only=True"):
            load(tmp_path / "evil.pt")
    assert not marker.exists()
    (tmp_path / "junk.pt").write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match=r"junk\.pt is not"):
        load_steering_vector(tmp_path / "junk.pt")


def hs_file(path, layers):
    """What the papers' collect_hidden_states returns and their scripts torch.save."""
    means = {f"layer_{i}": v for i, v in layers.items()}
    torch.save({"question": means, "answer": means}, path)
    return path


def test_paper_mean_diff_is_misaligned_minus_aligned_answer_means(tmp_path):
    g = torch.Generator().manual_seed(1)
    mis = {i: torch.randn(8, generator=g) for i in range(4)}
    ali = {i: torch.randn(8, generator=g) for i in range(4)}
    ds = load_paper_mean_diff(hs_file(tmp_path / "m.pt", mis), hs_file(tmp_path / "a.pt", ali))
    assert ds.layers == [0, 1, 2, 3]
    assert torch.equal(ds.vectors, torch.stack([mis[i] - ali[i] for i in range(4)]))
    assert ds.provenance["key"] == "answer" and ds.provenance["files"][1].endswith("a.pt")
    short = hs_file(tmp_path / "short.pt", {0: mis[0]})
    with pytest.raises(ValueError, match="different layers"):
        load_paper_mean_diff(tmp_path / "m.pt", short)
    torch.save({"answer": {"l0": mis[0]}}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=r"bad\.pt is not a collect_hidden_states file"):
        load_paper_mean_diff(tmp_path / "bad.pt", short)


def test_paper_vectors_in_each_shape_their_code_saves(tmp_path):
    v = torch.arange(6.0)
    torch.save({"steering_vector": v, "layer_idx": 24, "alpha": 2.0}, tmp_path / "sv.pt")
    ds = load_paper_vectors(tmp_path / "sv.pt")
    assert ds.layers == [24] and torch.equal(ds.at(24), 2 * v)  # the vector they add
    assert ds.provenance["alpha"] == 2.0 and ds.provenance["layer_idx"] == 24
    torch.save([v, -v], tmp_path / "list.pt")
    assert torch.equal(load_paper_vectors(tmp_path / "list.pt").at(1), -v)
    torch.save({"layer_3": v}, tmp_path / "dict.pt")
    assert load_paper_vectors(tmp_path / "dict.pt").layers == [3]
    torch.save({"steering_vector": v}, tmp_path / "nolayer.pt")
    with pytest.raises(ValueError, match="without layer_idx"):
        load_paper_vectors(tmp_path / "nolayer.pt")
    torch.save(torch.zeros(3, 3), tmp_path / "matrix.pt")
    with pytest.raises(ValueError, match="found Tensor"):
        load_paper_vectors(tmp_path / "matrix.pt")


def test_save_paper_steering_vector_round_trip(tmp_path):
    ds = directions(layers=(2, 5))
    save_paper_steering_vector(ds, 5, tmp_path / "steering_vector.pt")
    raw = torch.load(tmp_path / "steering_vector.pt", weights_only=True)
    assert raw["layer_idx"] == 5 and raw["alpha"] == 1.0
    back = load_paper_vectors(tmp_path / "steering_vector.pt")
    assert back.layers == [5] and torch.equal(back.at(5), ds.at(5))
