"""Statistics behind every "model A beats model B" in the study: intervals, paired tests and a verdict.

A difference of one or two points of test accuracy on FER2013 (3,589 PublicTest images) can be noise: of the test
images the two models disagree on, or of the seed the models were trained with. This module turns such a claim
into numbers:

* ``bootstrap_accuracy_interval`` -- how precisely one accuracy is known, given the test set's size;
* ``mcnemar_exact`` -- whether two models scored on the *same* test images differ by more than chance;
* ``bootstrap_difference_interval`` -- how precisely their accuracy difference on those images is known;
* ``paired_seed_comparison`` -- whether two models trained on the *same* seeds differ by more than seed noise;
* ``mean_std`` -- the summary of per-seed results;
* ``verdict`` -- one word for the claim "A > B", by a rule written down once.

Pure: numpy and scipy only, no Keras, so it imports anywhere (notebooks, reports, tests). Every function checks
its inputs (a ``ValueError`` names the argument and what was expected) and returns JSON-ready Python types
(``float``, ``int``, ``None``, ``str``), never numpy scalars, so the results can go straight into a run's JSON.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

MIN_RESAMPLES = 1000
# scipy.stats.bootstrap draws resamples this many at a time (bounds memory: 7,178 test images x 250 resamples of
# float64 is ~14 MB); with a numpy Generator the resamples are the same whatever the batch size.
BOOTSTRAP_BATCH = 250
VERDICTS = ("supported", "not supported", "inconclusive")

# SciPy 1.15 renamed bootstrap's `random_state` to `rng`; for a numpy Generator the two are the same thing.
_BOOTSTRAP_RNG_KEYWORD = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"


# --- input checks --------------------------------------------------------------------------------------------


def _as_1d(values: Any, name: str, *, numeric: bool = False) -> np.ndarray:
    """``values`` as a non-empty 1-D array, or a ValueError naming ``name``."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D sequence, got an array of shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name}: expected at least one value, got an empty sequence")
    if numeric:
        if array.dtype == bool or not np.issubdtype(array.dtype, np.number):
            raise ValueError(f"{name}: expected numbers, got values of dtype {array.dtype}")
        array = array.astype(np.float64)
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{name}: expected finite numbers, got NaN or infinity")
    return array


def _class_indices(values: Any, name: str) -> np.ndarray:
    """``values`` as a non-empty 1-D array of class indices (any integers: labels are compared, not checked)."""
    if np.ndim(values) == 2:
        raise ValueError(
            f"{name}: expected 1-D class indices, got a 2-D array of shape {np.shape(values)} "
            "(for class probabilities, pass their argmax over the last axis)"
        )
    array = _as_1d(values, name)
    if array.dtype == bool or not np.issubdtype(array.dtype, np.integer):
        if np.issubdtype(array.dtype, np.floating) and np.all(np.isfinite(array)) and np.all(array == np.round(array)):
            return array.astype(np.int64)
        hint = " (for class probabilities, pass their argmax)" if np.issubdtype(array.dtype, np.floating) else ""
        raise ValueError(f"{name}: expected integer class indices, got values of dtype {array.dtype}{hint}")
    return array


def _same_length(reference: np.ndarray, reference_name: str, other: np.ndarray, other_name: str) -> None:
    if len(other) != len(reference):
        raise ValueError(
            f"{other_name}: expected one value per entry of {reference_name} ({len(reference)}), got {len(other)}"
        )


def _real(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite real number, got {value!r}")
    return float(value)


def _probability_level(value: Any, name: str) -> float:
    level = _real(value, name)
    if not 0.0 < level < 1.0:
        raise ValueError(f"{name}: expected a number strictly between 0 and 1, got {value!r}")
    return level


# --- one accuracy --------------------------------------------------------------------------------------------


def bootstrap_accuracy_interval(
    labels: Sequence[int] | np.ndarray,
    predicted: Sequence[int] | np.ndarray,
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """A seeded percentile-bootstrap confidence interval of accuracy over the test images.

    Why: a test accuracy is an estimate from a finite test set; the interval says how far it could move with
    another draw of test images of the same size, so two accuracies can be told apart from noise.

    How: the images are resampled with replacement ``resamples`` times; the interval is the
    ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` percentiles of the resampled accuracies. This uses
    ``scipy.stats.bootstrap`` (``method="percentile"``, the statistic is the mean of the 0/1 correctness vector,
    the generator ``numpy.random.default_rng(seed)``) rather than a hand-written loop: it is the reference
    implementation, vectorised, and it fits exactly. Percentile rather than scipy's default BCa, because BCa
    is undefined (NaN, with a warning) when every image is right or every image is wrong, and for a mean of
    thousands of 0/1 values the two agree closely. Same seed, same interval.

    ``resamples`` must be at least 1,000 (fewer make the tail percentiles themselves noisy); labels outside
    0..6 are accepted (they are compared, not checked), but ``predicted`` must have one entry per label.
    """
    labels_array = _class_indices(labels, "labels")
    predicted_array = _class_indices(predicted, "predicted")
    _same_length(labels_array, "labels", predicted_array, "predicted")
    if len(labels_array) < 2:
        raise ValueError(f"labels: a bootstrap needs at least 2 test images, got {len(labels_array)}")
    level = _probability_level(confidence, "confidence")
    if isinstance(resamples, bool) or not isinstance(resamples, numbers.Integral):
        raise ValueError(f"resamples: expected an integer of at least {MIN_RESAMPLES}, got {resamples!r}")
    if resamples < MIN_RESAMPLES:
        raise ValueError(f"resamples: expected at least {MIN_RESAMPLES} bootstrap resamples, got {resamples}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")

    correct = (labels_array == predicted_array).astype(np.float64)
    result = stats.bootstrap(
        (correct,),
        np.mean,
        n_resamples=int(resamples),
        batch=BOOTSTRAP_BATCH,
        vectorized=True,
        confidence_level=level,
        method="percentile",
        **{_BOOTSTRAP_RNG_KEYWORD: np.random.default_rng(int(seed))},
    )
    return {
        "accuracy": float(correct.mean()),
        "low": float(result.confidence_interval.low),
        "high": float(result.confidence_interval.high),
        "confidence": level,
        "resamples": int(resamples),
        "seed": int(seed),
        "method": "percentile bootstrap over test images (scipy.stats.bootstrap)",
    }


# --- two models, the same test images ------------------------------------------------------------------------


def mcnemar_exact(
    labels: Sequence[int] | np.ndarray,
    predicted_a: Sequence[int] | np.ndarray,
    predicted_b: Sequence[int] | np.ndarray,
) -> dict[str, Any]:
    """McNemar's exact test: do models A and B, scored on the same test images, differ by more than chance?

    Why: two accuracies on the same images are not independent, so comparing their intervals is the wrong
    test; only the images where exactly one model is right carry evidence. With b = images A gets right and B
    wrong and c = the reverse, under "no difference" b ~ Binomial(b + c, 1/2); the two-sided p-value is
    ``scipy.stats.binomtest(b, b + c, 0.5).pvalue`` (1.0 when b + c == 0: the models never disagree in
    correctness). Exact rather than the chi-square approximation, which is poor when b + c is small.
    """
    labels_array = _class_indices(labels, "labels")
    a = _class_indices(predicted_a, "predicted_a")
    b_pred = _class_indices(predicted_b, "predicted_b")
    _same_length(labels_array, "labels", a, "predicted_a")
    _same_length(labels_array, "labels", b_pred, "predicted_b")

    a_right = a == labels_array
    b_right = b_pred == labels_array
    b = int(np.count_nonzero(a_right & ~b_right))
    c = int(np.count_nonzero(~a_right & b_right))
    p_value = 1.0 if b + c == 0 else float(stats.binomtest(b, b + c, 0.5).pvalue)
    return {
        "a_right_b_wrong": b,
        "a_wrong_b_right": c,
        "n": int(len(labels_array)),
        "p_value": p_value,
        "method": "McNemar exact (binomial), two-sided",
    }


def bootstrap_difference_interval(
    labels: Sequence[int] | np.ndarray,
    predicted_a: Sequence[int] | np.ndarray,
    predicted_b: Sequence[int] | np.ndarray,
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """A seeded paired percentile-bootstrap interval of accuracy(A) - accuracy(B) on the same test images.

    Why: McNemar's test says whether A and B differ; this says by how much, with the uncertainty of the test
    set's draw, so a claim "A > B" gets a difference, an interval and a p-value (see :func:`verdict`). The images
    are resampled together for both models (``scipy.stats.bootstrap`` with ``paired=True``), keeping the pairing
    that makes the comparison sharper than two separate intervals.
    """
    labels_array = _class_indices(labels, "labels")
    a = _class_indices(predicted_a, "predicted_a")
    b = _class_indices(predicted_b, "predicted_b")
    _same_length(labels_array, "labels", a, "predicted_a")
    _same_length(labels_array, "labels", b, "predicted_b")
    if len(labels_array) < 2:
        raise ValueError(f"labels: a bootstrap needs at least 2 test images, got {len(labels_array)}")
    level = _probability_level(confidence, "confidence")
    if isinstance(resamples, bool) or not isinstance(resamples, numbers.Integral) or resamples < MIN_RESAMPLES:
        raise ValueError(f"resamples: expected an integer of at least {MIN_RESAMPLES}, got {resamples!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
    right_a = (a == labels_array).astype(np.float64)
    right_b = (b == labels_array).astype(np.float64)
    result = stats.bootstrap(
        (right_a, right_b),
        lambda x, y, axis=-1: np.mean(x, axis=axis) - np.mean(y, axis=axis),
        n_resamples=int(resamples),
        batch=BOOTSTRAP_BATCH,
        vectorized=True,
        paired=True,
        confidence_level=level,
        method="percentile",
        **{_BOOTSTRAP_RNG_KEYWORD: np.random.default_rng(int(seed))},
    )
    return {
        "difference": float(right_a.mean() - right_b.mean()),
        "low": float(result.confidence_interval.low),
        "high": float(result.confidence_interval.high),
        "confidence": level,
        "resamples": int(resamples),
        "seed": int(seed),
        "method": "paired percentile bootstrap over test images (scipy.stats.bootstrap, paired=True)",
    }


# --- two models, the same seeds ------------------------------------------------------------------------------


def mean_std(values: Sequence[float] | np.ndarray) -> dict[str, Any]:
    """Mean, sample standard deviation (ddof=1) and count of per-seed results.

    Why: a result from several seeds is reported as mean +- std so the seed-to-seed spread is visible; the
    std of a single value is undefined, so it is None rather than a misleading 0.
    """
    array = _as_1d(values, "values", numeric=True)
    return {
        "mean": float(array.mean()),
        "std": float(array.std(ddof=1)) if len(array) > 1 else None,
        "n": int(len(array)),
    }


def mean_interval(values: Sequence[float] | np.ndarray, *, confidence: float = 0.95) -> dict[str, Any]:
    """The ``confidence`` t-interval of the mean of per-seed results (``scipy.stats.t.interval``).

    Why: the README's interval column for a several-seed run says where the mean over seeds lies, not how one
    seed's test accuracy varies over test images. With one value (or no spread) the interval is None.
    """
    array = _as_1d(values, "values", numeric=True)
    level = _probability_level(confidence, "confidence")
    result: dict[str, Any] = {"mean": float(array.mean()), "low": None, "high": None, "n": int(len(array)),
                              "confidence": level, "method": "t-interval of the mean over seeds"}
    if len(array) > 1 and float(array.std(ddof=1)) > 0:
        low, high = stats.t.interval(level, len(array) - 1, loc=float(array.mean()), scale=stats.sem(array))
        result.update(low=float(low), high=float(high))
    return result


def paired_seed_comparison(
    values_a: Sequence[float] | np.ndarray,
    values_b: Sequence[float] | np.ndarray,
    *,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Compare per-seed results of models A and B trained on the same seeds (entry i of both = seed i).

    Why: training noise (initialisation, shuffling, augmentation) moves accuracy by about a point; pairing by
    seed removes what the two runs of a seed share, so the question becomes whether the per-seed differences
    A - B are centred above zero. Returns the mean difference, its standard deviation (ddof=1), the two-sided
    paired t-test p-value (``scipy.stats.ttest_rel``) and the ``confidence`` t-interval of the mean difference,
    ``mean +- t.ppf((1 + confidence) / 2, n - 1) * std / sqrt(n)``.

    With one pair, p-value, std and interval are None and ``note`` says why (one seed cannot give a paired
    test); likewise when every difference is the same (no spread, so the t statistic is undefined).
    """
    a = _as_1d(values_a, "values_a", numeric=True)
    b = _as_1d(values_b, "values_b", numeric=True)
    _same_length(a, "values_a", b, "values_b")
    level = _probability_level(confidence, "confidence")

    differences = a - b
    n = int(len(differences))
    mean_difference = float(differences.mean())
    result: dict[str, Any] = {
        "n": n,
        "mean_a": float(a.mean()),
        "mean_b": float(b.mean()),
        "mean_difference": mean_difference,
        "std_difference": None,
        "p_value": None,
        "low": None,
        "high": None,
        "confidence": level,
        "method": "paired t-test over seeds (scipy.stats.ttest_rel), t-interval of the mean difference",
        "note": None,
    }
    if n < 2:
        result["note"] = "one seed cannot give a paired test: train both models on at least 2 seeds"
        return result

    std_difference = float(differences.std(ddof=1))
    result["std_difference"] = std_difference
    if std_difference <= 1e-12 * max(1.0, abs(mean_difference)):
        result["note"] = "every seed gives the same difference: with no spread the paired t-test is undefined"
        return result

    result["p_value"] = float(stats.ttest_rel(a, b).pvalue)
    half_width = float(stats.t.ppf((1.0 + level) / 2.0, n - 1)) * std_difference / math.sqrt(n)
    result["low"] = mean_difference - half_width
    result["high"] = mean_difference + half_width
    return result


# --- the verdict ---------------------------------------------------------------------------------------------


def verdict(
    difference: float,
    low: float | None,
    high: float | None,
    p_value: float | None,
    *,
    alpha: float = 0.05,
) -> str:
    """One word for the claim "A > B", from the difference A - B, its interval [low, high] and a p-value.

    Why: so that every comparison in the study is judged by the same rule, written down once:

    * ``"supported"`` -- the whole interval lies above 0 (``low > 0``) and ``p_value < alpha``;
    * ``"not supported"`` -- the interval lies at or below 0 (``high <= 0``), or the difference is at or
      below 0 (``difference <= 0``) and ``p_value < alpha`` (B is significantly at least as good);
    * ``"inconclusive"`` -- anything else, e.g. the interval straddles 0, or the interval and the test
      disagree. A missing interval or p-value (None, as from one seed) cannot support the claim.
    """
    diff = _real(difference, "difference")
    low_value = None if low is None else _real(low, "low")
    high_value = None if high is None else _real(high, "high")
    if low_value is not None and high_value is not None and low_value > high_value:
        raise ValueError(f"low: expected low <= high, got low={low!r} and high={high!r}")
    p = None if p_value is None else _real(p_value, "p_value")
    if p is not None and not 0.0 <= p <= 1.0:
        raise ValueError(f"p_value: expected a probability in [0, 1], got {p_value!r}")
    level = _probability_level(alpha, "alpha")

    significant = p is not None and p < level
    if low_value is not None and low_value > 0.0 and significant:
        return "supported"
    if high_value is not None and high_value <= 0.0:
        return "not supported"
    if diff <= 0.0 and significant:
        return "not supported"
    return "inconclusive"
