"""fer_lib.analysis.plots and fer_lib.analysis.report on small fake data: figures have the expected panels, titles and labels; the
conclusions name the right winner and flag a model that only ever answers 'happy'. No training."""

from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from fer_lib.core import records
from fer_lib.analysis import plots, report
from fer_lib.analysis.results import load_run_results
from fer_lib.app import runs
from fer_lib.core.data import load_synthetic, summarize
from fer_lib.core.evaluate import evaluate_predictions
from fer_lib.core.labels import EMOTIONS, NUM_CLASSES
from fer_lib.core.config import AugmentConfig

HAPPY = EMOTIONS.index("happy")


# --------------------------------------------------------------------------------------------------------------------
# Fake results
# --------------------------------------------------------------------------------------------------------------------


def _labels(n: int = 280, seed: int = 0) -> np.ndarray:
    """Labels with 'happy' the majority class (~25%), like FER2013."""
    weights = np.array([0.14, 0.02, 0.14, 0.25, 0.17, 0.11, 0.17])
    return np.random.default_rng(seed).choice(NUM_CLASSES, size=n, p=weights / weights.sum())


def _good_probabilities(labels: np.ndarray, seed: int = 1) -> np.ndarray:
    """Random probabilities leaning towards the true class: accuracy well above the majority baseline."""
    rng = np.random.default_rng(seed)
    scores = rng.random((labels.size, NUM_CLASSES)) + 1.2 * np.eye(NUM_CLASSES)[labels]
    return scores / scores.sum(axis=1, keepdims=True)


def _happy_only_probabilities(labels: np.ndarray, seed: int = 2) -> np.ndarray:
    """A collapsed model: random probabilities, but 'happy' always wins."""
    scores = np.random.default_rng(seed).random((labels.size, NUM_CLASSES)) * 0.1
    scores[:, HAPPY] = 0.9
    return scores / scores.sum(axis=1, keepdims=True)


def _history(epochs: int, start: float, end: float, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    accuracy = np.linspace(start, end, epochs)
    return pd.DataFrame({"epoch": np.arange(1, epochs + 1),  # from 1, as history.csv numbers them
                         "accuracy": accuracy + rng.normal(0, 0.005, epochs),
                         "loss": np.linspace(1.9, 1.0, epochs), "val_accuracy": accuracy,
                         "val_loss": np.linspace(1.9, 1.2, epochs)})


def _summary(model: str, probabilities_fn, labels: np.ndarray, *, synthetic: bool = True) -> dict:
    metrics = evaluate_predictions(labels, probabilities_fn(labels))
    tta = evaluate_predictions(labels, probabilities_fn(labels, seed=7))
    return {"model": model, "synthetic": synthetic, "data_source": "fake", "val_origin": "fake", "params": 1000,
            "epochs_run": 12, "best_epoch": 10, "monitor": "val_accuracy", "best_val": metrics["accuracy"],
            "train_seconds": 1.0, "resumed_from_epoch": 0,
            "val": {"split": "val", "tta": False, **metrics}, "test": {"split": "test", "tta": False, **metrics},
            "test_tta": {"split": "test", "tta": True, **tta}}


@pytest.fixture(scope="module")
def labels() -> np.ndarray:
    return _labels()


@pytest.fixture(scope="module")
def summaries(labels: np.ndarray) -> dict[str, dict]:
    return {"basic_cnn": _summary("basic_cnn", _good_probabilities, labels),
            "resnet50v2": _summary("resnet50v2", _happy_only_probabilities, labels)}


@pytest.fixture(scope="module")
def histories() -> dict[str, pd.DataFrame]:
    return {"basic_cnn": _history(12, 0.48, 0.66), "resnet50v2": _history(12, 0.25, 0.25)}


@pytest.fixture(scope="module")
def dataset():
    return load_synthetic(70, 21, 21, seed=0, class_balance="fer2013")


def _titles(fig: Figure) -> list[str]:
    return [ax.get_title() for ax in fig.axes]


# --------------------------------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------------------------------


def test_class_distribution_one_panel_per_split_with_majority_line(dataset) -> None:
    fig = plots.plot_class_distribution(summarize(dataset))
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 3
    assert [t.split(" ")[0] for t in _titles(fig)] == ["train", "val", "test"]
    for ax in fig.axes:
        assert [tick.get_text() for tick in ax.get_xticklabels()] == list(EMOTIONS)
        assert any("majority 'happy'" in text.get_text() for text in ax.get_legend().get_texts())
    assert not plots.is_marked_synthetic(fig)


def test_sample_grid_has_a_row_per_class(dataset) -> None:
    fig = plots.plot_sample_grid(dataset.train, per_class=3, seed=1, synthetic=True)
    assert len(fig.axes) == NUM_CLASSES * 3
    row_labels = [ax.get_ylabel().split("\n")[0] for ax in fig.axes if ax.get_ylabel()]
    assert row_labels == list(EMOTIONS)
    assert plots.is_marked_synthetic(fig)
    assert "SYNTHETIC DATA" in fig.get_suptitle()


def test_pixel_stats_histogram_and_mean_images(dataset) -> None:
    fig = plots.plot_pixel_stats(dataset)
    assert len(fig.axes) == 1 + NUM_CLASSES
    assert fig.axes[0].get_xlabel() == "pixel intensity"
    assert plots.is_marked_synthetic(fig)  # the dataset says it is synthetic


def test_augmentation_preview_grid(dataset) -> None:
    images = dataset.train.images[:2]
    fig = plots.plot_augmentation_preview(images, AugmentConfig(rotation=10.0, horizontal_flip=True), variants=3,
                                          labels=["a", "b"])
    assert len(fig.axes) == 2 * 4
    assert fig.axes[0].get_title() == "original" and fig.axes[0].get_ylabel() == "a"


def test_curves_loss_and_accuracy_with_baseline_and_best_epoch(histories) -> None:
    curves = report.curves_table({"basic_cnn": histories["basic_cnn"]})
    fig = plots.plot_curves(curves, majority_baseline=0.25, title="basic_cnn curves", best_epoch=7)
    loss_ax, acc_ax = fig.axes
    assert (loss_ax.get_title(), acc_ax.get_title()) == ("Loss", "Accuracy")
    assert (loss_ax.get_ylabel(), acc_ax.get_ylabel(), acc_ax.get_xlabel()) == ("loss", "accuracy", "epoch")
    assert fig.get_suptitle() == "basic_cnn curves"
    legend = [text.get_text() for text in acc_ax.get_legend().get_texts()]
    assert {"basic_cnn", "train", "val", "best epoch (7)"} <= set(legend)
    assert any(text.startswith("majority-class baseline") for text in legend)
    baseline = [line for line in acc_ax.get_lines() if line.get_linestyle() == "--"
                and np.allclose(line.get_ydata(), 0.25)]
    assert baseline, "the majority baseline is a dashed horizontal line"
    assert list(acc_ax.get_lines()[0].get_xdata()) == list(range(1, 13)), "epochs are numbered from 1"


def test_curves_into_given_axes_without_baseline(histories) -> None:
    base = Figure()
    axes = base.subplots(1, 2)
    fig = plots.plot_curves(report.curves_table(histories), axes=axes)
    assert fig is base
    assert not any(t.get_text().startswith("majority") for t in axes[1].get_legend().get_texts())


@pytest.mark.parametrize("normalised", [False, True])
def test_confusion_matrix_heatmap(summaries, normalised: bool) -> None:
    metrics = summaries["basic_cnn"]["test"]
    matrix = metrics["confusion_matrix_normalised" if normalised else "confusion_matrix"]
    fig = plots.plot_confusion_matrix(matrix, normalised=normalised, title="cm")
    ax = fig.axes[0]
    assert ax.get_title() == "cm"
    assert (ax.get_ylabel(), ax.get_xlabel()) == ("true", "predicted")
    assert [t.get_text() for t in ax.get_xticklabels()] == list(EMOTIONS)
    assert [t.get_text() for t in ax.get_yticklabels()] == list(EMOTIONS)
    annotations = [t.get_text() for t in ax.texts]
    assert len(annotations) == NUM_CLASSES ** 2
    if normalised:
        assert all(re.fullmatch(r"\d\.\d\d", text) for text in annotations)
    else:
        assert sum(int(text) for text in annotations) == metrics["n"]
        assert annotations[0] == str(metrics["confusion_matrix"][0][0])  # row 0 = true 'angry'


def test_confusion_matrix_rejects_wrong_shape() -> None:
    with pytest.raises(ValueError, match="7x7"):
        plots.plot_confusion_matrix(np.zeros((3, 3)), normalised=False)


def test_confusion_matrices_side_by_side(summaries) -> None:
    fig = plots.plot_confusion_matrices({m: s["test"] for m, s in summaries.items()}, normalised=True)
    heatmaps = [ax for ax in fig.axes if ax.get_xlabel() == "predicted"]
    assert [ax.get_title().split(" ")[0] for ax in heatmaps] == ["basic_cnn", "resnet50v2"]


def test_curves_of_two_models_fig4(histories) -> None:
    fig = plots.plot_curves(report.curves_table(histories), majority_baseline=0.25, synthetic=True)
    loss_ax, acc_ax = fig.axes
    legend = [t.get_text() for t in acc_ax.get_legend().get_texts()]
    assert {"basic_cnn", "resnet50v2", "train", "val"} <= set(legend)
    assert len([line for line in loss_ax.get_lines() if len(line.get_xdata()) == 12]) == 4  # 2 models x train/val
    assert plots.is_marked_synthetic(fig)


def test_curves_over_seeds_draw_the_mean_with_a_band(histories) -> None:
    two_seeds = pd.concat([report.curves_table(histories, 0),
                           report.curves_table({m: h.assign(val_accuracy=h["val_accuracy"] + 0.02)
                                                for m, h in histories.items()}, 1)])
    fig = plots.plot_curves(two_seeds)
    acc_ax = fig.axes[1]
    assert acc_ax.get_title().endswith("(band: ± 1 std over seeds)") and acc_ax.collections  # the bands
    val_cnn = next(line for line in acc_ax.get_lines() if len(line.get_xdata()) == 12
                   and np.isclose(line.get_ydata()[0], 0.49))
    assert val_cnn is not None, "the mean of 0.48 and 0.50"


def test_per_class_f1_grouped_bars(summaries) -> None:
    fig = plots.plot_per_class_f1({m: s["test"] for m, s in summaries.items()})
    ax = fig.axes[0]
    assert len(ax.patches) == 2 * NUM_CLASSES
    assert [t.get_text() for t in ax.get_xticklabels()] == list(EMOTIONS)
    assert ax.get_ylabel() == "F1"
    heights = [patch.get_height() for patch in ax.patches]
    expected = [summaries[m]["test"]["per_class"][c]["f1"] for m in summaries for c in EMOTIONS]
    assert np.allclose(heights, expected)


def test_test_accuracy_bars_with_baseline(summaries) -> None:
    fig = plots.plot_test_accuracy(summaries)
    ax = fig.axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "test" in legend and "test + flip TTA" in legend
    assert any(text.startswith("majority-class baseline") for text in legend)


def test_mark_synthetic_is_idempotent_and_keeps_the_title() -> None:
    fig = Figure()
    fig.suptitle("curves")
    plots.mark_synthetic(fig)
    plots.mark_synthetic(fig)
    assert sum(t.get_gid() == plots.SYNTHETIC_GID for t in fig.texts) == 1
    assert fig.get_suptitle().startswith("SYNTHETIC DATA") and fig.get_suptitle().endswith("curves")


def test_save_figure_writes_png_and_parents(tmp_path: Path, histories) -> None:
    fig = plots.plot_curves(report.curves_table(histories))
    path = plots.save_figure(fig, tmp_path / "a" / "b" / "curves.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plots.save_figure_in(fig, None, "x.png") is None
    assert plots.save_figure_in(fig, tmp_path / "figs", "x.png") == tmp_path / "figs" / "x.png"


# --------------------------------------------------------------------------------------------------------------------
# Report: tables, conclusions, loading a run folder
# --------------------------------------------------------------------------------------------------------------------


def test_accuracy_at_epochs(histories) -> None:
    table = report.accuracy_at_epochs(histories, epochs=(1, 5, 20, "last"))
    assert list(table.columns) == ["epoch 1", "epoch 5", "epoch 20", "last", "last_epoch"]
    assert table.loc[("basic_cnn", "val"), "epoch 1"] == pytest.approx(0.48)
    assert table.loc[("basic_cnn", "val"), "last"] == pytest.approx(0.66)
    assert np.isnan(table.loc[("basic_cnn", "val"), "epoch 20"]), "past the end of the run"
    assert table.loc[("resnet50v2", "train"), "last_epoch"] == 12


def test_conclusions_name_the_winner_and_flag_the_collapsed_model(summaries) -> None:
    lines = report.conclusions(summaries)
    text = "\n".join(lines)
    assert lines[0].startswith("**SYNTHETIC DATA**")
    accuracy_line = next(line for line in lines if line.startswith("On test accuracy"))
    assert "basic_cnn is better" in accuracy_line
    gap = summaries["basic_cnn"]["test"]["accuracy"] - summaries["resnet50v2"]["test"]["accuracy"]
    assert f"by {gap:.3f}" in accuracy_line
    assert "basic_cnn is better" in next(line for line in lines if line.startswith("On test macro-F1"))
    assert "resnet50v2 is not a real result on test: collapsed" in text
    assert "'happy'" in text
    assert "basic_cnn did not collapse" in text
    assert not any(line.startswith("No winner") for line in lines)
    assert any(line.startswith("Hardest class") and "basic_cnn" in line for line in lines)
    assert any("TTA" in line for line in lines)


def test_conclusions_winner_follows_the_numbers(labels) -> None:
    swapped = {"basic_cnn": _summary("basic_cnn", _happy_only_probabilities, labels, synthetic=False),
               "resnet50v2": _summary("resnet50v2", _good_probabilities, labels, synthetic=False)}
    lines = report.conclusions(swapped)
    assert not lines[0].startswith("**SYNTHETIC")
    assert "resnet50v2 is better" in lines[0]
    assert any("basic_cnn is not a real result" in line for line in lines)


def test_conclusions_when_every_model_collapsed(labels) -> None:
    both = {"basic_cnn": _summary("basic_cnn", _happy_only_probabilities, labels),
            "resnet50v2": _summary("resnet50v2", _happy_only_probabilities, labels)}
    lines = report.conclusions(both)
    assert any(line.startswith("No winner: every model collapsed") for line in lines)
    assert sum("is not a real result" in line for line in lines) == 2


def test_conclusions_with_one_model(summaries) -> None:
    lines = report.conclusions({"basic_cnn": summaries["basic_cnn"]})
    assert any(line.startswith("Only basic_cnn was trained") for line in lines)


def test_tables(summaries) -> None:
    table = report.metrics_table(summaries["resnet50v2"])
    assert list(table.index) == ["val", "test", "test_tta"]
    assert table.loc["test", "majority_baseline"] == pytest.approx(summaries["resnet50v2"]["test"]
                                                                   ["majority_class_accuracy"])
    assert table.loc["test", "collapse_warning"].startswith("collapsed")
    per_class = report.per_class_table(summaries["basic_cnn"]["test"])
    assert list(per_class.index) == list(EMOTIONS) and "f1" in per_class
    compare = report.compare_table(summaries)
    assert list(compare.index) == ["basic_cnn", "resnet50v2"]
    assert bool(compare.loc["resnet50v2", "collapsed"]) and not bool(compare.loc["basic_cnn", "collapsed"])


def test_load_run_results(tmp_path: Path, summaries, histories) -> None:
    run_dir = runs.new_run_dir("fake", outputs_dir=tmp_path, params={"models": ["resnet50v2", "basic_cnn"],
                                                                     "synthetic": True})
    for model in ("basic_cnn", "resnet50v2"):
        model_dir = records.model_dir(run_dir, model)
        records.write_json(model_dir / "metrics.json", summaries[model])
        histories[model].to_csv(model_dir / "history.csv", index=False)
    results = load_run_results(run_dir)
    assert results.models == ["resnet50v2", "basic_cnn"], "the study's order"
    assert results.synthetic and results.seeds == [0], "a run of one seed is a run of that seed"
    assert list(results.first.histories["basic_cnn"]["epoch"]) == list(range(1, 13))
    assert json.loads(json.dumps(results.first.summaries["basic_cnn"]["test"]["accuracy"])) == pytest.approx(
        summaries["basic_cnn"]["test"]["accuracy"])
    empty = runs.new_run_dir("empty", outputs_dir=tmp_path, params={})
    with pytest.raises(FileNotFoundError, match="no trained model"):
        load_run_results(empty)


# --------------------------------------------------------------------------------------------------------------------
# Occlusion maps (fer_lib.analysis.explain's arrays, made up here)
# --------------------------------------------------------------------------------------------------------------------


def _occlusion_maps(seed: int) -> np.ndarray:
    maps = np.random.default_rng(seed).normal(0, 0.05, size=(NUM_CLASSES, 48, 48))
    maps[1] = np.nan  # a class without a correctly classified image
    return maps


def test_occlusion_maps_per_class_models_side_by_side() -> None:
    maps = {"basic_cnn": _occlusion_maps(0), "resnet50v2": _occlusion_maps(1)}
    counts = {"basic_cnn": [2, 0, 2, 2, 1, 2, 2], "resnet50v2": [2, 0, 2, 2, 2, 2, 2]}
    faces = np.random.default_rng(2).uniform(0, 255, size=(NUM_CLASSES, 48, 48))
    fig = plots.plot_occlusion_maps(maps, counts=counts, faces=faces, synthetic=True)
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(panels) == NUM_CLASSES * 2 and len(fig.axes) == NUM_CLASSES * 2 + 2  # + one colour bar per model
    assert [panels[0].get_title(), panels[1].get_title()] == ["basic_cnn", "resnet50v2"]
    assert [panels[2 * code].get_ylabel() for code in range(NUM_CLASSES)] == list(EMOTIONS)
    assert panels[2 * 4].get_title(loc="right") == "n=1"
    assert any("no correctly" in text.get_text() for text in panels[2].texts)  # disgust, basic_cnn
    assert len(panels[0].images) == 2 and len(panels[2].images) == 1  # face + map; face only
    assert plots.is_marked_synthetic(fig)
    bare = plots.plot_occlusion_maps({"basic_cnn": _occlusion_maps(0)})
    assert not plots.is_marked_synthetic(bare) and len(bare.axes[0].images) == 1
    with pytest.raises(ValueError, match="class_maps"):
        plots.plot_occlusion_maps({"basic_cnn": np.zeros((6, 48, 48))})


def test_occlusion_examples_face_then_each_model() -> None:
    images = np.random.default_rng(0).integers(0, 255, size=(3, 48, 48, 1), dtype=np.uint8)
    maps = {"basic_cnn": np.random.default_rng(1).normal(size=(3, 48, 48)),
            "resnet50v2": np.random.default_rng(2).normal(size=(3, 48, 48))}
    fig = plots.plot_occlusion_examples(images, [3, 0, 6], maps, ids=["a", "b", "c"],
                                        probabilities={"basic_cnn": [0.9, 0.5, 0.4], "resnet50v2": [0.8, 0.7, 0.6]})
    assert len(fig.axes) == 3 * 3
    assert fig.axes[0].get_title() == "happy\na" and fig.axes[3].get_title().startswith("angry")
    assert fig.axes[1].get_title().startswith("basic_cnn\nmax drop") and "p=0.90" in fig.axes[1].get_title()
    assert "resnet50v2" in fig.axes[2].get_title()
    empty = plots.plot_occlusion_examples(images[:0], [], {"basic_cnn": np.zeros((0, 48, 48))}, synthetic=True)
    assert "No face" in empty.texts[0].get_text() and plots.is_marked_synthetic(empty)
    with pytest.raises(ValueError, match="example_maps"):
        plots.plot_occlusion_examples(images, [3, 0, 6], {"basic_cnn": np.zeros((2, 48, 48))})
