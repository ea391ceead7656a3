"""Interactive views for the notebooks: which images a model confuses, and what augmentation does to an image.

* :class:`ConfusionInspector` (03_compare): a run's confusion matrix as clickable cells; a click shows the images of
  that cell with each image's top-3 predicted probabilities, page by page. Numbers alone hide whether "fear predicted
  as sad" is a model error or a labelling ambiguity of FER2013; looking at the images answers that.
* :class:`SampleBrowser` (01_explore_data): browse images by split and class, with a preview of the run's random
  augmentation, so the augmentation ranges can be judged by eye.

Everything that decides *what* is shown lives in pure functions (:func:`cell_indices`, :func:`page`, :func:`top_k`,
:func:`cell_indices`, :func:`align_ids`, ...) and in plain methods and properties of the widgets
(``select_cell``, ``current_ids``, ``page_ids``, ...), so tests can drive the widgets without a browser. Keras is
imported lazily (only when a data set is reloaded or an augmentation is drawn), so importing this module is cheap.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import html
import io
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import ipywidgets as widgets
import numpy as np
from PIL import Image

from fer_lib import runs
from fer_lib.data import SPLITS, FerDataset, Split
from fer_lib.evaluate import confusion_counts, row_normalise
from fer_lib.labels import EMOTIONS, NUM_CLASSES

DEFAULT_PAGE_SIZE = 24
PREDICTION_SPLITS: tuple[str, ...] = ("val", "test", "test_tta")
"""The ``predictions_<split>.npz`` files a model folder can hold (see :func:`fer_lib.study.run_model`)."""
MODES: tuple[tuple[str, str], ...] = (("counts", "counts"), ("row-normalised", "normalised"))
DATASET_CACHE_SIZE = 2  # FER2013 is ~85 MB of pixels: keep the last two runs' data sets, not every run's

__all__ = ["ConfusionInspector", "SampleBrowser", "align_ids", "caption_html", "cell_colours", "cell_indices",
           "cell_intensities", "cell_text", "load_run_dataset", "page", "png_bytes", "top_k"]


# --------------------------------------------------------------------------------------------------------------------
# Pure functions: what the widgets show, testable without any widget
# --------------------------------------------------------------------------------------------------------------------


def _check_class(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < NUM_CLASSES:
        raise ValueError(f"{name} must be a class code 0-{NUM_CLASSES - 1} "
                         f"({', '.join(f'{i} {e}' for i, e in enumerate(EMOTIONS))}), got {value!r}")
    return int(value)


def cell_indices(labels: np.ndarray, predicted: np.ndarray, true_class: int, predicted_class: int) -> np.ndarray:
    """Positions (ascending) of the images whose true label is ``true_class`` and prediction ``predicted_class``.

    This is the definition of a confusion-matrix cell, kept in one place so the widget and its tests agree on it.
    """
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    if labels.shape != predicted.shape or labels.ndim != 1:
        raise ValueError(f"labels and predicted must be 1-D arrays of one length, got shapes {labels.shape} and "
                         f"{predicted.shape}")
    true_class = _check_class(true_class, "true_class")
    predicted_class = _check_class(predicted_class, "predicted_class")
    return np.flatnonzero((labels == true_class) & (predicted == predicted_class))


def page(indices: np.ndarray | Sequence[int], page_number: int, page_size: int) -> tuple[np.ndarray, int]:
    """The ``page_number``-th (0-based) slice of ``page_size`` items of ``indices``, and the number of pages.

    An empty ``indices`` has one (empty) page, so "page 1 of 1" is always a valid label. A page number outside
    ``0 .. n_pages - 1`` is an error rather than an empty page: paging past the end is a bug in the caller.
    """
    indices = np.asarray(indices)
    if isinstance(page_size, bool) or not isinstance(page_size, (int, np.integer)) or page_size < 1:
        raise ValueError(f"page_size must be a positive integer, got {page_size!r}")
    n_pages = max(1, math.ceil(len(indices) / page_size))
    if isinstance(page_number, bool) or not isinstance(page_number, (int, np.integer)) \
            or not 0 <= page_number < n_pages:
        raise ValueError(f"page_number must be in 0..{n_pages - 1} ({len(indices)} items, {page_size} per page), "
                         f"got {page_number!r}")
    start = int(page_number) * int(page_size)
    return indices[start:start + int(page_size)], n_pages


def top_k(probabilities: np.ndarray | Sequence[float], k: int = 3) -> list[tuple[str, float]]:
    """The ``k`` most probable classes of one image as ``(class name, probability)``, most probable first.

    Ties keep class-code order, so captions are stable between runs.
    """
    values = np.asarray(probabilities, dtype=np.float64).ravel()
    if values.shape != (NUM_CLASSES,):
        raise ValueError(f"probabilities must hold {NUM_CLASSES} values (one per class), got shape {values.shape}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= NUM_CLASSES:
        raise ValueError(f"k must be an integer in 1..{NUM_CLASSES}, got {k!r}")
    order = np.argsort(-values, kind="stable")[:k]
    return [(EMOTIONS[int(i)], float(values[i])) for i in order]


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
        largest = max(int(np.max(counts)), 1)
        return np.asarray(counts, dtype=np.float64) / largest
    raise ValueError(f"mode must be 'counts' or 'normalised', got {mode!r}")


_LIGHT = np.array([247, 251, 255])  # the two ends of matplotlib's "Blues", as in the saved confusion figures
_DARK = np.array([8, 48, 107])


def cell_colours(intensity: float) -> tuple[str, str]:
    """Background and text colour (CSS hex) for an intensity in [0, 1]; dark cells get white text to stay legible."""
    intensity = float(np.clip(intensity, 0.0, 1.0))
    rgb = np.rint(_LIGHT + (_DARK - _LIGHT) * intensity).astype(int)
    return "#{:02x}{:02x}{:02x}".format(*rgb), ("#ffffff" if intensity > 0.5 else "#08306b")


def align_ids(wanted: np.ndarray | Sequence[str], available: np.ndarray | Sequence[str]) -> np.ndarray:
    """Positions in ``available`` of each id in ``wanted`` (in ``wanted``'s order).

    Predictions are stored with ids, not images; the images come from reloading the run's data set, and ids (not
    positions) tie the two together, so a reordered or changed data set is detected instead of showing wrong images.
    Raises KeyError naming the first missing ids.
    """
    lookup = {str(item): position for position, item in enumerate(np.asarray(available).tolist())}
    wanted_list = [str(item) for item in np.asarray(wanted).tolist()]
    missing = [item for item in wanted_list if item not in lookup]
    if missing:
        shown = ", ".join(repr(item) for item in missing[:3])
        raise KeyError(f"{len(missing)} of {len(wanted_list)} image ids are not in the reloaded data set "
                       f"(first: {shown})")
    return np.array([lookup[item] for item in wanted_list], dtype=np.int64)


def png_bytes(image: np.ndarray, *, size: int | None = None) -> bytes:
    """PNG bytes of one grayscale image (uint8 0-255, or float 0-1), scaled to ``size`` pixels with sharp pixels.

    ``ipywidgets.Image`` needs encoded bytes; nearest-neighbour scaling keeps 48x48 faces crisp instead of blurred.
    """
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 2:
        raise ValueError(f"png_bytes expects one grayscale image (H, W) or (H, W, 1), got shape {array.shape}")
    if array.dtype != np.uint8:
        array = np.clip(np.rint(np.asarray(array, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)
    picture = Image.fromarray(array)
    if size is not None and size != array.shape[0]:
        picture = picture.resize((size, size), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def caption_html(image_id: str, top: Sequence[tuple[str, float]], true_class: int | None = None) -> str:
    """The caption under an image: its id and top-k predictions (the true class in bold, if among them)."""
    lines = [f'<span class="fer-image-id" title="{html.escape(image_id)}">{html.escape(image_id)}</span>']
    for name, probability in top:
        text = f"{html.escape(name)} {probability:.2f}"
        if true_class is not None and name == EMOTIONS[true_class]:
            text = f"<b>{text}</b>"
        lines.append(text)
    return ('<div class="fer-caption" style="font-size:11px;line-height:1.25;overflow-wrap:anywhere">'
            + "<br>".join(lines) + "</div>")


# --------------------------------------------------------------------------------------------------------------------
# Data: a run's data set, reloaded once and cached
# --------------------------------------------------------------------------------------------------------------------

_DATASETS: collections.OrderedDict[tuple[str, int], tuple[FerDataset, str]] = collections.OrderedDict()


def load_run_dataset(run_dir: str | Path) -> tuple[FerDataset, str]:
    """The data set a run was trained on, reloaded from its params.yaml, and where it came from.

    Predictions files hold ids, not pixels (keeping runs small), so widgets reload the data: FER2013 from its decoded
    cache, synthetic data regenerated deterministically from the params. Cached per run folder (and params.yaml
    version), keeping the last :data:`DATASET_CACHE_SIZE`, so re-creating a widget or switching models is instant.
    """
    from fer_lib.data import load_study_data

    run_dir = Path(run_dir).resolve()
    params_file = run_dir / runs.PARAMS_FILE
    key = (str(run_dir), params_file.stat().st_mtime_ns if params_file.is_file() else 0)
    if key in _DATASETS:
        _DATASETS.move_to_end(key)
        return _DATASETS[key]
    params = runs.read_params(run_dir)
    # Data discovery (data/fer2013) is relative to the project: find it from the run folder (outputs/<run> lives in
    # it), so the notebook's working directory does not matter; fall back to the working directory's project.
    root = runs.project_root(run_dir)
    loaded = load_study_data(params, project_root=root if root != run_dir else runs.project_root())
    _DATASETS[key] = loaded
    while len(_DATASETS) > DATASET_CACHE_SIZE:
        _DATASETS.popitem(last=False)
    return loaded


def _run_folders(outputs_dir: Path) -> list[Path]:
    """Run folders (those with params.yaml) under ``outputs_dir``, newest first."""
    if not outputs_dir.is_dir():
        return []
    return sorted((p for p in outputs_dir.iterdir() if (p / runs.PARAMS_FILE).is_file()), key=lambda p: p.name,
                  reverse=True)


def _option_values(dropdown: widgets.Dropdown) -> list[Any]:
    return [option[1] if isinstance(option, tuple) else option for option in dropdown.options]


def _split_title(split: str) -> str:
    return "test (with flip TTA)" if split == "test_tta" else split


def _message(text: str, kind: str = "info") -> str:
    """An HTML notice; ``kind`` is info, warning or error (colour), so problems are visible in the notebook."""
    colours = {"info": ("#08306b", "#eef5fc"), "warning": ("#7a4b00", "#fff4e0"), "error": ("#8b0000", "#fdecec")}
    fg, bg = colours[kind]
    return (f'<div class="fer-notice fer-notice-{kind}" style="color:{fg};background:{bg};padding:4px 8px;'
            f'border-radius:4px;margin:2px 0">{text}</div>')


F = TypeVar("F", bound=Callable[..., Any])


def _reporting(method: F) -> F:
    """Show an unexpected error of a widget callback in the widget itself, not only in JupyterLab's hidden log."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except Exception as error:
            self.message.value = _message(f"Error: {html.escape(type(error).__name__)}: "
                                          f"{html.escape(str(error))}", "error")
            raise

    return wrapper  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------------------------------
# ConfusionInspector
# --------------------------------------------------------------------------------------------------------------------


class _Quiet:
    """Lets a widget update its own controls without their observers firing (``with self._quietly(): ...``)."""

    _quiet = 0

    @contextlib.contextmanager
    def _quietly(self) -> Iterator[None]:
        self._quiet += 1
        try:
            yield
        finally:
            self._quiet -= 1


class ConfusionInspector(_Quiet, widgets.VBox):
    """A run's confusion matrix as buttons; clicking a cell shows its images with their top-3 predictions.

    ``run_dir``: the run to open (default: the newest run under ``outputs_dir`` with a trained model).
    ``outputs_dir`` (default: the folder holding ``run_dir``, else the project's ``outputs/``) is where the run
    dropdown looks for runs. ``model`` / ``split``: what to show first (default: the first model, ``test``); all
    three can be changed in the widget. ``page_size`` images are shown per page.

    Selecting a cell (a click, :meth:`select_cell`, or the ``true`` / ``predicted`` dropdowns) sets :attr:`selected`,
    :attr:`current_indices` / :attr:`current_ids` (rows of the predictions file) and shows page 1 of its images;
    :meth:`set_page` and the Prev / Next buttons page through them (:attr:`page_ids`, :attr:`n_pages`). Nothing is
    selected at first, so showing the widget never loads the data set; the first selection does (then cached).
    """

    def __init__(self, run_dir: str | Path | None = None, *, outputs_dir: str | Path | None = None,
                 model: str | None = None, split: str = "test", page_size: int = DEFAULT_PAGE_SIZE,
                 image_size: int = 96) -> None:
        super().__init__()
        if split not in PREDICTION_SPLITS:
            raise ValueError(f"split must be one of {', '.join(PREDICTION_SPLITS)}, got {split!r}")
        page((), 0, page_size)  # validates page_size
        self.add_class("fer-confusion-inspector")
        if outputs_dir is None:  # list the given run's siblings (its outputs/), else the project's outputs/
            outputs_dir = Path(run_dir).resolve().parent if run_dir is not None else runs.default_outputs_dir()
        self.outputs_dir = Path(outputs_dir)
        self.page_size = int(page_size)
        self.image_size = int(image_size)
        self._wanted_model, self._wanted_split = model, split
        self._quiet = 0  # >0 while options are set programmatically: observers then do nothing
        self._positions: dict[tuple[str, str, str], np.ndarray] = {}  # (run, model, split) -> rows in the data set

        # State (plain attributes, read by tests and by the display code)
        self.run_dir: Path | None = None
        self.model: str | None = None
        self.split: str | None = None
        self.ids: np.ndarray | None = None
        self.labels: np.ndarray | None = None
        self.probabilities: np.ndarray | None = None
        self.predicted: np.ndarray | None = None
        self.counts: np.ndarray | None = None
        self.selected: tuple[int, int] | None = None
        self.current_indices: np.ndarray = np.array([], dtype=np.int64)
        self.page_number = 0
        self.n_pages = 1
        self.page_indices: np.ndarray = np.array([], dtype=np.int64)

        # Controls
        wide = widgets.Layout(width="auto", min_width="260px")
        self.run_dropdown = widgets.Dropdown(description="run", layout=widgets.Layout(width="auto", min_width="420px"))
        self.model_dropdown = widgets.Dropdown(description="model", layout=wide)
        self.split_dropdown = widgets.Dropdown(description="split", layout=wide)
        self.mode_toggle = widgets.ToggleButtons(options=list(MODES), value="counts",
                                                 tooltips=["number of images", "share of the true class (row)"],
                                                 style={"button_width": "140px"})
        self.true_dropdown = widgets.Dropdown(description="true", options=[(n, i) for i, n in enumerate(EMOTIONS)],
                                              value=None)
        self.predicted_dropdown = widgets.Dropdown(description="predicted",
                                                   options=[(n, i) for i, n in enumerate(EMOTIONS)], value=None)
        for control, css in ((self.run_dropdown, "fer-run-select"), (self.model_dropdown, "fer-model-select"),
                             (self.split_dropdown, "fer-split-select"), (self.mode_toggle, "fer-cm-mode"),
                             (self.true_dropdown, "fer-true-select"), (self.predicted_dropdown, "fer-pred-select")):
            control.add_class(css)
        self.message = widgets.HTML().add_class("fer-message")
        self.summary = widgets.HTML().add_class("fer-summary")

        # The matrix: a header row of predicted classes, then one row per true class
        self.cell_buttons: list[list[widgets.Button]] = []
        header: list[widgets.Widget] = [widgets.HTML("<i>true \u2193 / predicted \u2192</i>")]
        header += [widgets.HTML(f'<div style="text-align:center;font-weight:bold">{name}</div>')
                   for name in EMOTIONS]
        cells: list[widgets.Widget] = list(header)
        for true_class, name in enumerate(EMOTIONS):
            cells.append(widgets.HTML(f'<div style="font-weight:bold;text-align:right;padding-right:6px">'
                                      f'{name}</div>'))
            row = []
            for predicted_class in range(NUM_CLASSES):
                button = widgets.Button(description="", layout=widgets.Layout(width="auto", height="30px"))
                button.add_class("fer-cm-cell")
                button.add_class(f"fer-cm-cell-{true_class}-{predicted_class}")
                button.on_click(functools.partial(self._on_cell_click, true_class, predicted_class))
                row.append(button)
                cells.append(button)
            self.cell_buttons.append(row)
        self.matrix = widgets.GridBox(cells, layout=widgets.Layout(
            grid_template_columns="150px repeat(7, 66px)", grid_gap="2px", width="fit-content"))
        self.matrix.add_class("fer-confusion-matrix")

        # The selected cell's images
        self.cell_info = widgets.HTML().add_class("fer-cell-info")
        self.prev_button = widgets.Button(description="Prev", icon="arrow-left", tooltip="previous page",
                                          layout=widgets.Layout(width="90px"), disabled=True).add_class("fer-prev")
        self.next_button = widgets.Button(description="Next", icon="arrow-right", tooltip="next page",
                                          layout=widgets.Layout(width="90px"), disabled=True).add_class("fer-next")
        self.page_label = widgets.Label("").add_class("fer-page-label")
        self.prev_button.on_click(lambda _: self.set_page(self.page_number - 1))
        self.next_button.on_click(lambda _: self.set_page(self.page_number + 1))
        self.image_grid = widgets.GridBox([], layout=widgets.Layout(
            grid_template_columns=f"repeat(auto-fill, minmax({self.image_size + 16}px, 1fr))", grid_gap="6px",
            width="100%"))
        self.image_grid.add_class("fer-image-grid")

        self.children = (
            widgets.HBox([self.run_dropdown, self.model_dropdown, self.split_dropdown],
                         layout=widgets.Layout(flex_flow="row wrap")),
            widgets.HBox([widgets.Label("cells show:"), self.mode_toggle],
                         layout=widgets.Layout(align_items="center")),
            self.message, self.summary, self.matrix,
            widgets.HBox([self.true_dropdown, self.predicted_dropdown], layout=widgets.Layout(flex_flow="row wrap")),
            self.cell_info,
            widgets.HBox([self.prev_button, self.page_label, self.next_button],
                         layout=widgets.Layout(align_items="center")),
            self.image_grid,
        )

        self.run_dropdown.observe(self._on_run_change, names="value")
        self.model_dropdown.observe(self._on_model_change, names="value")
        self.split_dropdown.observe(self._on_split_change, names="value")
        self.mode_toggle.observe(self._on_mode_change, names="value")
        self.true_dropdown.observe(self._on_selector_change, names="value")
        self.predicted_dropdown.observe(self._on_selector_change, names="value")
        self._populate_runs(run_dir)

    # ---- read-only views of the state -----------------------------------------------------------------------------

    @property
    def mode(self) -> str:
        return str(self.mode_toggle.value)

    @property
    def current_ids(self) -> np.ndarray:
        """Ids of all images of the selected cell (empty when nothing is selected)."""
        return self.ids[self.current_indices] if self.ids is not None else np.array([], dtype=str)

    @property
    def page_ids(self) -> np.ndarray:
        """Ids of the images shown on the current page."""
        return self.ids[self.page_indices] if self.ids is not None else np.array([], dtype=str)

    @property
    def cell_labels(self) -> list[list[str]]:
        """The text of every cell button, as shown."""
        return [[button.description for button in row] for row in self.cell_buttons]

    # ---- actions ----------------------------------------------------------------------------------------------------

    def _populate_runs(self, run_dir: str | Path | None) -> None:
        folders = _run_folders(self.outputs_dir)
        chosen: Path | None = None
        if run_dir is not None:
            chosen = Path(run_dir).resolve()
            if not (chosen / runs.PARAMS_FILE).is_file():
                self._show_nothing(_message(f"'{html.escape(str(run_dir))}' is not a run folder: it has no "
                                            f"{runs.PARAMS_FILE}.", "error"))
                return
        elif folders:
            with_models = [folder for folder in folders if runs.run_models(folder)]
            chosen = (with_models or folders)[0].resolve()
        options = [(folder.name, str(folder.resolve())) for folder in folders]
        if chosen is not None and str(chosen) not in {value for _, value in options}:
            options.insert(0, (chosen.name, str(chosen)))
        with self._quietly():
            self.run_dropdown.options = options
            self.run_dropdown.value = str(chosen) if chosen is not None else None
        if chosen is None:
            self._show_nothing(_message(
                f"No run folders under '{html.escape(str(self.outputs_dir))}'. Train a model first: "
                f"<code>fer-study run</code> or the 02_train notebook.", "warning"))
            return
        self.load_run(chosen)

    @_reporting
    def load_run(self, run_dir: str | Path) -> None:
        """Open a run folder: list its trained models and show the first (or the requested) one."""
        self.run_dir = Path(run_dir).resolve()
        models = runs.run_models(self.run_dir)
        with self._quietly():
            if str(self.run_dir) not in _option_values(self.run_dropdown):
                self.run_dropdown.options = [(self.run_dir.name, str(self.run_dir)), *self.run_dropdown.options]
            self.run_dropdown.value = str(self.run_dir)
            self.model_dropdown.options = models
            self.model_dropdown.value = None
        if not models:
            self._show_nothing(_message(
                f"Run '{html.escape(self.run_dir.name)}' has no trained model yet (no "
                f"models/&lt;model&gt;/metrics.json): train one with <code>fer-study run</code> or the 02_train "
                f"notebook, or choose another run.", "warning"))
            return
        model = self._wanted_model if self._wanted_model in models else models[0]
        self.load_model(model)

    @_reporting
    def load_model(self, model: str) -> None:
        """Show one model of the current run: list its prediction files and load the requested split."""
        assert self.run_dir is not None, "load a run first"
        model_dir = runs.model_dir(self.run_dir, model)
        available = [s for s in PREDICTION_SPLITS if (model_dir / f"predictions_{s}.npz").is_file()]
        self.model = model
        with self._quietly():
            self.model_dropdown.value = model
            self.split_dropdown.options = [(_split_title(s), s) for s in available]
            self.split_dropdown.value = None
        if not available:
            self._show_nothing(_message(
                f"Model '{html.escape(model)}' of run '{html.escape(self.run_dir.name)}' has no predictions file "
                f"(models/{html.escape(model)}/predictions_{self._wanted_split}.npz): it was not evaluated. "
                f"Re-run its evaluation (<code>fer-study run</code> or 02_train).", "warning"))
            return
        split = self._wanted_split if self._wanted_split in available else ("test" if "test" in available
                                                                            else available[0])
        self.load_split(split)
        if split != self._wanted_split:
            self.message.value = _message(
                f"Model '{html.escape(model)}' has no predictions_{self._wanted_split}.npz; showing the "
                f"{_split_title(split)} split instead.", "warning")

    @_reporting
    def load_split(self, split: str) -> None:
        """Load ``predictions_<split>.npz`` of the current model and draw its confusion matrix."""
        from fer_lib.evaluate import load_predictions

        assert self.run_dir is not None and self.model is not None, "load a run and a model first"
        path = runs.model_dir(self.run_dir, self.model) / f"predictions_{split}.npz"
        if not path.is_file():
            self._show_nothing(_message(f"No predictions file {html.escape(str(path))}.", "warning"))
            return
        stored = load_predictions(path)
        ids, labels, probabilities = stored["ids"], stored["labels"].astype(np.int64), stored["probabilities"]
        if probabilities.shape != (len(labels), NUM_CLASSES) or ids.shape != labels.shape:
            raise ValueError(f"{path}: expected ids (n,), labels (n,), probabilities (n, {NUM_CLASSES}); got "
                             f"{ids.shape}, {labels.shape}, {probabilities.shape}")
        self.split = split
        with self._quietly():
            self.split_dropdown.value = split
        self.ids, self.labels, self.probabilities = ids, labels, probabilities
        self.predicted = probabilities.argmax(axis=1)
        self.counts = confusion_counts(labels, self.predicted)
        self.message.value = ""
        self.summary.value = self._summary_html()
        self.matrix.layout.display = None
        self._draw_matrix()
        if self.selected is not None:  # keep the cell when switching model or split: compare them on one cell
            self.select_cell(*self.selected)
        else:
            self._clear_images(_message("Click a cell of the matrix (or choose <i>true</i> and <i>predicted</i> "
                                        "below) to see its images."))

    def _summary_html(self) -> str:
        assert self.labels is not None and self.predicted is not None and self.run_dir is not None
        accuracy = float(np.mean(self.labels == self.predicted)) if len(self.labels) else float("nan")
        text = (f"<b>{html.escape(str(self.model))}</b> on <b>{_split_title(str(self.split))}</b> of run "
                f"<code>{html.escape(self.run_dir.name)}</code>: {len(self.labels)} images, accuracy "
                f"{accuracy:.3f}. Rows: true class; columns: predicted class.")
        try:
            synthetic = bool(runs.read_params(self.run_dir).get("synthetic"))
        except (OSError, ValueError):
            synthetic = False
        if synthetic:
            text += (" <b style='color:#8b0000'>SYNTHETIC DATA</b>: generated faces, not FER2013; these numbers say "
                     "nothing about real facial expression recognition.")
        return f'<div style="margin:4px 0">{text}</div>'

    def _draw_matrix(self) -> None:
        """Set every cell button's label, colour and tooltip from the counts and the current mode."""
        if self.counts is None:
            return
        intensities = cell_intensities(self.counts, self.mode)
        shares = row_normalise(self.counts)
        for true_class, row in enumerate(self.cell_buttons):
            for predicted_class, button in enumerate(row):
                count = int(self.counts[true_class, predicted_class])
                button.description = cell_text(self.counts, true_class, predicted_class, self.mode)
                background, foreground = cell_colours(intensities[true_class, predicted_class])
                button.style.button_color = background
                button.style.text_color = foreground
                button.tooltip = (f"true {EMOTIONS[true_class]}, predicted {EMOTIONS[predicted_class]}: {count} "
                                  f"image{'s' if count != 1 else ''} ({shares[true_class, predicted_class]:.1%} of "
                                  f"true {EMOTIONS[true_class]})")
                if count == 0:
                    button.add_class("fer-cm-empty")
                else:
                    button.remove_class("fer-cm-empty")
        self._highlight()

    def _highlight(self) -> None:
        for true_class, row in enumerate(self.cell_buttons):
            for predicted_class, button in enumerate(row):
                if self.selected == (true_class, predicted_class):
                    button.layout.border = "3px solid #ff7f0e"
                    button.add_class("fer-cm-selected")
                else:
                    button.layout.border = None
                    button.remove_class("fer-cm-selected")

    def _show_nothing(self, notice: str) -> None:
        """No matrix to show (no run, no model, no predictions): say why and clear everything below."""
        self.ids = self.labels = self.probabilities = self.predicted = self.counts = None
        self.message.value = notice
        self.summary.value = ""
        self.matrix.layout.display = "none"
        self._clear_images("")

    def _clear_images(self, notice: str) -> None:
        self.current_indices = np.array([], dtype=np.int64)
        self.page_indices = np.array([], dtype=np.int64)
        self.page_number, self.n_pages = 0, 1
        self.cell_info.value = notice
        self.page_label.value = ""
        self.prev_button.disabled = self.next_button.disabled = True
        self.image_grid.children = ()

    @_reporting
    def select_cell(self, true_class: int, predicted_class: int) -> None:
        """Select the cell (true, predicted): sync the dropdowns and buttons, and show its first page of images."""
        true_class = _check_class(true_class, "true_class")
        predicted_class = _check_class(predicted_class, "predicted_class")
        self.selected = (true_class, predicted_class)
        with self._quietly():
            self.true_dropdown.value = true_class
            self.predicted_dropdown.value = predicted_class
        self._highlight()
        if self.labels is None or self.predicted is None:
            return
        self.current_indices = cell_indices(self.labels, self.predicted, true_class, predicted_class)
        self.set_page(0)

    @_reporting
    def set_page(self, page_number: int) -> None:
        """Show page ``page_number`` (0-based) of the selected cell's images."""
        if self.selected is None or self.labels is None:
            return
        true_class, predicted_class = self.selected
        self.page_indices, self.n_pages = page(self.current_indices, page_number, self.page_size)
        self.page_number = int(page_number)
        n = len(self.current_indices)
        where = (f"true <b>{EMOTIONS[true_class]}</b>, predicted <b>{EMOTIONS[predicted_class]}</b> "
                 f"({_split_title(str(self.split))})")
        self.prev_button.disabled = self.page_number == 0
        self.next_button.disabled = self.page_number >= self.n_pages - 1
        if n == 0:
            self.cell_info.value = _message(
                f"No images in this cell: no {_split_title(str(self.split))} image of true class "
                f"'{EMOTIONS[true_class]}' was predicted as '{EMOTIONS[predicted_class]}'.")
            self.page_label.value = ""
            self.image_grid.children = ()
            return
        self.page_label.value = f"page {self.page_number + 1} of {self.n_pages}"
        self.cell_info.value = (f"{where}: {n} image{'s' if n != 1 else ''}; captions: id and top-3 predicted "
                                f"probabilities (true class in bold).")
        try:
            images = self._images(self.page_indices)
        except Exception as error:  # data moved or changed since the run: say so, keep the ids
            self.cell_info.value += _message(f"Cannot show the images: {html.escape(str(error))}", "error")
            self.image_grid.children = ()
            return
        assert self.ids is not None and self.probabilities is not None
        items = []
        for image, position in zip(images, self.page_indices):
            picture = widgets.Image(value=png_bytes(image, size=self.image_size), format="png",
                                    width=self.image_size, height=self.image_size).add_class("fer-image")
            caption = widgets.HTML(caption_html(str(self.ids[position]), top_k(self.probabilities[position], 3),
                                                true_class))
            items.append(widgets.VBox([picture, caption], layout=widgets.Layout(align_items="flex-start"))
                         .add_class("fer-image-item"))
        self.image_grid.children = tuple(items)

    def _images(self, rows: np.ndarray) -> np.ndarray:
        """Pixels of the given prediction rows, from the run's reloaded data set, matched by id (and label)."""
        assert self.run_dir is not None and self.ids is not None and self.labels is not None
        dataset, _ = load_run_dataset(self.run_dir)
        data_split: Split = dataset.split(str(self.split).removesuffix("_tta"))
        key = (str(self.run_dir), str(self.model), str(self.split))
        if key not in self._positions:  # align the whole split once: paging is then only indexing
            where = align_ids(self.ids, data_split.ids)
            if not np.array_equal(data_split.labels[where], self.labels):
                raise ValueError("the reloaded data set labels these images differently from the predictions "
                                 "file: the data changed since the run")
            self._positions[key] = where
        return data_split.images[self._positions[key][rows]]

    # ---- callbacks ---------------------------------------------------------------------------------------------------

    def _on_cell_click(self, true_class: int, predicted_class: int, _button: widgets.Button) -> None:
        self.select_cell(true_class, predicted_class)

    def _on_run_change(self, change: Mapping[str, Any]) -> None:
        if not self._quiet and change["new"]:
            self.load_run(change["new"])

    def _on_model_change(self, change: Mapping[str, Any]) -> None:
        if not self._quiet and change["new"]:
            self._wanted_model = change["new"]
            self.load_model(change["new"])

    def _on_split_change(self, change: Mapping[str, Any]) -> None:
        if not self._quiet and change["new"]:
            self._wanted_split = change["new"]
            self.load_split(change["new"])

    @_reporting
    def _on_mode_change(self, _change: Mapping[str, Any]) -> None:
        self._draw_matrix()

    def _on_selector_change(self, _change: Mapping[str, Any]) -> None:
        if self._quiet:
            return
        true_class, predicted_class = self.true_dropdown.value, self.predicted_dropdown.value
        if true_class is not None and predicted_class is not None:
            self.select_cell(true_class, predicted_class)
        elif self.labels is not None:
            self.cell_info.value = _message("Choose both a <i>true</i> and a <i>predicted</i> class.")



# --------------------------------------------------------------------------------------------------------------------
# SampleBrowser
# --------------------------------------------------------------------------------------------------------------------


def _augmentation_config(augmentation: Any) -> Any:
    from fer_lib.params import PAPER_AUGMENTATION, AugmentConfig

    if augmentation is None:
        return PAPER_AUGMENTATION
    return augmentation if isinstance(augmentation, AugmentConfig) else AugmentConfig.from_mapping(augmentation)


class SampleBrowser(_Quiet, widgets.VBox):
    """Browse a data set by split and class, with random augmentations of the chosen image.

    ``dataset_or_run_dir``: a :class:`fer_lib.data.FerDataset`, or a run folder (its data set is reloaded from its
    params.yaml and its augmentation params are used). ``augmentation`` overrides the augmentation (default: the
    run's, else :data:`fer_lib.params.PAPER_AUGMENTATION`). Moving the seed slider draws new augmentations.
    """

    def __init__(self, dataset_or_run_dir: FerDataset | str | Path, *,
                 augmentation: Any = None, variants: int = 8, image_size: int = 144, preview_size: int = 96,
                 split: str = "train") -> None:
        super().__init__()
        self.add_class("fer-sample-browser")
        if isinstance(dataset_or_run_dir, FerDataset):
            self.dataset, self.source = dataset_or_run_dir, dataset_or_run_dir.source
            run_augmentation = None
        else:
            run_dir = Path(dataset_or_run_dir)
            self.dataset, _ = load_run_dataset(run_dir)
            self.source = self.dataset.source
            run_augmentation = runs.read_params(run_dir).get("augmentation")
        self.augmentation = _augmentation_config(augmentation if augmentation is not None else run_augmentation)
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        if isinstance(variants, bool) or not isinstance(variants, int) or variants < 1:
            raise ValueError(f"variants must be a positive integer, got {variants!r}")
        self.variants, self.image_size, self.preview_size = variants, int(image_size), int(preview_size)
        self._quiet = 0
        self.positions: np.ndarray = np.array([], dtype=np.int64)  # positions in the split of the chosen class

        self.split_dropdown = widgets.Dropdown(description="split", options=list(SPLITS), value=split)
        self.class_dropdown = widgets.Dropdown(description="class")
        self.index_slider = widgets.IntSlider(description="index", min=0, max=0, value=0, continuous_update=False)
        self.seed_slider = widgets.IntSlider(description="aug. seed", min=0, max=99, value=0,
                                             continuous_update=False,
                                             tooltip="each seed draws new random augmentations")
        self.message = widgets.HTML().add_class("fer-message")
        self.image = widgets.Image(format="png", width=self.image_size, height=self.image_size)
        self.info = widgets.HTML().add_class("fer-sample-info")
        self.preview = widgets.HBox([], layout=widgets.Layout(flex_flow="row wrap", grid_gap="4px"))
        self.preview_info = widgets.HTML()
        for control, css in ((self.split_dropdown, "fer-split-select"), (self.class_dropdown, "fer-class-select"),
                             (self.index_slider, "fer-index-slider"), (self.seed_slider, "fer-seed-slider"),
                             (self.image, "fer-sample-image"), (self.preview, "fer-augment-preview")):
            control.add_class(css)
        self.children = (
            widgets.HBox([self.split_dropdown, self.class_dropdown], layout=widgets.Layout(flex_flow="row wrap")),
            self.index_slider, self.message,
            widgets.HBox([self.image, self.info], layout=widgets.Layout(align_items="center", grid_gap="12px")),
            self.preview_info, self.seed_slider, self.preview,
        )
        self.split_dropdown.observe(lambda _: self._update_classes(), names="value")
        self.class_dropdown.observe(lambda _: self._update_positions(), names="value")
        self.index_slider.observe(lambda _: self._show_image(), names="value")
        self.seed_slider.observe(lambda _: self._draw_preview(), names="value")
        self._update_classes()

    # ---- state ------------------------------------------------------------------------------------------------------

    @property
    def current_split(self) -> Split:
        return self.dataset.split(str(self.split_dropdown.value))

    @property
    def current_position(self) -> int | None:
        """Position in the split of the image shown (None when the chosen class has no image in the split)."""
        if not len(self.positions):
            return None
        return int(self.positions[self.index_slider.value])

    @property
    def current_id(self) -> str | None:
        position = self.current_position
        return None if position is None else str(self.current_split.ids[position])

    @property
    def preview_images(self) -> list[bytes]:
        """PNG bytes of the augmentation previews currently shown."""
        return [bytes(child.value) for child in self.preview.children]

    # ---- drawing -----------------------------------------------------------------------------------------------------

    def _update_classes(self) -> None:
        counts = np.bincount(self.current_split.labels, minlength=NUM_CLASSES)
        previous = self.class_dropdown.value
        with self._quietly():
            self.class_dropdown.options = [(f"{name} ({int(counts[i])})", i) for i, name in enumerate(EMOTIONS)]
            self.class_dropdown.value = previous if previous is not None else int(np.argmax(counts > 0))
        self._update_positions()

    def _update_positions(self) -> None:
        if self._quiet:
            return
        self.positions = np.flatnonzero(self.current_split.labels == self.class_dropdown.value)
        with self._quietly():
            self.index_slider.max = max(0, len(self.positions) - 1)
            self.index_slider.value = 0
            self.index_slider.disabled = len(self.positions) <= 1
        self._show_image()

    @_reporting
    def _show_image(self) -> None:
        if self._quiet:
            return
        position = self.current_position
        name = EMOTIONS[int(self.class_dropdown.value)]
        if position is None:
            self.message.value = _message(f"The {self.split_dropdown.value} split has no '{name}' image.", "warning")
            self.image.value = b""
            self.info.value = ""
            self.preview.children = ()
            return
        split = self.current_split
        self.message.value = ""
        self.image.value = png_bytes(split.images[position], size=self.image_size)
        notice = (" <b style='color:#8b0000'>SYNTHETIC DATA</b> (generated faces, not FER2013)"
                  if self.dataset.is_synthetic else "")
        self.info.value = (f"<b>{html.escape(name)}</b>, {self.split_dropdown.value} split: index "
                           f"{self.index_slider.value} of 0..{len(self.positions) - 1}<br>id "
                           f"<code>{html.escape(str(split.ids[position]))}</code><br>"
                           f"<small>{html.escape(self.source)}</small>{notice}")
        self._draw_preview()

    @_reporting
    def _draw_preview(self) -> None:
        """Draw ``variants`` random augmentations of the current image with the slider's seed."""
        from fer_lib.augment import augment_preview

        position = self.current_position
        if self._quiet or position is None:
            return
        image = self.current_split.images[position]
        augmented = augment_preview(image[None], self.augmentation, variants=self.variants,
                                    seed=int(self.seed_slider.value))[0]
        self.preview.children = tuple(
            widgets.Image(value=png_bytes(variant, size=self.preview_size), format="png", width=self.preview_size,
                          height=self.preview_size).add_class("fer-augment-image")
            for variant in augmented)
        settings = ", ".join(f"{key} {value}" for key, value in dataclasses.asdict(self.augmentation).items())
        identity = " (identity: this augmentation changes nothing)" if self.augmentation.is_identity else ""
        self.preview_info.value = (f"{self.variants} random augmentations (as in training), seed "
                                   f"{self.seed_slider.value}: {html.escape(settings)}{identity}")
