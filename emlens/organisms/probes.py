"""LoRA scalars and the L1 logistic-regression probes on them.

Convergent Linear Representations of EM (arXiv 2506.11618) reads each rank-1 adapter as one
number per token, the LoRA scalar A . x (x the adapter's input), and fits L1-regularised
logistic regressions on these scalars to ask which adapters carry what (misaligned vs aligned
answers, medical vs not). Here: scalars on answer tokens through forward hooks on peft's own
``lora_A`` modules of an unmerged model; probes with scikit-learn on z-scored features,
balanced classes, repeated stratified splits, reporting accuracy and AUC with their spread
and the coefficient of each adapter.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from emlens.core.data import Conversation
from emlens.core.models import input_device
from emlens.core.tokens import pad_batch
from emlens.organisms.finetune import conversation_rows

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedTokenizerBase


@dataclass
class LoraScalars:
    """Per-token LoRA scalars A . x on answer tokens: ``values[i, j]`` is adapter
    ``names[j]`` at token i, which belongs to conversation ``sample[i]``."""

    values: Float[Tensor, "n_tokens n_adapters"]
    sample: Int[Tensor, " n_tokens"]
    names: list[str]

    @property
    def n_samples(self) -> int:
        return int(self.sample.max()) + 1 if len(self.sample) else 0

    def per_sample_mean(self) -> Float[Tensor, "n_samples n_adapters"]:
        """Mean scalar of each adapter over each conversation's answer tokens."""
        sums = torch.zeros(self.n_samples, len(self.names), dtype=torch.float64)
        sums.index_add_(0, self.sample, self.values.double())
        counts = torch.bincount(self.sample, minlength=self.n_samples).clamp_min(1)
        return (sums / counts[:, None]).float()


def _lora_a_modules(peft_model: PeftModel) -> dict[str, torch.nn.Module]:
    from peft.tuners.lora import LoraLayer

    out = {}
    for name, m in peft_model.named_modules():
        if isinstance(m, LoraLayer):
            for adapter in m.active_adapters:
                if adapter in m.lora_A:
                    r = m.lora_A[adapter].weight.shape[0]
                    if r != 1:
                        raise ValueError(f"{name} is rank {r}: LoRA scalars need rank-1 adapters")
                    out[re.sub(r"^base_model\.model\.", "", name)] = m.lora_A[adapter]
    if not out:
        raise ValueError("the model has no active LoRA adapter (expected an unmerged PeftModel)")
    return out


@torch.no_grad()
def lora_scalars(
    peft_model: PeftModel,
    tok: PreTrainedTokenizerBase,
    data: Sequence[Conversation],
    batch_size: int = 8,
    progress: bool = True,
) -> LoraScalars:
    """The LoRA scalar A . x of every rank-1 adapter at every answer token of ``data``.

    ``peft_model`` is unmerged (:func:`emlens.organisms.lora.load_unmerged`, or a run's
    ``TrainResult.model``). Hooks read the outputs of peft's ``lora_A`` modules: A . x
    (dropout is off in eval mode), before the scaling and B. Only the decoder runs (no logits).
    """
    modules = _lora_a_modules(peft_model)
    decoder = peft_model.get_base_model().get_decoder()
    device = input_device(decoder)
    names = list(modules)
    rows = conversation_rows(tok, data)
    captured: dict[str, Tensor] = {}

    def hook_for(name: str):
        def fn(module, inputs, output) -> None:
            captured[name] = output[..., 0]

        return fn

    handles = [m.register_forward_hook(hook_for(n)) for n, m in modules.items()]
    values, samples = [], []
    was_training = peft_model.training
    peft_model.eval()
    try:
        for b in tqdm(range(0, len(rows), batch_size), desc="lora scalars", disable=not progress):
            idx = list(range(b, min(b + batch_size, len(rows))))
            batch = pad_batch([rows[i] for i in idx], tok.pad_token_id)
            captured.clear()
            am = batch.attention_mask.long().to(device)
            decoder(input_ids=batch.tokens.to(device), attention_mask=am)
            missing = [n for n in names if n not in captured]
            if missing:
                raise RuntimeError(f"adapters {missing} did not run (merged or disabled?)")
            mask = batch.mask & batch.attention_mask
            per = [captured[n][mask.to(captured[n].device)].float().cpu() for n in names]
            values.append(torch.stack(per, dim=-1))
            samples.append(torch.tensor(idx)[:, None].expand_as(mask)[mask])
    finally:
        for h in handles:
            h.remove()
        peft_model.train(was_training)
    return LoraScalars(torch.cat(values), torch.cat(samples), names)


@dataclass
class ProbeResult:
    """Probe scores over repeated splits (mean and standard deviation) and coefficients.

    ``accuracy`` is balanced accuracy (mean recall per class); ``coef[j]`` is the weight of
    feature j in z-scored units, averaged over repeats.
    """

    accuracy: float
    accuracy_std: float
    auc: float
    auc_std: float
    coef: Float[Tensor, " n_features"]
    coef_std: Float[Tensor, " n_features"]
    feature_names: list[str]
    repeats: int
    n_train: int
    n_test: int

    def coefficients(self) -> dict[str, float]:
        """Mean coefficient by feature name (for LoRA scalars: by adapter)."""
        return dict(zip(self.feature_names, self.coef.tolist()))


def fit_probe(
    X: Float[Tensor, "n n_features"] | np.ndarray,
    y: Sequence[int] | np.ndarray | Tensor,
    groups: Sequence[int] | np.ndarray | Tensor | None = None,
    feature_names: Sequence[str] | None = None,
    C: float = 1.0,
    repeats: int = 20,
    test_size: float = 0.25,
    seed: int = 0,
) -> ProbeResult:
    """L1-regularised logistic regression of binary ``y`` on ``X``, over repeated splits.

    Each repeat subsamples the larger class to the size of the smaller (balanced classes),
    splits stratified by class, z-scores features on the training part, fits, and scores
    the test part. ``groups`` (e.g. the conversation of each token) keeps every group on
    one side of the split, and classes are balanced by groups; every group needs one label.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score
    from sklearn.model_selection import StratifiedShuffleSplit
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    if X.ndim != 2 or y.ndim != 1 or len(X) != len(y):
        raise ValueError(f"expected X [n, n_features] and y [n]; got {X.shape} and {y.shape}")
    if set(np.unique(y).tolist()) != {0, 1}:
        raise ValueError(f"y must hold both classes 0 and 1, got {np.unique(y).tolist()}")
    if not np.isfinite(X).all():
        raise ValueError("X contains NaN or inf")
    if repeats < 1 or not 0 < test_size < 1 or C <= 0:
        raise ValueError("need repeats >= 1, 0 < test_size < 1 and C > 0")
    names = (
        list(feature_names) if feature_names is not None else [f"x{j}" for j in range(X.shape[1])]
    )
    if len(names) != X.shape[1]:
        raise ValueError(f"{len(names)} feature names for {X.shape[1]} features")
    groups = np.arange(len(y)) if groups is None else np.asarray(groups)
    if groups.shape != y.shape:
        raise ValueError(f"groups must have one entry per row: {groups.shape} vs {y.shape}")
    uniq, inverse = np.unique(groups, return_inverse=True)
    g_label = np.zeros(len(uniq), dtype=int)
    g_label[inverse] = y
    if (g_label[inverse] != y).any():
        raise ValueError("a group holds both classes: every group must have one label")
    by_class = [np.flatnonzero(g_label == c) for c in (0, 1)]
    n_per = min(len(g) for g in by_class)
    if n_per < 2:
        raise ValueError("each class needs at least 2 groups (samples) to split")

    accs, aucs, coefs = [], [], []
    n_train = n_test = 0
    for r in range(repeats):
        rng = np.random.default_rng([seed, r])
        chosen = np.concatenate([rng.choice(g, n_per, replace=False) for g in by_class])
        split = StratifiedShuffleSplit(n_splits=1, test_size=test_size, random_state=seed + r)
        g_train, g_test = next(split.split(chosen, g_label[chosen]))
        train = np.isin(inverse, chosen[g_train])
        test = np.isin(inverse, chosen[g_test])
        probe = make_pipeline(
            StandardScaler(),
            LogisticRegression(
                l1_ratio=1.0, C=C, solver="liblinear", class_weight="balanced", random_state=r
            ),
        )
        probe.fit(X[train], y[train])
        p = probe.predict_proba(X[test])[:, 1]
        accs.append(balanced_accuracy_score(y[test], p >= 0.5))
        aucs.append(roc_auc_score(y[test], p))
        coefs.append(probe[-1].coef_[0])
        n_train, n_test = int(train.sum()), int(test.sum())
    coefs = np.stack(coefs)
    return ProbeResult(
        accuracy=float(np.mean(accs)),
        accuracy_std=float(np.std(accs)),
        auc=float(np.mean(aucs)),
        auc_std=float(np.std(aucs)),
        coef=torch.from_numpy(coefs.mean(0)).float(),
        coef_std=torch.from_numpy(coefs.std(0)).float(),
        feature_names=names,
        repeats=repeats,
        n_train=n_train,
        n_test=n_test,
    )


def probe_lora_scalars(
    positive: LoraScalars, negative: LoraScalars, per_token: bool = True, **kw
) -> ProbeResult:
    """Probe telling ``positive`` from ``negative`` conversations by their LoRA scalars.

    ``per_token``: one row per answer token, split by conversation; otherwise one row per
    conversation (its mean scalars). Keywords go to :func:`fit_probe`.
    """
    if positive.names != negative.names:
        raise ValueError("the two scalar sets come from different adapters")
    if per_token:
        X = torch.cat([positive.values, negative.values])
        groups = torch.cat([positive.sample, negative.sample + positive.n_samples])
        y = [1] * len(positive.values) + [0] * len(negative.values)
        return fit_probe(X, y, groups=groups, feature_names=positive.names, **kw)
    pos, neg = positive.per_sample_mean(), negative.per_sample_mean()
    y = [1] * len(pos) + [0] * len(neg)
    return fit_probe(torch.cat([pos, neg]), y, feature_names=positive.names, **kw)
