"""fer_lib.core.evaluate: scikit-learn metrics next to the majority baseline, collapse detection, TTA, saved files."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from fer_lib.core import records
from fer_lib.core import evaluate
from fer_lib.core.data import Split
from fer_lib.core.labels import EMOTIONS


def probabilities_for(predicted: np.ndarray, confidence: float = 0.7) -> np.ndarray:
    probabilities = np.full((predicted.size, 7), (1 - confidence) / 6)
    probabilities[np.arange(predicted.size), predicted] = confidence
    return probabilities


def test_metrics_match_a_hand_computed_example() -> None:
    labels = np.array([0, 0, 1, 3, 3, 3, 6, 6])
    predicted = np.array([0, 3, 1, 3, 3, 6, 6, 6])
    metrics = evaluate.evaluate_predictions(labels, probabilities_for(predicted))
    assert metrics["accuracy"] == pytest.approx(6 / 8)
    assert metrics["majority_class_accuracy"] == pytest.approx(3 / 8) and metrics["majority_class"] == "happy"
    happy = metrics["per_class"]["happy"]
    assert happy["precision"] == pytest.approx(2 / 3) and happy["recall"] == pytest.approx(2 / 3)
    assert happy["support"] == 3
    counts = np.array(metrics["confusion_matrix"])
    assert counts.sum() == 8 and counts[3, 6] == 1 and counts[0, 3] == 1
    normalised = np.array(metrics["confusion_matrix_normalised"])
    assert normalised[0].tolist()[:4] == [0.5, 0.0, 0.0, 0.5]
    assert normalised[2].sum() == 0.0  # no 'fear' images: a zero row, not NaN
    assert metrics["class_names"] == list(EMOTIONS)
    assert metrics["collapse_warning"] is None
    # macro-F1 averages over all 7 classes, absent ones count as 0 (sklearn's labels=...)
    assert 0 < metrics["macro_f1"] < metrics["accuracy"]


def test_top2_accuracy() -> None:
    labels = np.array([0, 2])  # first: 0 outside the top two (1, 2); second: 2 is second best
    probabilities = np.array([[0.1, 0.6, 0.3, 0, 0, 0, 0], [0.5, 0.2, 0.3, 0, 0, 0, 0]])
    metrics = evaluate.evaluate_predictions(labels, probabilities)
    assert metrics["accuracy"] == 0.0 and metrics["top2_accuracy"] == 0.5


def test_collapsed_model_is_flagged_not_reported() -> None:
    labels = np.array([3] * 25 + [0] * 25 + [4] * 25 + [6] * 25)
    collapsed = evaluate.evaluate_predictions(labels, probabilities_for(np.full(100, 3)))
    assert collapsed["collapse_warning"].startswith("collapsed: 100% of predictions are 'happy'")
    barely = evaluate.evaluate_predictions(labels, probabilities_for(np.array([3] * 50 + [0] * 50)))
    assert "no better than the majority-class baseline" in barely["collapse_warning"]


def test_shape_errors_are_clear() -> None:
    with pytest.raises(ValueError, match=r"probabilities must have shape \(3, 7\), got \(3, 5\)"):
        evaluate.evaluate_predictions(np.zeros(3, int), np.zeros((3, 5)))


@pytest.mark.backend
def test_tta_averages_the_image_and_its_mirror() -> None:
    inputs = keras.Input((48, 48, 1))
    x = keras.layers.Flatten()(inputs)
    outputs = keras.layers.Dense(7, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    images = np.random.default_rng(0).uniform(0, 255, (4, 48, 48, 1)).astype("float32")
    plain = evaluate.predict_proba(model, images)
    mirrored = evaluate.predict_proba(model, images[:, :, ::-1])
    np.testing.assert_allclose(evaluate.predict_proba(model, images, tta=True), (plain + mirrored) / 2, rtol=1e-5)
    split = Split("test", images.astype("uint8"), np.array([0, 1, 2, 3]), np.array(["a", "b", "c", "d"]))
    metrics, probabilities = evaluate.evaluate_model(model, split, tta=True)
    assert metrics["split"] == "test" and metrics["tta"] is True and probabilities.shape == (4, 7)


def test_ten_view_tta_averages_the_named_views() -> None:
    """tta_crop: the corner crops and the centre crop of 40 pixels, resized to 48, and their mirrors, averaged."""
    images = np.random.default_rng(1).integers(0, 256, (3, 48, 48, 1)).astype("uint8")
    views = evaluate.tta_views(images, 40)
    assert len(views) == 10 and all(v.shape == images.shape and v.dtype == np.uint8 for v in views)
    top_left = keras.ops.convert_to_numpy(keras.ops.image.resize(images[:, :40, :40].astype("float32"), (48, 48)))
    np.testing.assert_array_equal(views[0], np.clip(np.rint(top_left), 0, 255).astype("uint8"))
    centre = keras.ops.convert_to_numpy(keras.ops.image.resize(images[:, 4:44, 4:44].astype("float32"), (48, 48)))
    np.testing.assert_array_equal(views[4], np.clip(np.rint(centre), 0, 255).astype("uint8"))
    for view, mirror in zip(views[:5], views[5:]):
        np.testing.assert_array_equal(mirror, view[:, :, ::-1])

    class MeanBrightness:  # a stand-in model: its "probabilities" record the mean of each image it sees
        def predict(self, batch: np.ndarray, batch_size: int = 0, verbose: int = 0) -> np.ndarray:
            out = np.zeros((len(batch), 7))
            out[:, 0] = np.asarray(batch, dtype=np.float64).mean(axis=(1, 2, 3))
            return out

    averaged = evaluate.predict_proba(MeanBrightness(), images, tta=True, tta_crop=40, batch_size=4)
    expected = np.mean([v.astype(np.float64).mean(axis=(1, 2, 3)) for v in views], axis=0)
    np.testing.assert_allclose(averaged[:, 0], expected)
    split = Split("test", images, np.array([0, 1, 2]), np.array(["a", "b", "c"]))
    inputs = keras.Input((48, 48, 1))
    model = keras.Model(inputs, keras.layers.Dense(7, activation="softmax")(keras.layers.Flatten()(inputs)))
    metrics, _ = evaluate.evaluate_model(model, split, tta=True, tta_crop=40)
    assert metrics["views"] == 10 and metrics["tta_crop"] == 40


def test_json_and_predictions_round_trip(tmp_path: Path) -> None:
    labels = np.array([0, 3, 3])
    metrics = evaluate.evaluate_predictions(labels, probabilities_for(np.array([0, 3, 6])))
    path = records.write_json(tmp_path / "m" / "metrics.json", {"test": metrics, "n": np.int64(3)})
    assert records.read_json(path)["test"]["accuracy"] == pytest.approx(2 / 3)
    split = Split("test", np.zeros((3, 48, 48, 1), np.uint8), labels, np.array(["x", "y", "z"]))
    saved = evaluate.load_predictions(evaluate.save_predictions(tmp_path / "p.npz", split,
                                                                probabilities_for(labels)))
    assert saved["ids"].tolist() == ["x", "y", "z"] and saved["probabilities"].shape == (3, 7)


def test_ensemble_averages_probabilities() -> None:
    a, b = probabilities_for(np.array([0, 1])), probabilities_for(np.array([1, 1]))
    np.testing.assert_allclose(evaluate.ensemble_probabilities([a, b]), (a + b) / 2)
    with pytest.raises(ValueError, match="all of one shape"):
        evaluate.ensemble_probabilities([a, a[:1]])
