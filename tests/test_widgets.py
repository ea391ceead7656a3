"""fer_lib.analysis.widgets without a browser: the pure functions, and the widgets driven through their own API.

One tiny real run (synthetic data, 1 epoch of a small CNN) is trained once for the module; runs with chosen
predictions cover the cases a trained model does not guarantee (an empty cell, a cell larger than a page).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fer_lib.analysis.confusion import align_ids, cell_colours, cell_indices, cell_text, load_run_dataset, page
from fer_lib.analysis.results import RunResults, load_run_results
from fer_lib.analysis.widgets import ConfusionInspector, SampleBrowser, png_bytes
from fer_lib.core import records
from fer_lib.core.config import PAPER_AUGMENTATION
from fer_lib.core.evaluate import confusion_counts, load_predictions, row_normalise, top_k
from fer_lib.core.labels import EMOTIONS, NUM_CLASSES

try:  # tests/ on sys.path (pytest's default rootdir-less import) or the repo root on it (tests as a package)
    from fixtures_runs import copy_run_without_predictions, make_crafted_run, make_finished_run
except ImportError:  # pragma: no cover
    from tests.fixtures_runs import copy_run_without_predictions, make_crafted_run, make_finished_run


# --------------------------------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    outputs = tmp_path_factory.mktemp("outputs")
    return outputs, make_finished_run(outputs)


@pytest.fixture(scope="module")
def crafted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Test predictions: true disgust -> angry, true sad -> neutral, everything else right."""
    return make_crafted_run(tmp_path_factory.mktemp("crafted"), {1: 0, 4: 6})


def expected(run_dir: Path, split: str = "test") -> dict[str, np.ndarray]:
    stored = load_predictions(records.model_dir(run_dir, "basic_cnn") / f"predictions_{split}.npz")
    stored["predicted"] = stored["probabilities"].argmax(axis=1)
    return stored


def direct_cell_ids(stored: dict[str, np.ndarray], true_class: int, predicted_class: int) -> list[str]:
    mask = (stored["labels"] == true_class) & (stored["predicted"] == predicted_class)
    return [str(i) for i in stored["ids"][mask]]


def decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def inspect(run_dir: Path, **options) -> ConfusionInspector:
    return ConfusionInspector(load_run_results(run_dir), **options)


def shown_ids(inspector: ConfusionInspector, *, page_only: bool = False) -> list[str]:
    """Ids of the selected cell's images (or of the page on display)."""
    if inspector.shown is None:
        return []
    rows = inspector.shown.page_indices if page_only else inspector.shown.indices
    return [str(i) for i in inspector.predictions.ids[rows]]


def cell_labels(inspector: ConfusionInspector) -> list[list[str]]:
    return [[button.description for button in row] for row in inspector.cell_buttons]


# --------------------------------------------------------------------------------------------------------------------
# Pure functions
# --------------------------------------------------------------------------------------------------------------------


def test_cell_indices_selects_exactly_the_matching_pairs() -> None:
    labels = np.array([0, 0, 1, 3, 0, 6])
    predicted = np.array([0, 3, 1, 0, 3, 6])
    assert cell_indices(labels, predicted, 0, 3).tolist() == [1, 4]
    assert cell_indices(labels, predicted, 3, 0).tolist() == [3]
    assert cell_indices(labels, predicted, 2, 2).tolist() == []
    with pytest.raises(ValueError, match="true_class"):
        cell_indices(labels, predicted, 7, 0)
    with pytest.raises(ValueError, match="shapes"):
        cell_indices(labels, predicted[:-1], 0, 0)


@pytest.mark.parametrize("n, size", [(0, 5), (1, 5), (5, 5), (23, 5), (24, 24), (25, 24), (100, 7)])
def test_page_covers_every_index_exactly_once(n: int, size: int) -> None:
    indices = np.arange(100, 100 + n)
    _, n_pages = page(indices, 0, size)
    assert n_pages == max(1, -(-n // size))
    pages = [page(indices, number, size)[0] for number in range(n_pages)]
    assert np.concatenate(pages).tolist() == indices.tolist()
    assert all(len(p) <= size for p in pages)
    with pytest.raises(ValueError, match="page_number"):
        page(indices, n_pages, size)
    with pytest.raises(ValueError, match="page_size"):
        page(indices, 0, 0)


def test_top_k_orders_by_probability_with_stable_ties() -> None:
    probabilities = np.array([0.1, 0.05, 0.3, 0.3, 0.05, 0.1, 0.1])
    assert top_k(probabilities) == [("fear", 0.3), ("happy", 0.3), ("angry", 0.1)]
    assert top_k(probabilities, k=1) == [("fear", 0.3)]
    with pytest.raises(ValueError):
        top_k(probabilities[:6])
    with pytest.raises(ValueError):
        top_k(probabilities, k=0)


def test_confusion_counts_normalising_labels_and_colours() -> None:
    labels = np.array([0, 0, 0, 1])
    predicted = np.array([0, 2, 2, 1])
    counts = confusion_counts(labels, predicted)
    assert counts.shape == (NUM_CLASSES, NUM_CLASSES) and counts.sum() == 4
    assert counts[0, 2] == 2 and counts[1, 1] == 1
    normalised = row_normalise(counts)
    assert normalised[0, 2] == pytest.approx(2 / 3) and normalised[3].sum() == 0  # an empty row stays 0
    assert cell_text(counts, 0, 2, "counts") == "2" and cell_text(counts, 0, 2, "normalised") == "0.67"
    light, dark = cell_colours(0.0), cell_colours(1.0)
    assert light[0] != dark[0] and dark[1] == "#ffffff" and light[1] != "#ffffff"


def test_align_ids_and_png_bytes() -> None:
    assert align_ids(np.array(["c", "a"]), np.array(["a", "b", "c"])).tolist() == [2, 0]
    with pytest.raises(KeyError, match="'z'"):
        align_ids(np.array(["a", "z"]), np.array(["a", "b"]))
    image = np.arange(48 * 48, dtype=np.uint32).reshape(48, 48, 1) % 256
    decoded = decode(png_bytes(image.astype(np.uint8), size=96))
    assert decoded.shape == (96, 96)
    assert np.array_equal(decoded[::2, ::2], image[..., 0])


# --------------------------------------------------------------------------------------------------------------------
# ConfusionInspector on a trained run
# --------------------------------------------------------------------------------------------------------------------


def test_inspector_draws_the_runs_confusion_matrix_and_toggles_mode(trained: tuple[Path, Path]) -> None:
    _, run_dir = trained
    inspector = inspect(run_dir)
    stored = expected(run_dir)
    counts = confusion_counts(stored["labels"], stored["predicted"])
    assert inspector.model == "basic_cnn" and inspector.split == "test" and inspector.seed == 0
    assert np.array_equal(inspector.predictions.counts, counts)
    assert cell_labels(inspector) == [[str(int(c)) for c in row] for row in counts]
    assert "SYNTHETIC DATA" in inspector.summary.value
    assert inspector.seed_dropdown.layout.display == "none", "one seed: no seed to choose"
    for true_class in range(NUM_CLASSES):
        for predicted_class in range(NUM_CLASSES):
            classes = inspector.cell_buttons[true_class][predicted_class]._dom_classes
            assert "fer-cm-cell" in classes
            assert ("fer-cm-empty" in classes) == (counts[true_class, predicted_class] == 0)

    inspector.mode_toggle.value = "normalised"
    assert cell_labels(inspector) == [[f"{v:.2f}" for v in row] for row in row_normalise(counts)]
    inspector.mode_toggle.value = "counts"
    assert cell_labels(inspector) == [[str(int(c)) for c in row] for row in counts]


def test_clicking_a_cell_shows_exactly_its_images(trained: tuple[Path, Path]) -> None:
    _, run_dir = trained
    results = load_run_results(run_dir)
    inspector = ConfusionInspector(results)
    stored = expected(run_dir)
    dataset, _ = load_run_dataset(results)
    nonzero = np.argwhere(inspector.predictions.counts > 0)
    for true_class, predicted_class in nonzero[:: max(1, len(nonzero) // 4)]:  # a few non-empty cells
        inspector.cell_buttons[true_class][predicted_class].click()
        assert inspector.selected == (true_class, predicted_class)
        assert "fer-cm-selected" in inspector.cell_buttons[true_class][predicted_class]._dom_classes
        wanted = direct_cell_ids(stored, true_class, predicted_class)
        assert shown_ids(inspector) == wanted
        assert shown_ids(inspector, page_only=True) == wanted[: inspector.page_size]
        items = inspector.image_grid.children
        assert len(items) == len(shown_ids(inspector, page_only=True))
        # each image is the data set's image with that id, and its caption names the id and its top-3 classes
        page_ids = shown_ids(inspector, page_only=True)
        for item, position, image_id in zip(items, align_ids(page_ids, dataset.test.ids), page_ids):
            picture, caption = item.children
            assert np.array_equal(decode(picture.value)[::2, ::2], dataset.test.images[position, :, :, 0])
            assert str(image_id) in caption.value
            row = int(np.flatnonzero(stored["ids"] == image_id)[0])
            for name, _ in top_k(stored["probabilities"][row]):
                assert name in caption.value
        assert "fer-image-grid" in inspector.image_grid._dom_classes
    other = (int(nonzero[0][0]) + 1) % NUM_CLASSES, int(nonzero[0][1])
    inspector.select_cell(*other)  # one selection at a time
    assert sum("fer-cm-selected" in b._dom_classes for row in inspector.cell_buttons for b in row) == 1


def test_paging_covers_a_large_cell_exactly_once(trained: tuple[Path, Path]) -> None:
    _, run_dir = trained
    inspector = inspect(run_dir, page_size=5)
    counts = inspector.predictions.counts
    true_class, predicted_class = (int(v) for v in np.unravel_index(np.argmax(counts), counts.shape))
    inspector.select_cell(true_class, predicted_class)
    n = len(shown_ids(inspector))
    assert n > 5, "the largest cell of the tiny run should span several pages"
    seen = shown_ids(inspector, page_only=True)
    n_pages = inspector.shown.n_pages
    assert inspector.prev_button.disabled and inspector.page_label.value == f"page 1 of {n_pages}"
    while not inspector.next_button.disabled:
        inspector.next_button.click()
        seen.extend(shown_ids(inspector, page_only=True))
        assert len(inspector.image_grid.children) == len(inspector.shown.page_indices)
    assert inspector.page_label.value == f"page {n_pages} of {n_pages}" and n_pages == -(-n // 5)
    assert seen == shown_ids(inspector) and len(set(seen)) == n
    inspector.prev_button.click()
    assert inspector.shown.page_number == n_pages - 2


def test_switching_split_keeps_the_cell(trained: tuple[Path, Path]) -> None:
    _, run_dir = trained
    inspector = inspect(run_dir)
    assert set(v for _, v in inspector.split_dropdown.options) == {"val", "test"}
    inspector.select_cell(3, 3)
    inspector.split_dropdown.value = "val"
    assert inspector.split == "val" and inspector.selected == (3, 3)
    assert shown_ids(inspector) == direct_cell_ids(expected(run_dir, "val"), 3, 3)
    assert inspect(run_dir, split="val").split == "val"
    with pytest.raises(ValueError, match="split must be one of val, test, test_tta"):
        inspect(run_dir, split="train")


# --------------------------------------------------------------------------------------------------------------------
# ConfusionInspector: chosen predictions and missing pieces
# --------------------------------------------------------------------------------------------------------------------


def test_crafted_cells_empty_cell_and_paging(crafted: Path) -> None:
    inspector = inspect(crafted, page_size=7)
    stored = expected(crafted)
    per_class = np.bincount(stored["labels"], minlength=NUM_CLASSES)
    counts = inspector.predictions.counts
    assert counts[1, 0] == per_class[1] and counts[1, 1] == 0 and counts[4, 6] == per_class[4]

    inspector.cell_buttons[1][0].click()  # every true disgust image, predicted angry
    assert shown_ids(inspector) == direct_cell_ids(stored, 1, 0) and len(shown_ids(inspector)) > 7
    pages = [shown_ids(inspector, page_only=True)]
    while not inspector.next_button.disabled:
        inspector.next_button.click()
        pages.append(shown_ids(inspector, page_only=True))
    assert sum(pages, []) == shown_ids(inspector)

    inspector.cell_buttons[1][1].click()  # empty: no disgust image was predicted disgust
    assert inspector.selected == (1, 1)
    assert shown_ids(inspector) == [] and inspector.image_grid.children == ()
    assert "No images" in inspector.cell_info.value and "disgust" in inspector.cell_info.value
    assert inspector.prev_button.disabled and inspector.next_button.disabled


def test_a_model_without_predictions_says_so(trained: tuple[Path, Path], tmp_path: Path) -> None:
    copy = copy_run_without_predictions(trained[1], tmp_path / "other")
    inspector = inspect(copy)
    assert "has no predictions file" in inspector.message.value and inspector.predictions is None
    assert inspector.matrix.layout.display == "none"


def test_changed_data_is_reported_not_shown_wrongly(crafted: Path, tmp_path: Path) -> None:
    """If the reloaded data no longer holds the predictions' ids, say so instead of showing other images."""
    import shutil

    changed = tmp_path / "outputs" / crafted.name
    shutil.copytree(crafted, changed)
    params = records.read_params(changed)
    records.write_params(changed, {**params, "synthetic_test": params["synthetic_test"] // 2})
    inspector = inspect(changed)
    inspector.select_cell(1, 0)
    assert len(shown_ids(inspector)) > 0  # the ids are still listed ...
    assert "Cannot show the images" in inspector.cell_info.value  # ... but no wrong pixels
    assert inspector.image_grid.children == ()


# --------------------------------------------------------------------------------------------------------------------
# SampleBrowser
# --------------------------------------------------------------------------------------------------------------------


def test_sample_browser_seed_slider_redraws_the_preview(trained: tuple[Path, Path]) -> None:
    _, run_dir = trained
    results = load_run_results(run_dir)
    browser = SampleBrowser(results, variants=4)
    dataset, _ = load_run_dataset(results)
    assert browser.current_id is not None and len(browser.preview.children) == 4
    assert "fer-augment-preview" in browser.preview._dom_classes
    position = browser.current_position
    assert np.array_equal(decode(browser.image.value)[::3, ::3], dataset.train.images[position, :, :, 0])
    first = browser.preview_images
    browser.seed_slider.value = 1
    second = browser.preview_images
    assert len(second) == 4 and second != first
    browser.seed_slider.value = 0
    assert browser.preview_images == first  # a seed always draws the same augmentations

    browser.split_dropdown.value = "test"
    browser.class_dropdown.value = 5
    assert dataset.test.labels[browser.current_position] == 5
    browser.index_slider.value = 2
    assert browser.current_id == str(dataset.test.ids[np.flatnonzero(dataset.test.labels == 5)[2]])
    assert "surprise" in browser.info.value


def test_sample_browser_accepts_a_dataset(trained: tuple[Path, Path]) -> None:
    dataset, _ = load_run_dataset(load_run_results(trained[1]))
    browser = SampleBrowser(dataset, variants=2, split="val")
    assert browser.augmentation == PAPER_AUGMENTATION
    assert browser.class_dropdown.options[0][0].startswith(f"{EMOTIONS[0]} (")
    assert len(browser.preview_images) == 2


# --------------------------------------------------------------------------------------------------------------------
# ConfusionInspector: a run with several seeds
# --------------------------------------------------------------------------------------------------------------------


def _seeded_copy(crafted: Path, outputs: Path) -> Path:
    """The crafted run as a two-seed run: its predictions become seed 0's; seed 1 predicts every image 'angry'."""
    import shutil

    run_dir = outputs / f"{crafted.name}-seeds"
    shutil.copytree(crafted, run_dir)
    seed_0 = records.model_dir(run_dir, "basic_cnn", 0)
    seed_0.parent.mkdir(parents=True)
    shutil.move(run_dir / records.MODELS_DIR / "basic_cnn", seed_0)
    (run_dir / records.MODELS_DIR).rmdir()
    seed_1 = records.model_dir(run_dir, "basic_cnn", 1)
    seed_1.mkdir(parents=True)
    stored = load_predictions(seed_0 / "predictions_test.npz")
    angry = np.full_like(stored["probabilities"], 0.05)
    angry[:, 0] = 0.7
    np.savez_compressed(seed_1 / "predictions_test.npz", ids=stored["ids"], labels=stored["labels"],
                        probabilities=angry)
    shutil.copy(seed_0 / records.METRICS_FILE, seed_1 / records.METRICS_FILE)
    return run_dir


def test_the_seed_dropdown_switches_seeds_and_keeps_the_cell(crafted: Path, tmp_path: Path) -> None:
    single = inspect(crafted)
    run_dir = _seeded_copy(crafted, tmp_path / "outputs")
    inspector = inspect(run_dir)
    assert inspector.results.seeds == [0, 1] and inspector.seed == 0
    assert inspector.seed_dropdown.layout.display is None and inspector.seed_dropdown.value == 0
    assert "(seed 0)" in inspector.summary.value
    assert np.array_equal(inspector.predictions.counts, single.predictions.counts)  # seed 0: the crafted ones
    inspector.select_cell(1, 0)
    assert shown_ids(inspector) == direct_cell_ids(expected(crafted), 1, 0)
    assert len(inspector.image_grid.children) == len(shown_ids(inspector, page_only=True)) > 0

    inspector.seed_dropdown.value = 1  # seed 1 predicts 'angry' for every image: the cell keeps its selection
    assert inspector.seed == 1 and inspector.selected == (1, 0) and "(seed 1)" in inspector.summary.value
    assert inspector.predictions.counts[:, 0].sum() == inspector.predictions.counts.sum()
    stored = load_predictions(records.model_dir(run_dir, "basic_cnn", 1) / "predictions_test.npz")
    assert shown_ids(inspector) == [str(i) for i in stored["ids"][stored["labels"] == 1]]
    assert len(inspector.image_grid.children) == len(shown_ids(inspector, page_only=True)) > 0
    assert inspect(run_dir, seed=1).seed == 1
    with pytest.raises(ValueError, match="seed must be one of"):
        inspector.load_seed(7)
