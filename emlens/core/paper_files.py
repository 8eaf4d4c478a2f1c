"""The EM papers' own direction files (github.com/clarifying-EM/model-organisms-for-EM), to
and from ``DirectionSet``.

Their activation means (``collect_hidden_states`` / ``subtract_layerwise``) and their trained
steering vector (``SteeringVectorModel``'s ``steering_vector.pt``), addressed by the same block
``l`` as emlens's ``blocks.{l}.hook_resid_post``. Loading never executes code
(``torch.load(weights_only=True)``); a file that is not what it claims raises a ``ValueError``
naming the file and what was expected. Other tools' formats: `emlens.core.formats`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from emlens.core._files import (
    PathLike,
    at_block_output,
    layer_dict,
    paper_means,
    torch_load,
    vector,
)
from emlens.core.direction_set import DirectionSet


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
