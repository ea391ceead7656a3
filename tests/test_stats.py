"""fer_lib.analysis.stats: each statistic against a reference (statsmodels, scipy called directly, a hand computation),
seeded reproducibility, one case of each verdict, and a clear error for bad inputs.

Fast (well under a few seconds) and without Keras: fer_lib.analysis.stats imports numpy and scipy only.
"""

from __future__ import annotations

import ast
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as scipy_stats
from statsmodels.stats.contingency_tables import mcnemar as statsmodels_mcnemar

from fer_lib.analysis import stats
def predictions_with_accuracy(n: int, correct: int, *, classes: int = 7, seed: int = 0
                              ) -> tuple[np.ndarray, np.ndarray]:
    """Labels and predictions for n images of which exactly `correct` are predicted right (in shuffled order)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=n)
    predicted = labels.copy()
    wrong = rng.permutation(n)[: n - correct]
    predicted[wrong] = (labels[wrong] + 1) % classes
    return labels, predicted


def assert_json_ready(result: dict) -> None:
    """Plain Python types only (numpy scalars would break json.dumps or sneak numpy into the run's JSON)."""
    for key, value in result.items():
        assert value is None or type(value) in (float, int, str), f"{key}: {type(value).__name__}"
    json.dumps(result, allow_nan=False)


def test_module_starts_no_keras() -> None:
    """The statistics import anywhere (reports, notebooks, the supervising runner): no Keras, no backend."""
    code = "import sys, fer_lib.analysis.stats; print(sorted({'keras', 'tensorflow', 'jax'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


# --- McNemar -------------------------------------------------------------------------------------------------


def test_mcnemar_matches_statsmodels_on_a_hand_made_example() -> None:
    # 20 images: both right on 8, A right / B wrong on 7, A wrong / B right on 2, both wrong on 3.
    labels = np.array([i % 7 for i in range(20)])
    a_right = [True] * 8 + [True] * 7 + [False] * 2 + [False] * 3
    b_right = [True] * 8 + [False] * 7 + [True] * 2 + [False] * 3
    wrong = (labels + 1) % 7
    predicted_a = np.where(a_right, labels, wrong)
    predicted_b = np.where(b_right, labels, (labels + 2) % 7)  # both wrong, but differently: still "both wrong"

    result = stats.mcnemar_exact(labels, predicted_a, predicted_b)

    assert (result["a_right_b_wrong"], result["a_wrong_b_right"], result["n"]) == (7, 2, 20)
    reference = statsmodels_mcnemar([[8, 7], [2, 3]], exact=True).pvalue
    assert result["p_value"] == pytest.approx(reference, rel=1e-12)
    assert result["p_value"] == pytest.approx(2 * sum(math.comb(9, k) for k in range(3)) / 2**9, rel=1e-12)
    assert result["method"] == "McNemar exact (binomial), two-sided"
    assert_json_ready(result)


def test_mcnemar_hand_computed_b1_c9() -> None:
    # b = 1, c = 9: p = 2 * P(X <= 1), X ~ Bin(10, 1/2) = 2 * (1 + 10) / 1024 = 22 / 1024.
    labels = np.zeros(12, dtype=int)
    # A right on image 0 only, B right on images 1..9; image 10 both right, image 11 both wrong.
    predicted_a = np.array([0] + [1] * 9 + [0, 2])
    predicted_b = np.array([1] + [0] * 9 + [0, 3])
    result = stats.mcnemar_exact(labels, predicted_a, predicted_b)
    assert (result["a_right_b_wrong"], result["a_wrong_b_right"], result["n"]) == (1, 9, 12)
    assert result["p_value"] == pytest.approx(22 / 1024, rel=1e-12)
    assert result["p_value"] == pytest.approx(statsmodels_mcnemar([[1, 1], [9, 1]], exact=True).pvalue, rel=1e-12)


def test_mcnemar_no_disagreement_gives_p_one() -> None:
    labels = [0, 1, 2, 3, 4, 5, 6]
    same = [0, 1, 2, 0, 0, 5, 6]
    result = stats.mcnemar_exact(labels, same, list(same))
    assert (result["a_right_b_wrong"], result["a_wrong_b_right"]) == (0, 0)
    assert result["p_value"] == 1.0
    assert statsmodels_mcnemar([[5, 0], [0, 2]], exact=True).pvalue == 1.0


# --- bootstrap -----------------------------------------------------------------------------------------------


def test_bootstrap_interval_contains_accuracy_and_is_seeded() -> None:
    labels, predicted = predictions_with_accuracy(500, 300)
    first = stats.bootstrap_accuracy_interval(labels, predicted, seed=1)
    again = stats.bootstrap_accuracy_interval(labels, predicted, seed=1)
    other = stats.bootstrap_accuracy_interval(labels, predicted, seed=2)

    assert first["accuracy"] == 0.6
    assert first["low"] < first["accuracy"] < first["high"]
    assert first == again
    assert (other["low"], other["high"]) != (first["low"], first["high"])
    settings = {k: first[k] for k in ("confidence", "resamples", "seed")}
    assert settings == {"confidence": 0.95, "resamples": 2000, "seed": 1}
    assert "percentile" in first["method"] and "scipy.stats.bootstrap" in first["method"]
    assert_json_ready(first)


def test_bootstrap_interval_equals_scipy_bootstrap_called_directly() -> None:
    # scipy's default batch (all resamples at once) on purpose: fer_lib.analysis.stats draws them in batches of
    # BOOTSTRAP_BATCH, which must not change which resamples a seed gives.
    labels, predicted = predictions_with_accuracy(400, 260, seed=3)
    result = stats.bootstrap_accuracy_interval(labels, predicted, confidence=0.9, resamples=1500, seed=7)
    reference = scipy_stats.bootstrap(
        ((labels == predicted).astype(float),), np.mean, n_resamples=1500, confidence_level=0.9,
        method="percentile", vectorized=True,
        rng=np.random.default_rng(7),
    ).confidence_interval
    assert (result["low"], result["high"]) == (float(reference.low), float(reference.high))


def test_bootstrap_interval_narrows_as_the_test_set_grows() -> None:
    small = stats.bootstrap_accuracy_interval(*predictions_with_accuracy(100, 60))
    large = stats.bootstrap_accuracy_interval(*predictions_with_accuracy(10_000, 6_000))
    assert small["accuracy"] == large["accuracy"] == 0.6
    small_width, large_width = small["high"] - small["low"], large["high"] - large["low"]
    assert large_width < small_width / 5  # ~ 1/sqrt(n): a factor of 10 expected
    # ... and about the normal-approximation width 2 * 1.96 * sqrt(p (1 - p) / n).
    assert large_width == pytest.approx(2 * 1.96 * math.sqrt(0.6 * 0.4 / 10_000), rel=0.1)


def test_bootstrap_all_right_gives_a_point_interval() -> None:
    labels = np.arange(50) % 7
    result = stats.bootstrap_accuracy_interval(labels, labels)
    assert (result["accuracy"], result["low"], result["high"]) == (1.0, 1.0, 1.0)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"resamples": 999}, "resamples"), ({"resamples": 2000.0}, "resamples"), ({"confidence": 1.0}, "confidence"),
     ({"confidence": 0.0}, "confidence"), ({"confidence": 95}, "confidence"), ({"seed": -1}, "seed")],
)
def test_bootstrap_rejects_bad_settings(kwargs: dict, name: str) -> None:
    labels, predicted = predictions_with_accuracy(20, 10)
    with pytest.raises(ValueError, match=rf"^{name}: expected"):
        stats.bootstrap_accuracy_interval(labels, predicted, **kwargs)


def test_bootstrap_labels_outside_0_to_6_pass_through() -> None:
    result = stats.bootstrap_accuracy_interval([7, 8, 9, 9], [7, 8, 0, 9])
    assert result["accuracy"] == 0.75


# --- paired seeds, mean +- std -------------------------------------------------------------------------------

VALUES_A = [0.652, 0.661, 0.648, 0.659, 0.655]
VALUES_B = [0.641, 0.650, 0.644, 0.651, 0.639]


def test_paired_seed_comparison_matches_ttest_rel_and_a_hand_made_t_interval() -> None:
    result = stats.paired_seed_comparison(VALUES_A, VALUES_B)

    differences = np.array(VALUES_A) - np.array(VALUES_B)
    mean, sd, n = differences.mean(), differences.std(ddof=1), len(differences)
    half_width = scipy_stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    assert result["n"] == 5
    assert result["mean_difference"] == pytest.approx(mean, rel=1e-12)
    assert result["std_difference"] == pytest.approx(sd, rel=1e-12)
    assert result["p_value"] == pytest.approx(scipy_stats.ttest_rel(VALUES_A, VALUES_B).pvalue, rel=1e-12)
    assert result["low"] == pytest.approx(mean - half_width, rel=1e-12)
    assert result["high"] == pytest.approx(mean + half_width, rel=1e-12)
    assert result["mean_a"] == pytest.approx(np.mean(VALUES_A)) and result["mean_b"] == pytest.approx(np.mean(VALUES_B))
    assert result["note"] is None
    assert_json_ready(result)


def test_paired_seed_comparison_one_pair_has_no_test() -> None:
    result = stats.paired_seed_comparison([0.66], [0.64])
    assert result["mean_difference"] == pytest.approx(0.02)
    assert (result["p_value"], result["low"], result["high"], result["std_difference"]) == (None, None, None, None)
    assert "one seed cannot give a paired test" in result["note"]
    assert_json_ready(result)


def test_paired_seed_comparison_identical_differences_have_no_test() -> None:
    result = stats.paired_seed_comparison([3.0, 4.0, 5.0], [2.0, 3.0, 4.0])
    assert result["mean_difference"] == 1.0 and result["p_value"] is None and "no spread" in result["note"]


def test_mean_std() -> None:
    expected = {"mean": pytest.approx(7 / 3), "std": pytest.approx(np.std([1, 2, 4], ddof=1)), "n": 3}
    assert stats.mean_std([1.0, 2.0, 4.0]) == expected
    assert stats.mean_std([0.61]) == {"mean": 0.61, "std": None, "n": 1}
    assert_json_ready(stats.mean_std(np.array([0.6, 0.7], dtype=np.float32)))


def test_mean_interval_matches_scipy_t_interval() -> None:
    values = [0.61, 0.63, 0.6, 0.64]
    low, high = scipy_stats.t.interval(0.95, 3, loc=np.mean(values), scale=scipy_stats.sem(values))
    result = stats.mean_interval(values)
    assert (result["low"], result["high"]) == (pytest.approx(low), pytest.approx(high))
    assert result["low"] < np.mean(values) < result["high"]
    assert stats.mean_interval([0.6])["low"] is None
    assert stats.mean_interval([0.6, 0.6])["high"] is None
    assert_json_ready(result)


# --- verdict -------------------------------------------------------------------------------------------------


def test_verdict_one_case_of_each_outcome() -> None:
    assert stats.verdict(0.02, 0.01, 0.03, 0.001) == "supported"
    assert stats.verdict(-0.02, -0.03, -0.01, 0.001) == "not supported"
    assert stats.verdict(0.01, -0.005, 0.025, 0.2) == "inconclusive"


def test_verdict_edge_cases() -> None:
    assert stats.verdict(0.02, 0.01, 0.03, 0.2) == "inconclusive"  # interval above 0 but the test is not significant
    assert stats.verdict(0.0, -0.01, 0.0, 0.9) == "not supported"  # interval at or below 0
    assert stats.verdict(-0.01, -0.02, 0.001, 0.01) == "not supported"  # B significantly better
    assert stats.verdict(0.02, None, None, None) == "inconclusive"  # one seed: nothing to judge by
    assert stats.verdict(0.02, 0.01, 0.03, 0.04, alpha=0.01) == "inconclusive"
    assert stats.verdict(0.02, 0.01, 0.03, 0.04) in stats.VERDICTS


@pytest.mark.parametrize(
    ("args", "kwargs", "name"),
    [((0.1, 0.2, 0.1, 0.01), {}, "low"), ((0.1, 0.0, 0.2, 1.5), {}, "p_value"),
     ((float("nan"), 0.0, 0.2, 0.01), {}, "difference"), ((0.1, 0.0, 0.2, 0.01), {"alpha": 0}, "alpha")],
)
def test_verdict_rejects_bad_inputs(args: tuple, kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=rf"^{name}: expected"):
        stats.verdict(*args, **kwargs)


# --- bad inputs ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: stats.bootstrap_accuracy_interval([0, 1, 2], [0, 1]), "predicted"),
        (lambda: stats.mcnemar_exact([0, 1, 2], [0, 1], [0, 1, 2]), "predicted_a"),
        (lambda: stats.mcnemar_exact([0, 1, 2], [0, 1, 2], [0, 1, 2, 3]), "predicted_b"),
        (lambda: stats.paired_seed_comparison([0.6, 0.7], [0.5]), "values_b"),
    ],
)
def test_mismatched_lengths_name_the_argument(call, name: str) -> None:
    with pytest.raises(ValueError, match=rf"^{name}: expected one value per entry of \w+ \(\d+\), got \d+"):
        call()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: stats.bootstrap_accuracy_interval([], []), r"^labels: expected at least one value"),
        (lambda: stats.bootstrap_accuracy_interval([3], [3]), r"^labels: a bootstrap needs at least 2"),
        (lambda: stats.mcnemar_exact([0, 1], np.full((2, 7), 1 / 7), [0, 1]), r"^predicted_a: .*argmax"),
        (lambda: stats.mcnemar_exact([0, 1], [0.5, 1.0], [0, 1]), r"^predicted_a: expected integer class indices"),
        (lambda: stats.mean_std([]), r"^values: expected at least one value"),
        (lambda: stats.mean_std([0.6, float("nan")]), r"^values: expected finite numbers"),
        (lambda: stats.paired_seed_comparison(["a"], [0.5]), r"^values_a: expected numbers"),
    ],
)
def test_bad_inputs_name_the_argument(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def test_paired_difference_interval_matches_scipy_and_contains_the_difference() -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 7, 400)
    a = np.where(rng.random(400) < 0.7, labels, (labels + 1) % 7)
    b = np.where(rng.random(400) < 0.6, labels, (labels + 2) % 7)
    result = stats.bootstrap_difference_interval(labels, a, b, resamples=1000, seed=4)
    right_a, right_b = (a == labels).astype(float), (b == labels).astype(float)
    assert result["difference"] == pytest.approx(right_a.mean() - right_b.mean())
    assert result["low"] <= result["difference"] <= result["high"]
    reference = scipy_stats.bootstrap((right_a, right_b), lambda x, y, axis=-1: x.mean(axis=axis) - y.mean(axis=axis),
                                      n_resamples=1000, paired=True, vectorized=True, method="percentile",
                                      confidence_level=0.95, batch=stats.BOOTSTRAP_BATCH,
                                      rng=np.random.default_rng(4))
    assert (result["low"], result["high"]) == pytest.approx((reference.confidence_interval.low,
                                                             reference.confidence_interval.high))
    with pytest.raises(ValueError, match="^predicted_b"):
        stats.bootstrap_difference_interval(labels, a, b[:-1])
