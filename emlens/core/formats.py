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
