"""Logistic-regression probes: the one place emlens sets one up (scikit-learn's).

Three probes of the papers rest on it: the per-layer probe direction of the method comparison
(`emlens.core.methods.logistic_probe`, L2), the L1 probes on LoRA scalars of Convergent Linear
Representations of EM (`emlens.organisms.probes.fit_l1_probe`: L1, balanced classes) and the
probe judge with its Platt calibration (`emlens.eval.probe.fit.fit_probe_judge`, L2). Each
caller scales its features its own way (centring, z-scores); here are the regression's choices:
the penalty and its solver, class weights, iterations and seed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sklearn.linear_model import LogisticRegression

__all__ = ["l1_penalty", "logistic_regression"]


def l1_penalty(sklearn_version: str | None = None) -> dict[str, Any]:
    """The `LogisticRegression` arguments of an L1 penalty on this scikit-learn.

    Before 1.8, ``l1_ratio`` is ignored unless ``penalty="elasticnet"``, so ``l1_ratio=1.0``
    alone fits an L2 probe; from 1.8, ``penalty`` is deprecated (a FutureWarning) and
    ``l1_ratio=1.0`` is the L1 penalty. Both work with the liblinear solver.

    Args:
        sklearn_version: the version to answer for (default: the installed one).

    Returns:
        ``{"penalty": "l1"}`` before 1.8, ``{"l1_ratio": 1.0}`` from 1.8.

    Examples:
        >>> l1_penalty("1.7.2"), l1_penalty("1.9.1")
        ({'penalty': 'l1'}, {'l1_ratio': 1.0})
    """
    if sklearn_version is None:
        import sklearn

        sklearn_version = sklearn.__version__
    major, minor = (int(x) for x in sklearn_version.split(".")[:2])
    return {"l1_ratio": 1.0} if (major, minor) >= (1, 8) else {"penalty": "l1"}


def logistic_regression(
    C: float,
    l1: bool = False,
    balanced: bool = False,
    max_iter: int = 100,
    seed: int | None = None,
) -> LogisticRegression:
    """A logistic-regression probe with emlens's settings, to fit (``.fit(x, y)``: ``coef_[0]``
    its weights, ``intercept_[0]`` its bias), put in a pipeline or cross-validate.

    Args:
        C: inverse regularisation strength.
        l1: an L1 penalty (the liblinear solver, `l1_penalty`); else L2 (scikit-learn's
            default lbfgs solver).
        balanced: weight the classes equally (``class_weight="balanced"``).
        max_iter: the solver's iterations at most.
        seed: the solver's ``random_state`` (liblinear shuffles the data).

    Returns:
        scikit-learn's ``LogisticRegression`` with these settings, unfitted.

    Examples:
        >>> probe = logistic_regression(C=1.0).fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])
        >>> probe.predict([[0.5], [2.5]]).tolist()
        [0, 1]
    """
    from sklearn.linear_model import LogisticRegression

    penalty: dict[str, Any] = {"solver": "liblinear", **l1_penalty()} if l1 else {}
    return LogisticRegression(
        C=C,
        max_iter=max_iter,
        class_weight="balanced" if balanced else None,
        random_state=seed,
        **penalty,
    )
