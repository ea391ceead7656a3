"""What :class:`fer_lib.analysis.widgets.ConfusionInspector` shows, decided without widgets so it is unit-tested
without ipywidgets; no Keras either: reading a run must not start a backend."""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from matplotlib import colormaps
from matplotlib.colors import to_hex

from fer_lib.analysis.results import RunResults, SeedResults
from fer_lib.core import records
from fer_lib.core.config import DataConfig
from fer_lib.core.data import FerDataset, Split, load_study_data
from fer_lib.core.evaluate import confusion_counts, load_predictions, row_normalise
from fer_lib.core.labels import EMOTIONS, NUM_CLASSES

DEFAULT_PAGE_SIZE = 24
MODES: tuple[tuple[str, str], ...] = (("counts", "counts"), ("row-normalised", "normalised"))
DATASET_CACHE_SIZE = 2  # FER2013 is ~85 MB of pixels: keep the last two runs' data sets, not every run's


# --- Cells, pages, probabilities --------------------------------------------------------------------------------------


def check_class(value: Any, name: str) -> int:
    """``value`` as a class code 0-6; a ValueError naming ``name`` and the classes otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < NUM_CLASSES:
        raise ValueError(f"{name} must be a class code 0-{NUM_CLASSES - 1} "
                         f"({', '.join(f'{i} {e}' for i, e in enumerate(EMOTIONS))}), got {value!r}")
    return int(value)


def cell_indices(labels: np.ndarray, predicted: np.ndarray, true_class: int, predicted_class: int) -> np.ndarray:
    """Positions (ascending) of the images of a confusion-matrix cell: one definition for the widget and its tests."""
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    if labels.shape != predicted.shape or labels.ndim != 1:
        raise ValueError(f"labels and predicted must be 1-D arrays of one length, got shapes {labels.shape} and "
                         f"{predicted.shape}")
    return np.flatnonzero((labels == check_class(true_class, "true_class"))
                          & (predicted == check_class(predicted_class, "predicted_class")))


def page(indices: np.ndarray | Sequence[int], page_number: int, page_size: int) -> tuple[np.ndarray, int]:
    """The ``page_number``-th (0-based) slice of ``page_size`` items of ``indices``, and the number of pages (at
    least one, so "page 1 of 1" is valid); paging past the end is the caller's bug, so an error, not an empty page."""
    indices = np.asarray(indices)
    if isinstance(page_size, bool) or not isinstance(page_size, (int, np.integer)) or page_size < 1:
        raise ValueError(f"page_size must be a positive integer, got {page_size!r}")
    n_pages = max(1, math.ceil(len(indices) / page_size))
    if isinstance(page_number, bool) or not isinstance(page_number, (int, np.integer)) \
            or not 0 <= page_number < n_pages:
        raise ValueError(f"page_number must be in 0..{n_pages - 1} ({len(indices)} items, {page_size} per page), "
                         f"got {page_number!r}")
    return indices[page_number * page_size:(page_number + 1) * page_size], n_pages


def cell_text(counts: np.ndarray, true_class: int, predicted_class: int, mode: str) -> str:
    """A cell's label: the count, or (``mode="normalised"``) the row share with two decimals."""
    if mode == "counts":
        return str(int(counts[true_class, predicted_class]))
    if mode == "normalised":
        return f"{row_normalise(counts)[true_class, predicted_class]:.2f}"
    raise ValueError(f"mode must be 'counts' or 'normalised', got {mode!r}")


def cell_intensities(counts: np.ndarray, mode: str) -> np.ndarray:
    """Colour intensity in [0, 1] per cell: count / largest count, or the row share when normalised."""
    if mode == "normalised":
        return row_normalise(counts)
    if mode == "counts":
        return np.asarray(counts, dtype=np.float64) / max(int(np.max(counts)), 1)
    raise ValueError(f"mode must be 'counts' or 'normalised', got {mode!r}")


BLUES = colormaps["Blues"]  # the saved confusion figures' colormap (fer_lib.analysis.plots)


def cell_colours(intensity: float) -> tuple[str, str]:
    """Background and text colour (CSS hex) of an intensity in [0, 1] on Blues: white text on dark cells, legible."""
    intensity = float(np.clip(intensity, 0.0, 1.0))
    return to_hex(BLUES(intensity)), ("#ffffff" if intensity > 0.5 else "#08306b")


def cell_tooltip(counts: np.ndarray, true_class: int, predicted_class: int) -> str:
    """A cell's tooltip: its classes, its count and its share of the true class."""
    count = int(counts[true_class, predicted_class])
    share = row_normalise(counts)[true_class, predicted_class]
    return (f"true {EMOTIONS[true_class]}, predicted {EMOTIONS[predicted_class]}: {count} "
            f"image{'s' if count != 1 else ''} ({share:.1%} of true {EMOTIONS[true_class]})")


def split_title(split: str) -> str:
    """How a prediction split is named to a user."""
    return {"test_tta": "test (with flip TTA)", "test_tta10": "test (with ten-view TTA)"}.get(split, split)


# --- One split's predictions, and the cell page shown -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SplitPredictions:
    """One ``predictions_<split>.npz`` of a model; ``predicted`` (argmax) and ``counts`` (rows true) computed once."""

    split: str
    ids: np.ndarray
    labels: np.ndarray
    probabilities: np.ndarray
    predicted: np.ndarray = dataclasses.field(init=False)
    counts: np.ndarray = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        n = len(self.labels)
        if self.probabilities.shape != (n, NUM_CLASSES) or self.ids.shape != self.labels.shape \
                or self.labels.ndim != 1:
            raise ValueError(f"expected ids (n,), labels (n,), probabilities (n, {NUM_CLASSES}); got "
                             f"{self.ids.shape}, {self.labels.shape}, {self.probabilities.shape}")
        object.__setattr__(self, "predicted", self.probabilities.argmax(axis=1))
        object.__setattr__(self, "counts", confusion_counts(self.labels, self.predicted))

    @classmethod
    def load(cls, path: str | Path, split: str | None = None) -> SplitPredictions:
        """Read a predictions file (``split`` defaults to the file's ``predictions_<split>.npz`` name)."""
        path = Path(path)
        stored = load_predictions(path)
        name = split if split is not None else path.stem.removeprefix("predictions_")
        try:
            return cls(name, stored["ids"], stored["labels"].astype(np.int64), stored["probabilities"])
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None

    def __len__(self) -> int:
        return int(len(self.labels))

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.labels == self.predicted)) if len(self.labels) else float("nan")

    def cell(self, true_class: int, predicted_class: int) -> np.ndarray:
        """Rows of the images in cell (true, predicted), ascending."""
        return cell_indices(self.labels, self.predicted, true_class, predicted_class)


@dataclasses.dataclass(frozen=True)
class CellPage:
    """One page of a confusion-matrix cell: the cell's rows, and the rows on page ``page_number`` of ``n_pages``."""

    true_class: int
    predicted_class: int
    indices: np.ndarray
    page_number: int
    n_pages: int
    page_indices: np.ndarray

    @property
    def has_previous(self) -> bool:
        return self.page_number > 0

    @property
    def has_next(self) -> bool:
        return self.page_number < self.n_pages - 1

    @property
    def label(self) -> str:
        """``page 2 of 5``; empty for an empty cell (there is nothing to page through)."""
        return f"page {self.page_number + 1} of {self.n_pages}" if len(self.indices) else ""


def cell_page(predictions: SplitPredictions, true_class: int, predicted_class: int, page_number: int = 0,
              page_size: int = DEFAULT_PAGE_SIZE) -> CellPage:
    """Page ``page_number`` (0-based) of the images of cell (true, predicted) of ``predictions``."""
    indices = predictions.cell(true_class, predicted_class)
    page_indices, n_pages = page(indices, page_number, page_size)
    return CellPage(int(true_class), int(predicted_class), indices, int(page_number), n_pages, page_indices)


# --- Runs, seeds, models and splits to choose from --------------------------------------------------------------------


def choose(available: Sequence[Any], wanted: Any, preferred: Any = None) -> Any:
    """``wanted`` if available, else ``preferred``, else the first (None: none): switching keeps the user's choice."""
    for candidate in (wanted, preferred):
        if candidate is not None and candidate in available:
            return candidate
    return available[0] if len(available) else None


def available_splits(seed_results: SeedResults, model: str) -> list[str]:
    """The splits (of records.PREDICTION_SPLITS, in that order) with a predictions file for this model."""
    return [split for split in records.PREDICTION_SPLITS
            if (seed_results.model_dir(model) / records.predictions_file(split)).is_file()]


def default_split(available: Sequence[str], wanted: str | None) -> str | None:
    """The split to show: ``wanted`` if available, else ``test``, else the first available (None: none)."""
    return choose(available, wanted, "test")


# --- The run's images: reloaded once, cached, linked to prediction rows by id -----------------------------------------

_DATASETS: collections.OrderedDict[tuple[str, int], tuple[FerDataset, str]] = collections.OrderedDict()


def load_run_dataset(results: RunResults) -> tuple[FerDataset, str]:
    """The data set a run was trained on (all its seeds) and where it came from, reloaded from its params since
    predictions files hold ids, not pixels; cached per run folder and params.yaml version."""
    run_dir = results.run_dir.resolve()
    params_file = run_dir / records.PARAMS_FILE
    key = (str(run_dir), params_file.stat().st_mtime_ns if params_file.is_file() else 0)
    if key in _DATASETS:
        _DATASETS.move_to_end(key)
        return _DATASETS[key]
    # data/fer2013 is found from the run folder's project, whatever the notebook's working directory (else from it)
    root = records.project_root(run_dir)
    loaded = load_study_data(DataConfig.from_mapping(results.params),
                             project_root=root if root != run_dir else records.project_root())
    _DATASETS[key] = loaded
    while len(_DATASETS) > DATASET_CACHE_SIZE:
        _DATASETS.popitem(last=False)
    return loaded


def align_ids(wanted: np.ndarray | Sequence[str], available: np.ndarray | Sequence[str]) -> np.ndarray:
    """Positions in ``available`` of each id in ``wanted``: ids, not positions, tie predictions to the reloaded
    images, so a changed data set raises KeyError (naming the first missing ids) instead of showing wrong images."""
    lookup = {str(item): position for position, item in enumerate(np.asarray(available).tolist())}
    wanted_list = [str(item) for item in np.asarray(wanted).tolist()]
    missing = [item for item in wanted_list if item not in lookup]
    if missing:
        raise KeyError(f"{len(missing)} of {len(wanted_list)} image ids are not in the reloaded data set "
                       f"(first: {', '.join(map(repr, missing[:3]))})")
    return np.array([lookup[item] for item in wanted_list], dtype=np.int64)


def split_positions(predictions: SplitPredictions, data_split: Split) -> np.ndarray:
    """For each prediction row, the position of its image in ``data_split``, matched by id; KeyError (an id is
    missing) or ValueError (a label differs) when the data changed since the run."""
    where = align_ids(predictions.ids, data_split.ids)
    if not np.array_equal(data_split.labels[where], predictions.labels):
        raise ValueError("the reloaded data set labels these images differently from the predictions file: the "
                         "data changed since the run")
    return where
