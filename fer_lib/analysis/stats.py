"""Statistics behind every "model A beats model B" of the study: a one-point gap on FER2013's test set can be noise.
Intervals and paired tests are scipy's; :func:`verdict` turns them into one word by a rule written down once, and
:func:`run_statistics` is what summary.json holds. No Keras; inputs are checked, results are JSON-ready."""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from fer_lib.analysis.results import SUMMARY_FORMAT, RunResults
from fer_lib.core.data import majority_class_accuracy
from fer_lib.core.evaluate import ensemble_probabilities, evaluate_predictions

MIN_RESAMPLES = 1000
# scipy.stats.bootstrap draws resamples this many at a time (bounds memory: 7,178 test images x 250 resamples of
# float64 is ~14 MB); with a numpy Generator the resamples are the same whatever the batch size.
BOOTSTRAP_BATCH = 250
VERDICTS = ("supported", "not supported", "inconclusive")
ENSEMBLE = "ensemble"
STATISTICS_SPLITS: tuple[str, ...] = ("test", "test_tta", "test_tta10")


# --- input checks --------------------------------------------------------------------------------------------
def _as_1d(values: Any, name: str, *, numeric: bool = False) -> np.ndarray:
    """``values`` as a non-empty 1-D array, or a ValueError naming ``name``."""
    array = np.asarray(values)
    if array.ndim != 1:
        hint = " (for class probabilities, pass their argmax over the last axis)" if array.ndim == 2 else ""
        raise ValueError(f"{name}: expected a 1-D sequence, got an array of shape {array.shape}{hint}")
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
    array = _as_1d(values, name)
    if array.dtype == bool or not np.issubdtype(array.dtype, np.integer):
        if np.issubdtype(array.dtype, np.floating) and np.all(np.isfinite(array)) and np.all(array == np.round(array)):
            return array.astype(np.int64)
        hint = " (for class probabilities, pass their argmax)" if np.issubdtype(array.dtype, np.floating) else ""
        raise ValueError(f"{name}: expected integer class indices, got values of dtype {array.dtype}{hint}")
    return array


def _real(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite real number, got {value!r}")
    return float(value)


def _probability_level(value: Any, name: str) -> float:
    level = _real(value, name)
    if not 0.0 < level < 1.0:
        raise ValueError(f"{name}: expected a number strictly between 0 and 1, got {value!r}")
    return level


def _scored(labels: Any, predicted: dict[str, Any]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Labels and each model's 0/1 correctness, checked to be class indices of one length."""
    labels_array = _class_indices(labels, "labels")
    right = {}
    for name, values in predicted.items():
        array = _class_indices(values, name)
        if len(array) != len(labels_array):
            raise ValueError(f"{name}: expected one value per entry of labels ({len(labels_array)}), got {len(array)}")
        right[name] = (array == labels_array).astype(np.float64)
    return labels_array, right


def _bootstrap(samples: tuple[np.ndarray, ...], statistic: Any, *, confidence: float, resamples: int,
               seed: int, paired: bool = False) -> tuple[float, float, dict[str, Any]]:
    """scipy.stats.bootstrap's percentile interval (same seed, same interval), its settings checked and recorded.
    Not scipy's default BCa, which is NaN when every image is right or every image wrong."""
    if len(samples[0]) < 2:
        raise ValueError(f"labels: a bootstrap needs at least 2 test images, got {len(samples[0])}")
    level = _probability_level(confidence, "confidence")
    if isinstance(resamples, bool) or not isinstance(resamples, numbers.Integral) or resamples < MIN_RESAMPLES:
        raise ValueError(f"resamples: expected an integer of at least {MIN_RESAMPLES}, got {resamples!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
    interval = stats.bootstrap(samples, statistic, n_resamples=int(resamples), batch=BOOTSTRAP_BATCH,
                               vectorized=True, paired=paired, confidence_level=level, method="percentile",
                               rng=np.random.default_rng(int(seed))).confidence_interval
    record = {"confidence": level, "resamples": int(resamples), "seed": int(seed)}
    return float(interval.low), float(interval.high), record


# --- one accuracy, two models on the same images ---------------------------------------------------------------
def bootstrap_accuracy_interval(labels: Sequence[int] | np.ndarray, predicted: Sequence[int] | np.ndarray, *,
                                confidence: float = 0.95, resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """A seeded percentile-bootstrap interval of test accuracy: how far it could move with another test set."""
    correct = _scored(labels, {"predicted": predicted})[1]["predicted"]
    low, high, record = _bootstrap((correct,), np.mean, confidence=confidence, resamples=resamples, seed=seed)
    return {"accuracy": float(correct.mean()), "low": low, "high": high, **record,
            "method": "percentile bootstrap over test images (scipy.stats.bootstrap)"}


def mcnemar_exact(labels: Sequence[int] | np.ndarray, predicted_a: Sequence[int] | np.ndarray,
                  predicted_b: Sequence[int] | np.ndarray) -> dict[str, Any]:
    """McNemar's exact test of A vs B on the same images (only those exactly one model gets right count): binomial,
    not the chi-square approximation, which is poor when few images differ."""
    labels_array, right = _scored(labels, {"predicted_a": predicted_a, "predicted_b": predicted_b})
    a_right, b_right = right["predicted_a"] == 1, right["predicted_b"] == 1
    b, c = int(np.count_nonzero(a_right & ~b_right)), int(np.count_nonzero(~a_right & b_right))
    return {"a_right_b_wrong": b, "a_wrong_b_right": c, "n": int(len(labels_array)),
            "p_value": 1.0 if b + c == 0 else float(stats.binomtest(b, b + c, 0.5).pvalue),
            "method": "McNemar exact (binomial), two-sided"}


def bootstrap_difference_interval(labels: Sequence[int] | np.ndarray, predicted_a: Sequence[int] | np.ndarray,
                                  predicted_b: Sequence[int] | np.ndarray, *, confidence: float = 0.95,
                                  resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """A seeded paired percentile-bootstrap interval of accuracy(A) - accuracy(B): McNemar says whether, this how much.
    Resampling the images together for both models keeps the pairing, sharper than two separate intervals."""
    a, b = _scored(labels, {"predicted_a": predicted_a, "predicted_b": predicted_b})[1].values()
    low, high, record = _bootstrap((a, b), lambda x, y, axis=-1: np.mean(x, axis=axis) - np.mean(y, axis=axis),
                                   confidence=confidence, resamples=resamples, seed=seed, paired=True)
    return {"difference": float(a.mean() - b.mean()), "low": low, "high": high, **record,
            "method": "paired percentile bootstrap over test images (scipy.stats.bootstrap, paired=True)"}


# --- over seeds ----------------------------------------------------------------------------------------------
def mean_std(values: Sequence[float] | np.ndarray) -> dict[str, Any]:
    """Mean, sample standard deviation (ddof=1; None for one value rather than a misleading 0) and count."""
    array = _as_1d(values, "values", numeric=True)
    return {"mean": float(array.mean()), "std": float(array.std(ddof=1)) if len(array) > 1 else None,
            "n": int(len(array))}


def mean_interval(values: Sequence[float] | np.ndarray, *, confidence: float = 0.95) -> dict[str, Any]:
    """The t-interval of the mean of per-seed results; None with one value or no spread."""
    array = _as_1d(values, "values", numeric=True)
    level = _probability_level(confidence, "confidence")
    result: dict[str, Any] = {"mean": float(array.mean()), "low": None, "high": None, "n": int(len(array)),
                              "confidence": level, "method": "t-interval of the mean over seeds"}
    if len(array) > 1 and float(array.std(ddof=1)) > 0:
        low, high = stats.t.interval(level, len(array) - 1, loc=float(array.mean()), scale=stats.sem(array))
        result.update(low=float(low), high=float(high))
    return result


def paired_seed_comparison(values_a: Sequence[float] | np.ndarray, values_b: Sequence[float] | np.ndarray, *,
                           confidence: float = 0.95) -> dict[str, Any]:
    """Paired t-test of A vs B trained on the same seeds (entry i = seed i): pairing removes what a seed's runs share.
    With one pair, or no spread of the differences, p-value and interval are None and ``note`` says why."""
    a, b = _as_1d(values_a, "values_a", numeric=True), _as_1d(values_b, "values_b", numeric=True)
    if len(b) != len(a):
        raise ValueError(f"values_b: expected one value per entry of values_a ({len(a)}), got {len(b)}")
    level = _probability_level(confidence, "confidence")
    differences = a - b
    n, mean_difference = int(len(differences)), float(differences.mean())
    result: dict[str, Any] = {
        "n": n, "mean_a": float(a.mean()), "mean_b": float(b.mean()), "mean_difference": mean_difference,
        "std_difference": float(differences.std(ddof=1)) if n > 1 else None, "p_value": None, "low": None,
        "high": None, "confidence": level, "note": None,
        "method": "paired t-test over seeds (scipy.stats.ttest_rel), t-interval of the mean difference"}
    if n < 2:
        result["note"] = "one seed cannot give a paired test: train both models on at least 2 seeds"
    elif result["std_difference"] <= 1e-12 * max(1.0, abs(mean_difference)):
        result["note"] = "every seed gives the same difference: with no spread the paired t-test is undefined"
    else:
        test = stats.ttest_rel(a, b)
        interval = test.confidence_interval(confidence_level=level)
        result.update(p_value=float(test.pvalue), low=float(interval.low), high=float(interval.high))
    return result


# --- the verdict ---------------------------------------------------------------------------------------------
def verdict(difference: float, low: float | None, high: float | None, p_value: float | None, *,
            alpha: float = 0.05) -> str:
    """One word for the claim "A > B" from the difference A - B, its interval and p-value: "supported" when low > 0
    and p < alpha; "not supported" when high <= 0, or the difference is <= 0 and p < alpha; else "inconclusive".
    A missing interval or p-value (None, as from one seed) never supports the claim."""
    diff = _real(difference, "difference")
    low_value = None if low is None else _real(low, "low")
    high_value = None if high is None else _real(high, "high")
    if low_value is not None and high_value is not None and low_value > high_value:
        raise ValueError(f"low: expected low <= high, got low={low!r} and high={high!r}")
    p = None if p_value is None else _real(p_value, "p_value")
    if p is not None and not 0.0 <= p <= 1.0:
        raise ValueError(f"p_value: expected a probability in [0, 1], got {p_value!r}")
    significant = p is not None and p < _probability_level(alpha, "alpha")
    if low_value is not None and low_value > 0.0 and significant:
        return "supported"
    if (high_value is not None and high_value <= 0.0) or (diff <= 0.0 and significant):
        return "not supported"
    return "inconclusive"


# --- a run's statistics (summary.json) ---------------------------------------------------------------------------
ENSEMBLE_KEYS = ("n", "accuracy", "macro_f1", "weighted_f1", "top2_accuracy", "majority_class_accuracy",
                 "majority_class", "collapse_warning")


def split_statistics(labels: np.ndarray, predicted: Mapping[str, np.ndarray], *, resamples: int,
                     seed: int) -> dict[str, Any]:
    """One split of one seed: each model's accuracy interval, and per pair the difference, McNemar and verdict."""
    accuracy = {name: bootstrap_accuracy_interval(labels, values, resamples=resamples, seed=seed)
                for name, values in predicted.items()}
    comparisons = []
    for a, b in itertools.combinations(predicted, 2):
        gap = bootstrap_difference_interval(labels, predicted[a], predicted[b], resamples=resamples, seed=seed)
        mcnemar = mcnemar_exact(labels, predicted[a], predicted[b])
        comparisons.append({"a": a, "b": b, "difference": gap["difference"], "low": gap["low"], "high": gap["high"],
                            "mcnemar": mcnemar, "verdict_a_beats_b": verdict(gap["difference"], gap["low"],
                                                                             gap["high"], mcnemar["p_value"])})
    return {"n": int(len(labels)), "majority_baseline": majority_class_accuracy(labels), "accuracy": accuracy,
            "comparisons": comparisons}


def seed_statistics(results_of_seed: Any, *, resamples: int, seed: int) -> dict[str, Any]:
    """One seed's :func:`split_statistics` per split, of its models and (two or more) their ensemble's metrics."""
    summary: dict[str, Any] = {"splits": {}, "ensemble": {}}
    for split in STATISTICS_SPLITS:
        predictions = results_of_seed.predictions(split)
        if not predictions:
            continue
        labels = next(iter(predictions.values()))["labels"].astype(np.int64)
        predicted = {model: stored["probabilities"].argmax(axis=1) for model, stored in predictions.items()}
        if len(predictions) >= 2:
            averaged = ensemble_probabilities([stored["probabilities"] for stored in predictions.values()])
            predicted[ENSEMBLE] = averaged.argmax(axis=1)
            metrics = evaluate_predictions(labels, averaged)
            summary["ensemble"][split] = {"models": list(predictions), **{k: metrics[k] for k in ENSEMBLE_KEYS}}
        summary["splits"][split] = split_statistics(labels, predicted, resamples=resamples, seed=seed)
    return summary


# The per-seed numbers summarised over seeds: (name, split of metrics.json, key)
SEED_METRICS: tuple[tuple[str, str, str], ...] = (
    ("test_accuracy", "test", "accuracy"), ("test_accuracy_tta", "test_tta", "accuracy"),
    ("test_accuracy_tta10", "test_tta10", "accuracy"), ("macro_f1", "test", "macro_f1"))


def seed_values(results: RunResults, per_seed: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """One row per seed and model (and the ensemble) of :data:`SEED_METRICS`: the table behind mean ± std."""
    rows = []
    for seed, seed_results in results.by_seed.items():
        for model, summary in seed_results.summaries.items():
            rows.append({"model": model, "seed": seed, **{name: (summary.get(split) or {}).get(key)
                                                          for name, split, key in SEED_METRICS}})
        ensemble = (per_seed.get(str(seed)) or {}).get("ensemble") or {}
        if ensemble.get("test"):
            rows.append({"model": ENSEMBLE, "seed": seed, **{name: (ensemble.get(split) or {}).get(key)
                                                             for name, split, key in SEED_METRICS}})
    return pd.DataFrame(rows, columns=["model", "seed", *(name for name, _, _ in SEED_METRICS)])


def over_seeds(results: RunResults, per_seed: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Per model (and the ensemble) :data:`SEED_METRICS` over seeds, and per pair the paired test with its verdict."""
    values = seed_values(results, per_seed)
    models: dict[str, Any] = {}
    for model, rows in values.groupby("model", sort=False):
        rows = rows.sort_values("seed")
        models[model] = {"seeds": [int(s) for s in rows["seed"]]}
        for name, _, _ in SEED_METRICS:
            column = rows[name].dropna().to_numpy(float)
            interval = mean_interval(column) if len(column) else None
            models[model][name] = None if interval is None else {
                **mean_std(column), "low": interval["low"], "high": interval["high"], "values": column.tolist()}
    comparisons = []
    table = values.pivot(index="seed", columns="model", values="test_accuracy")
    for a, b in itertools.combinations(models, 2):
        paired = table[[a, b]].dropna()
        if len(paired):
            result = paired_seed_comparison(paired[a].to_numpy(float), paired[b].to_numpy(float))
            comparisons.append({"a": a, "b": b, "metric": "test_accuracy", **result, "verdict_a_beats_b": verdict(
                result["mean_difference"], result["low"], result["high"], result["p_value"])})
    return {"models": models, "comparisons": comparisons}


def run_statistics(results: RunResults, *, seed: int = 0, resamples: int = 2000) -> dict[str, Any]:
    """summary.json's numbers for every run, from its saved predictions: per seed and over seeds.
    ``seed`` seeds the bootstrap, not training."""
    per_seed = {str(s): seed_statistics(r, resamples=resamples, seed=seed) for s, r in results.by_seed.items()}
    return {"format": SUMMARY_FORMAT, "seeds": results.seeds, "bootstrap": {"seed": seed, "resamples": resamples,
                                                                           "confidence": 0.95},
            "per_seed": per_seed, "over_seeds": over_seeds(results, per_seed)}
