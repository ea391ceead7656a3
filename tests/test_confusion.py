"""fer_lib.analysis.confusion: what the confusion inspector shows, tested without ipywidgets (and without Keras).

Runs here are crafted folders (chosen predictions, no training), so the module is fast: well under a second per test.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from matplotlib import colormaps

from fer_lib.analysis.confusion import (CellPage, SplitPredictions, available_splits, cell_colours, cell_page,
                                        cell_tooltip, choose, default_split, split_positions, split_title)
from fer_lib.analysis.results import load_run_results
from fer_lib.app import runs
from fer_lib.core import records
from fer_lib.core.data import Split
from fer_lib.core.evaluate import confusion_counts, save_predictions
from fer_lib.core.labels import NUM_CLASSES

try:  # see test_widgets.py
    from fixtures_runs import small_params
except ImportError:  # pragma: no cover
    from tests.fixtures_runs import small_params


def _predictions(labels: list[int], predicted: list[int], split: str = "test") -> SplitPredictions:
    probabilities = np.full((len(labels), NUM_CLASSES), 0.05)
    probabilities[np.arange(len(labels)), predicted] = 0.7
    return SplitPredictions(split, np.array([f"img{i}" for i in range(len(labels))]), np.array(labels),
                            probabilities)


def _split(ids: list[str], labels: list[int]) -> Split:
    images = np.arange(len(ids) * 4, dtype=np.uint8).reshape(len(ids), 2, 2, 1)
    return Split("test", images, np.array(labels), np.array(ids))


def make_seeded_run(outputs_dir: Path, name: str = "seeded", seeds: tuple[int, ...] = (3, 5)) -> Path:
    """A several-seed run without training: ``seeds/seed-<s>/models/basic_cnn`` with chosen test predictions; seed
    ``seeds[0]`` predicts every image right, the others predict everything 'angry'."""
    params = small_params({"name": name})
    run_dir = runs.new_run_dir(name, outputs_dir=outputs_dir, params=params)
    labels = np.arange(21) % NUM_CLASSES
    split = Split("test", np.zeros((21, 48, 48, 1), np.uint8), labels, np.array([f"t{i}" for i in range(21)]))
    for index, seed in enumerate(seeds):
        predicted = labels if index == 0 else np.zeros_like(labels)
        probabilities = np.full((21, NUM_CLASSES), 0.05)
        probabilities[np.arange(21), predicted] = 0.7
        model_dir = records.model_dir(run_dir, "basic_cnn", seed)
        save_predictions(model_dir / "predictions_test.npz", split, probabilities)
        records.write_json(model_dir / records.METRICS_FILE, {"model": "basic_cnn", "synthetic": True})
    return run_dir


# --------------------------------------------------------------------------------------------------------------------
# No widgets, no Keras
# --------------------------------------------------------------------------------------------------------------------


def test_the_logic_module_imports_neither_ipywidgets_nor_keras() -> None:
    import subprocess

    code = ("import sys, fer_lib.analysis.confusion; "
            "print(sorted(m for m in ('ipywidgets', 'keras', 'tensorflow', 'jax') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert done.stdout.strip() == "[]"


# --------------------------------------------------------------------------------------------------------------------
# A split's predictions, cells and pages
# --------------------------------------------------------------------------------------------------------------------


def test_split_predictions_compute_predicted_counts_and_cells() -> None:
    predictions = _predictions([0, 0, 1, 3, 0, 6], [0, 3, 1, 0, 3, 6])
    assert predictions.predicted.tolist() == [0, 3, 1, 0, 3, 6]
    assert np.array_equal(predictions.counts, confusion_counts(predictions.labels, predictions.predicted))
    assert len(predictions) == 6 and predictions.accuracy == pytest.approx(3 / 6)
    assert predictions.cell(0, 3).tolist() == [1, 4] and predictions.cell(2, 2).tolist() == []
    with pytest.raises(ValueError, match="probabilities"):
        SplitPredictions("test", np.array(["a"]), np.array([0]), np.zeros((1, 6)))


def test_split_predictions_load_reads_a_predictions_file(tmp_path: Path) -> None:
    split = _split(["a", "b", "c"], [0, 1, 2])
    probabilities = np.eye(NUM_CLASSES)[[0, 2, 2]]
    path = save_predictions(tmp_path / "predictions_val.npz", split, probabilities)
    loaded = SplitPredictions.load(path)
    assert loaded.split == "val" and loaded.ids.tolist() == ["a", "b", "c"]
    assert loaded.labels.dtype == np.int64 and loaded.predicted.tolist() == [0, 2, 2]
    assert loaded.counts[1, 2] == 1


def test_cell_page_pages_through_a_cell_exactly_once() -> None:
    predictions = _predictions([4] * 11 + [0], [6] * 11 + [0])
    first = cell_page(predictions, 4, 6, 0, page_size=5)
    assert isinstance(first, CellPage) and first.n_pages == 3 and first.label == "page 1 of 3"
    assert not first.has_previous and first.has_next
    pages = [cell_page(predictions, 4, 6, number, 5) for number in range(first.n_pages)]
    assert np.concatenate([p.page_indices for p in pages]).tolist() == list(range(11))
    assert pages[-1].has_previous and not pages[-1].has_next and len(pages[-1].page_indices) == 1
    empty = cell_page(predictions, 1, 1)
    assert empty.indices.size == 0 and empty.n_pages == 1 and empty.label == ""
    assert not empty.has_previous and not empty.has_next
    with pytest.raises(ValueError, match="page_number"):
        cell_page(predictions, 4, 6, 3, 5)
    with pytest.raises(ValueError, match="true_class"):
        cell_page(predictions, 7, 0)


def test_cell_tooltip_and_split_title() -> None:
    counts = confusion_counts(np.array([0, 0, 0, 1]), np.array([0, 2, 2, 1]))
    assert cell_tooltip(counts, 0, 2) == "true angry, predicted fear: 2 images (66.7% of true angry)"
    assert cell_tooltip(counts, 1, 1) == "true disgust, predicted disgust: 1 image (100.0% of true disgust)"
    assert cell_tooltip(counts, 5, 5).endswith("0 images (0.0% of true surprise)")
    assert split_title("test_tta") == "test (with flip TTA)" and split_title("val") == "val"


def test_split_positions_match_by_id_and_check_labels() -> None:
    predictions = _predictions([1, 0], [1, 0])  # ids img0, img1
    data = _split(["img1", "x", "img0"], [0, 5, 1])
    assert split_positions(predictions, data).tolist() == [2, 0]
    with pytest.raises(ValueError, match="labels these images differently"):
        split_positions(predictions, _split(["img1", "img0"], [0, 2]))
    with pytest.raises(KeyError, match="img0"):
        split_positions(predictions, _split(["img1"], [0]))


# --------------------------------------------------------------------------------------------------------------------
# Choosing runs, seeds, models and splits
# --------------------------------------------------------------------------------------------------------------------


def test_choose_keeps_the_wanted_value_else_the_preferred_else_the_first() -> None:
    assert choose(["a", "b"], "b") == "b"
    assert choose(["a", "b"], "z") == "a"
    assert choose(["val", "test"], "test_tta", "test") == "test"
    assert choose([], "a") is None
    assert choose([3, 5], None) == 3 and choose([3, 5], 5) == 5
    assert default_split(["val", "test"], "test_tta") == "test"
    assert default_split(["val"], "test") == "val" and default_split([], "test") is None


def test_cell_colours_are_matplotlibs_blues_with_legible_text() -> None:
    """The inspector's cells are coloured as the saved confusion figures (seaborn's heatmap with cmap Blues)."""
    for intensity in (0.0, 0.3, 0.7, 1.0):
        red, green, blue, _ = colormaps["Blues"](intensity)
        background, text = cell_colours(intensity)
        assert background == "#{:02x}{:02x}{:02x}".format(*(round(255 * c) for c in (red, green, blue)))
        assert text == ("#ffffff" if intensity > 0.5 else "#08306b")
    assert cell_colours(-1.0) == cell_colours(0.0) and cell_colours(2.0) == cell_colours(1.0)


def test_available_splits_follow_the_files_of_each_seed(tmp_path: Path) -> None:
    run_dir = make_seeded_run(tmp_path, seeds=(3, 5))
    results = load_run_results(run_dir)
    assert results.seeds == [3, 5]
    assert available_splits(results.by_seed[3], "basic_cnn") == ["test"]
    path = results.by_seed[5].model_dir("basic_cnn") / "predictions_test.npz"
    shutil.copy(path, path.with_name("predictions_val.npz"))
    assert available_splits(results.by_seed[5], "basic_cnn") == ["val", "test"]
    right, wrong = (SplitPredictions.load(results.by_seed[s].model_dir("basic_cnn") / "predictions_test.npz")
                    for s in (3, 5))
    assert right.accuracy == 1.0 and wrong.counts[:, 0].sum() == len(wrong)
