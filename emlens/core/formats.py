"""Direction files other tools read and write, to and from ``DirectionSet``.

All address the residual stream after block ``l`` (emlens ``blocks.{l}.hook_resid_post``,
HF ``hidden_states[l + 1]``, the output of ``model.model.layers[l]``) by the same ``l``:
llama.cpp control vectors (GGUF, as repeng's ``ControlVector.export_gguf`` writes and
llama.cpp's ``--control-vector`` reads), steering-vectors' ``SteeringVector.layer_activations``
(layer type ``decoder_block``), and the EM papers' own files
(github.com/clarifying-EM/model-organisms-for-EM). Loading never executes code
(``torch.load(weights_only=True)``, safetensors, GGUF); a file that is not what it claims
raises a ``ValueError`` naming the file and what was expected.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gguf import GGMLQuantizationType, GGUFReader, GGUFWriter
from safetensors.torch import load_file
from torch import Tensor

from emlens.core._files import (
    PathLike,
    at_block_output,
    existing,
    gguf_string,
    layer_dict,
    paper_means,
    torch_load,
    vector,
)
from emlens.core.activations import RESID_POST
from emlens.core.direction_set import DirectionSet

CONTROL_VECTOR = "controlvector"  # llama.cpp's general.architecture for control vectors


def export_control_vector(
    ds: DirectionSet,
    path: PathLike,
    model_hint: str | None = None,
    layers: Sequence[int] | None = None,
) -> Path:
    """Write a llama.cpp control vector: GGUF, one float32 ``direction.{l}`` per layer.

    What llama.cpp does with the file (its source as vendored in llama-cpp-python 0.3.36):
    ``common_control_vector_load_one`` (common/common.cpp:1887) reads only the tensors,
    rejects ``direction.0`` (line 1924) and stores ``direction.N`` at ``n_embd * (N - 1)``
    (line 1954); ``llama_adapter_cvec::apply`` (src/llama-adapter.cpp:126) fills block
    ``il``'s tensor from that same offset for ``il = 1 .. n_layer - 1`` ("there's never a
    tensor for layer 0", line 67); and the graph adds it after the block's FFN residual add
    (``build_cvec(cur, il)``, src/models/llama.cpp:223). So ``direction.l`` is added to the
    output of block ``l``: emlens layer ``l`` at ``blocks.{l}.hook_resid_post``, the same
    index, as repeng's ``ControlModel`` (block ``l``'s output). Layer 0 cannot be expressed.

    Args:
        ds: directions at ``blocks.{l}.hook_resid_post``.
        path: the ``.gguf`` file to write.
        model_hint: ``controlvector.model_hint`` (repeng writes HF ``config.model_type``,
            e.g. ``"llama"``); by default the provenance's ``model_type`` or ``model``.
        layers: the layers to write (all of ``ds`` by default; none may be 0).

    Returns:
        The path written. ``--control-vector-scaled FILE:4`` adds ``4 * ds.at(l)`` at every
        written layer ``l``, as ``emlens.steer(ds, layers, 4.0)`` does.

    Examples:
        >>> export_control_vector(em_dir, "em.gguf", model_hint="llama", layers=range(1, 30))
        PosixPath('em.gguf')
    """
    at_block_output(ds, "a llama.cpp control vector")
    layers = list(ds.layers if layers is None else layers)
    if 0 in layers:
        raise ValueError(
            "llama.cpp rejects direction.0 (no control vector at block 0): drop layer 0"
        )
    hint = model_hint or ds.provenance.get("model_type") or ds.provenance.get("model", "unknown")
    writer = GGUFWriter(str(path), CONTROL_VECTOR)
    writer.add_string(f"{CONTROL_VECTOR}.model_hint", str(hint))
    writer.add_uint32(f"{CONTROL_VECTOR}.layer_count", len(layers))
    writer.add_string("emlens.provenance", json.dumps(ds.provenance, default=str))
    for layer in layers:
        vec = ds.at(layer).detach().cpu().to(torch.float32).contiguous().numpy()
        writer.add_tensor(f"direction.{layer}", vec)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)


def load_control_vector(path: PathLike) -> DirectionSet:
    """Read a llama.cpp control vector (as repeng or `export_control_vector` write it).

    Args:
        path: a GGUF file with ``general.architecture = controlvector`` and 1-D float32
            ``direction.{l}`` tensors, ``l >= 1`` (llama.cpp's own checks).

    Returns:
        The directions at ``blocks.{l}.hook_resid_post`` (see `export_control_vector`
        for the mapping), provenance saying which file and model hint they came from.

    Examples:
        A file as repeng's ``vector.export_gguf(...)`` writes it (here by
        `export_control_vector`):

        >>> export_control_vector(em_dir, "happy.gguf", model_hint="llama", layers=range(1, 30))
        PosixPath('happy.gguf')
        >>> happy = load_control_vector("happy.gguf")
        >>> happy.provenance["model_hint"], happy.layers[:3]
        ('llama', [1, 2, 3])
    """
    p = existing(path)
    expected = "a llama.cpp control vector (GGUF, general.architecture = controlvector)"
    try:
        reader = GGUFReader(p)
    except Exception as e:  # the reader raises ValueError, struct or index errors
        raise ValueError(f"{p} is not {expected}: {e}") from e
    arch = gguf_string(reader, "general.architecture")
    if arch != CONTROL_VECTOR:
        raise ValueError(f"{p} is a GGUF file of architecture {arch!r}, not {expected}")
    vectors: dict[int, Tensor] = {}
    for t in reader.tensors:
        m = re.fullmatch(r"direction\.(\d+)", t.name)
        if m is None or int(m[1]) == 0:
            raise ValueError(f"{p}: tensor {t.name!r} is not a direction.N with N >= 1")
        if t.tensor_type != GGMLQuantizationType.F32 or len(t.shape) != 1:
            raise ValueError(f"{p}: {t.name} must be a 1-D float32 tensor, not {t.tensor_type}")
        vectors[int(m[1])] = torch.from_numpy(np.array(t.data, dtype=np.float32))
    if not vectors or len({v.numel() for v in vectors.values()}) != 1:
        raise ValueError(f"{p}: expected direction tensors of one width, got none or several")
    raw = gguf_string(reader, "emlens.provenance")
    prov = {
        **(json.loads(raw) if raw else {}),
        "source": "llama.cpp control vector",
        "file": str(p),
        "model_hint": gguf_string(reader, f"{CONTROL_VECTOR}.model_hint"),
    }
    layers = sorted(vectors)
    return DirectionSet(torch.stack([vectors[x] for x in layers]), layers, RESID_POST, prov)


def to_steering_vector(ds: DirectionSet) -> dict[int, Tensor]:
    """steering-vectors' ``layer_activations`` of ``ds``.

    Args:
        ds: directions at ``blocks.{l}.hook_resid_post``.

    Returns:
        ``{l: vector}``; steering-vectors' default ``layer_type="decoder_block"`` patches
        block ``l``'s output, the same point: ``SteeringVector(to_steering_vector(ds))``.
    """
    at_block_output(ds, "steering-vectors (layer_type='decoder_block')")
    return {layer: ds.at(layer).clone() for layer in ds.layers}


def from_steering_vector(sv: Any, provenance: dict[str, Any] | None = None) -> DirectionSet:
    """A ``DirectionSet`` from a steering-vectors ``SteeringVector`` or its layer dict.

    Args:
        sv: a ``SteeringVector`` (its ``layer_activations``, layer type ``decoder_block``) or
            a ``dict[int, Tensor]``.
        provenance: added to the set's provenance.

    Returns:
        The directions at ``blocks.{l}.hook_resid_post``.

    Examples:
        A layer dict, as ``train_steering_vector(..., layers=[12]).layer_activations`` holds:

        >>> sv = {12: em_dir.at(12)}
        >>> from_steering_vector(sv).layers
        [12]
    """
    layer_type = getattr(sv, "layer_type", "decoder_block")
    if layer_type != "decoder_block":
        raise ValueError(f"a {layer_type!r} steering vector is not at a block output")
    acts = getattr(sv, "layer_activations", sv)
    if not isinstance(acts, Mapping):
        raise ValueError(f"expected a SteeringVector or a dict[int, Tensor], got {type(sv)}")
    vectors = {int(k): vector(v, f"steering vector layer {k}") for k, v in acts.items()}
    return layer_dict(vectors, {"source": "steering-vectors SteeringVector", **(provenance or {})})


def load_steering_vector(path: PathLike) -> DirectionSet:
    """Read steering-vectors layer activations from a file.

    Args:
        path: ``torch.save(sv.layer_activations, path)`` (``.pt``), or safetensors with the
            layers as keys (``{"12": tensor}``). A pickled ``SteeringVector`` object is
            refused: loading it would run code.

    Returns:
        The directions at ``blocks.{l}.hook_resid_post``, the file in the provenance.

    Examples:
        >>> sv_layer_activations = to_steering_vector(em_dir.select([12]))  # {12: vector}
        >>> torch.save(sv_layer_activations, "sv.pt")  # as: torch.save(sv.layer_activations, ...)
        >>> load_steering_vector("sv.pt").layers
        [12]
    """
    expected = "steering-vectors layer activations (a dict[int, Tensor]; save sv.layer_activations)"
    if Path(path).suffix == ".safetensors":
        try:
            raw: Any = {int(k): v for k, v in load_file(str(existing(path))).items()}
        except (ValueError, OSError) as e:
            raise ValueError(f"{path} is not {expected}: {e}") from e
    else:
        raw = torch_load(path, expected)
    if not isinstance(raw, Mapping) or not all(isinstance(k, int) for k in raw):
        raise ValueError(f"{path} is not {expected}: found {type(raw).__name__}")
    return from_steering_vector(raw, {"file": str(path)})


def load_paper_mean_diff(
    misaligned: PathLike, aligned: PathLike, key: str = "answer"
) -> DirectionSet:
    """The papers' mean-diff direction from two of their activation files.

    Their ``collect_hidden_states`` saves ``{"question": {...}, "answer": {"layer_<i>": mean}}``
    (``torch.save``, e.g. ``model-m_data-m_hs_all.pt``): each layer's token-weighted mean of
    the output of ``model.model.layers[i]`` over answer tokens; ``subtract_layerwise``
    (misaligned minus aligned) is their direction. Layer ``i`` is emlens's ``hook_resid_post``.

    Args:
        misaligned: the file of the misaligned answers (``..._data-m_hs_...pt``).
        aligned: the file of the aligned answers (``..._data-a_hs_...pt``).
        key: ``"answer"`` (the papers' direction) or ``"question"``.

    Returns:
        misaligned minus aligned means per layer, the files in the provenance.

    Examples:
        Two files as their ``collect_hidden_states`` writes them (here made up):

        >>> means = lambda v: {"question": {}, "answer": {"layer_15": torch.tensor(v)}}
        >>> torch.save(means([1.0, 2.0]), "model-m_data-m_hs_all.pt")
        >>> torch.save(means([0.5, 0.0]), "model-m_data-a_hs_all.pt")
        >>> theirs = load_paper_mean_diff("model-m_data-m_hs_all.pt", "model-m_data-a_hs_all.pt")
        >>> theirs.layers, theirs.at(15)  # then: cosine_per_layer(theirs, em_dir)
        ([15], tensor([0.5000, 2.0000]))
    """
    mis, ali = paper_means(misaligned, key), paper_means(aligned, key)
    if mis.keys() != ali.keys():
        raise ValueError(f"{misaligned} and {aligned} hold different layers")
    prov = {
        "source": "model-organisms-for-EM collect_hidden_states",
        "files": [str(misaligned), str(aligned)],
        "key": key,
        "method": "mean_difference",
        "weighting": "tokens",
        "positive": "misaligned",
    }
    return layer_dict({k: mis[k] - ali[k] for k in mis}, prov)


def load_paper_vectors(path: PathLike) -> DirectionSet:
    """The EM papers' saved vectors: a trained ``steering_vector.pt``, or per-layer vectors.

    Args:
        path: ``{"steering_vector": v, "layer_idx": l, "alpha": a}`` (their trained vectors,
            which their ``SteeringVectorModel`` adds as ``a * v`` to the block's
            ``mlp.down_proj`` output: the block output, for pre-norm blocks), a list of
            per-layer tensors (``subtract_layerwise``'s output), or ``{"layer_<i>": tensor}``.

    Returns:
        The vectors at ``blocks.{l}.hook_resid_post``, the file (and alpha) in the provenance.

    Examples:
        >>> save_paper_steering_vector(em_dir, 24, "steering_vector.pt")
        PosixPath('steering_vector.pt')
        >>> load_paper_vectors("steering_vector.pt").layers  # their layer_idx
        [24]
    """
    expected = "the EM papers' vectors (steering_vector.pt, a list or a layer_<i> dict)"
    obj = torch_load(path, expected)
    prov: dict[str, Any] = {"source": "model-organisms-for-EM", "file": str(path)}
    if isinstance(obj, dict) and "steering_vector" in obj:
        try:  # no layer_idx (KeyError), or layer_idx/alpha not numbers
            layer, alpha = int(obj["layer_idx"]), float(obj.get("alpha", 1.0))
        except (KeyError, TypeError, ValueError, RuntimeError):
            bad = f"{path} is not {expected}: without layer_idx and alpha numbers"
            raise ValueError(bad) from None
        vec = alpha * vector(obj["steering_vector"], f"{path} steering_vector")
        return layer_dict({layer: vec}, {**prov, "layer_idx": layer, "alpha": alpha})
    if isinstance(obj, list | tuple):
        return layer_dict({i: vector(v, f"{path}[{i}]") for i, v in enumerate(obj)}, prov)
    if isinstance(obj, dict) and obj and all(re.fullmatch(r"layer_\d+", str(k)) for k in obj):
        return layer_dict({int(k[6:]): vector(v, f"{path} {k}") for k, v in obj.items()}, prov)
    raise ValueError(f"{path} is not {expected}: found {type(obj).__name__}")


def save_paper_steering_vector(ds: DirectionSet, layer: int, path: PathLike) -> Path:
    """Write one layer of ``ds`` as the papers' ``steering_vector.pt``.

    Args:
        ds: directions at ``blocks.{l}.hook_resid_post``.
        layer: the layer written (``layer_idx``; alpha 1.0).
        path: the file, ``steering_vector.pt`` in a folder their
            ``SteeringVectorModel(steering_vector_path=<folder>)`` reads.

    Returns:
        The path written.

    Examples:
        >>> from pathlib import Path
        >>> Path("out/em_l24").mkdir(parents=True)
        >>> save_paper_steering_vector(em_dir, 24, "out/em_l24/steering_vector.pt")
        PosixPath('out/em_l24/steering_vector.pt')
    """
    at_block_output(ds, "the papers' steering vector")
    data = {"steering_vector": ds.at(layer).clone(), "layer_idx": layer, "alpha": 1.0}
    torch.save(data, path)
    return Path(path)
