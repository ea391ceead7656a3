"""Tests for the synthetic FER-style face generator (fer_lib.core.synthetic)."""

from __future__ import annotations

import numpy as np
import pytest

from fer_lib.core.labels import EMOTIONS, FER2013_TRAIN_COUNTS
from fer_lib.core.synthetic import class_proportions, make_synthetic_faces


@pytest.fixture(scope="module")
def balanced_1400() -> tuple[np.ndarray, np.ndarray]:
    """200 faces per class; shared by the tests that look at pixel statistics."""
    return make_synthetic_faces(1400, seed=0)


def test_shapes_and_dtypes() -> None:
    images, labels = make_synthetic_faces(37, seed=3)
    assert images.shape == (37, 48, 48, 1)
    assert images.dtype == np.uint8
    assert labels.shape == (37,)
    assert labels.dtype == np.int64
    assert labels.min() >= 0 and labels.max() < len(EMOTIONS)


def test_single_image() -> None:
    images, labels = make_synthetic_faces(1)
    assert images.shape == (1, 48, 48, 1)
    assert labels.shape == (1,)


def test_same_seed_is_deterministic() -> None:
    a_img, a_lab = make_synthetic_faces(300, seed=42, class_balance="fer2013")
    b_img, b_lab = make_synthetic_faces(300, seed=42, class_balance="fer2013")
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_lab, b_lab)


def test_different_seed_differs() -> None:
    a_img, a_lab = make_synthetic_faces(300, seed=1)
    b_img, b_lab = make_synthetic_faces(300, seed=2)
    assert not np.array_equal(a_img, b_img)
    assert not np.array_equal(a_lab, b_lab)


def test_balanced_counts_are_exact() -> None:
    _, labels = make_synthetic_faces(700, seed=0, class_balance="balanced")
    np.testing.assert_array_equal(np.bincount(labels, minlength=7), [100] * 7)


def test_balanced_counts_with_remainder() -> None:
    _, labels = make_synthetic_faces(703, seed=0)
    counts = np.bincount(labels, minlength=7)
    assert counts.sum() == 703
    assert counts.max() - counts.min() <= 1


@pytest.mark.parametrize("n", [700, 1000, 2345])
def test_fer2013_counts_follow_real_imbalance(n: int) -> None:
    _, labels = make_synthetic_faces(n, seed=0, class_balance="fer2013")
    counts = np.bincount(labels, minlength=7)
    real = np.array([FER2013_TRAIN_COUNTS[e] for e in EMOTIONS], dtype=float)
    expected = n * real / real.sum()
    assert counts.sum() == n
    assert np.all(np.abs(counts - expected) < 1.0)
    # The defining features of FER2013's imbalance survive.
    assert counts.argmax() == EMOTIONS.index("happy")
    assert counts.argmin() == EMOTIONS.index("disgust")


def test_labels_are_shuffled() -> None:
    _, labels = make_synthetic_faces(700, seed=0)
    assert not np.all(np.diff(labels) >= 0)


def test_class_proportions_presets() -> None:
    np.testing.assert_allclose(class_proportions("balanced"), np.full(7, 1 / 7))
    fer = class_proportions("fer2013")
    real = np.array([FER2013_TRAIN_COUNTS[e] for e in EMOTIONS], dtype=float)
    np.testing.assert_allclose(fer, real / real.sum())
    assert fer.sum() == pytest.approx(1.0)


def test_custom_weights_are_normalised_and_zero_classes_stay_empty() -> None:
    weights = [2, 0, 0, 1, 0, 0, 1]
    np.testing.assert_allclose(class_proportions(weights), [0.5, 0, 0, 0.25, 0, 0, 0.25])
    _, labels = make_synthetic_faces(9, seed=0, class_balance=weights)
    counts = np.bincount(labels, minlength=7)
    assert counts.sum() == 9
    assert counts[[1, 2, 4, 5]].sum() == 0
    assert np.all(np.abs(counts - 9 * class_proportions(weights)) < 1.0)


def test_happy_and_sad_differ_in_mouth_region(balanced_1400) -> None:
    images, labels = balanced_1400
    px = images[..., 0].astype(np.float64)
    happy = px[labels == EMOTIONS.index("happy")]
    sad = px[labels == EMOTIONS.index("sad")]
    mouth = (slice(30, 44), slice(12, 36))
    diff = np.abs(happy.mean(0) - sad.mean(0))[mouth].mean()
    # Control: two halves of the same class differ only by sampling noise.
    same = np.abs(happy[::2].mean(0) - happy[1::2].mean(0))[mouth].mean()
    assert diff > 10.0
    assert diff > 2.0 * same


def test_every_class_has_a_distinct_mean_face(balanced_1400) -> None:
    images, labels = balanced_1400
    px = images[..., 0].astype(np.float64)
    means = np.stack([px[labels == c].mean(0) for c in range(7)])
    for a in range(7):
        for b in range(a + 1, 7):
            assert np.abs(means[a] - means[b]).max() > 10.0, (EMOTIONS[a], EMOTIONS[b])


def test_dynamic_range(balanced_1400) -> None:
    images, _ = balanced_1400
    px = images[..., 0].astype(np.float64)
    per_image_range = px.max(axis=(1, 2)) - px.min(axis=(1, 2))
    assert per_image_range.min() > 40  # never a flat image
    assert px.std(axis=(1, 2)).min() > 5
    assert px.min() < 20 and px.max() > 235  # whole 0..255 range is used across the set
    assert 40 < px.mean() < 215
    assert (px == 0).mean() < 0.05  # not saturated
    assert (px == 255).mean() < 0.05


def test_learnable_but_not_trivial(balanced_1400) -> None:
    """A nearest-centroid classifier on standardised pixels beats chance, but far from 100%."""
    train_img, train_lab = balanced_1400
    test_img, test_lab = make_synthetic_faces(700, seed=99)

    def standardise(x: np.ndarray) -> np.ndarray:
        flat = x.reshape(len(x), -1).astype(np.float64)
        flat -= flat.mean(axis=1, keepdims=True)
        return flat / flat.std(axis=1, keepdims=True)

    train, test = standardise(train_img), standardise(test_img)
    centroids = np.stack([train[train_lab == c].mean(0) for c in range(7)])
    scores = test @ centroids.T - 0.5 * (centroids**2).sum(1)
    accuracy = (scores.argmax(1) == test_lab).mean()
    assert 0.25 < accuracy < 0.9


@pytest.mark.parametrize("bad_n", [0, -5, 2.5, "10", None, True])
def test_bad_n_raises(bad_n) -> None:
    with pytest.raises(ValueError, match=r"\bn\b"):
        make_synthetic_faces(bad_n)


def test_numpy_integer_n_is_accepted() -> None:
    images, _ = make_synthetic_faces(np.int64(5))
    assert images.shape[0] == 5


@pytest.mark.parametrize(
    "bad",
    [
        "unbalanced",
        "",
        [1, 2, 3],
        [1.0] * 8,
        [-1, 1, 1, 1, 1, 1, 1],
        [0] * 7,
        [float("nan")] + [1.0] * 6,
        [[1] * 7],
        ["a"] * 7,
    ],
)
def test_bad_class_balance_raises(bad) -> None:
    with pytest.raises(ValueError, match="class_balance"):
        make_synthetic_faces(10, class_balance=bad)
    with pytest.raises(ValueError, match="class_balance"):
        class_proportions(bad)


def test_bad_seed_raises() -> None:
    with pytest.raises(ValueError, match="seed"):
        make_synthetic_faces(10, seed=-1)
