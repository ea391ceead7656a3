"""Interactive views for the notebooks: which images a model confuses, and what augmentation does to an image.

* :class:`ConfusionInspector` (03_compare): a run's confusion matrix as clickable cells; a click shows the images of
  that cell with each image's top-3 predicted probabilities, page by page. Numbers alone hide whether "fear predicted
  as sad" is a model error or a labelling ambiguity of FER2013; looking at the images answers that.
* :class:`SampleBrowser` (01_explore_data): browse images by split and class, with a preview of the run's random
  augmentation, so the augmentation ranges can be judged by eye.

The widgets are views only. Everything that decides *what* the inspector shows (runs, seeds, models and splits to
choose from, a split's predictions and confusion counts, which images fall in a cell, paging, top-3 probabilities,
the cells' text and colours, the run's reloaded data set) lives in :mod:`fer_lib.analysis.confusion`, plain functions tested
without widgets; its public names are re-exported here. The widgets keep plain read-only views of their state
(``selected``, ``current_ids``, ``page_ids``, ...), so tests can drive them without a browser. Keras is imported
lazily (only when an augmentation is drawn), so importing this module is cheap.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import html
import io
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import ipywidgets as widgets
import numpy as np
from PIL import Image

from fer_lib.app import runs
from fer_lib.analysis.confusion import (DATASET_CACHE_SIZE, DEFAULT_PAGE_SIZE, MODES, PREDICTION_SPLITS, CellPage,
                               SplitPredictions, align_ids, available_splits, cell_colours, cell_indices,
                               cell_intensities, cell_page, cell_text, cell_tooltip, check_class, choose,
                               default_split, load_run_dataset, page, predictions_path, run_choices, split_positions,
                               split_title, top_k)
from fer_lib.core.data import SPLITS, FerDataset, Split
from fer_lib.core.labels import EMOTIONS, NUM_CLASSES

__all__ = ["DATASET_CACHE_SIZE", "DEFAULT_PAGE_SIZE", "MODES", "PREDICTION_SPLITS", "ConfusionInspector",
           "SampleBrowser", "align_ids", "caption_html", "cell_colours", "cell_indices", "cell_intensities",
           "cell_text", "load_run_dataset", "page", "png_bytes", "top_k"]


# --------------------------------------------------------------------------------------------------------------------
# View helpers: pixels and HTML
# --------------------------------------------------------------------------------------------------------------------


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



def _option_values(dropdown: widgets.Dropdown) -> list[Any]:
    return [option[1] if isinstance(option, tuple) else option for option in dropdown.options]


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
    dropdown looks for runs. ``model`` / ``split`` / ``seed``: what to show first (default: the first model,
    ``test``, the run's first seed); all can be changed in the widget. The seed dropdown appears only for a run with
    several seeds (``seeds/seed-<s>/``). ``page_size`` images are shown per page.

    Selecting a cell (a click, :meth:`select_cell`, or the ``true`` / ``predicted`` dropdowns) sets :attr:`selected`,
    :attr:`current_indices` / :attr:`current_ids` (rows of the predictions file) and shows page 1 of its images;
    :meth:`set_page` and the Prev / Next buttons page through them (:attr:`page_ids`, :attr:`n_pages`). Nothing is
    selected at first, so showing the widget never loads the data set; the first selection does (then cached).
    What is shown is decided by :mod:`fer_lib.analysis.confusion`; this class only wires it to the controls.
    """

    def __init__(self, run_dir: str | Path | None = None, *, outputs_dir: str | Path | None = None,
                 model: str | None = None, split: str = "test", seed: int | None = None,
                 page_size: int = DEFAULT_PAGE_SIZE, image_size: int = 96) -> None:
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
        self._wanted_model, self._wanted_split, self._wanted_seed = model, split, seed
        self._quiet = 0  # >0 while options are set programmatically: observers then do nothing
        # (run, seed, model, split) -> each prediction row's position in the reloaded data split
        self._positions: dict[tuple[str, int | None, str, str], np.ndarray] = {}

        # State (plain attributes, read by tests and by the display code)
        self.run_dir: Path | None = None
        self.seeds: list[int] = []  # the run's seeds; [] for a single-seed run
        self.seed: int | None = None
        self.model: str | None = None
        self.split: str | None = None
        self.predictions: SplitPredictions | None = None
        self.selected: tuple[int, int] | None = None
        self.shown: CellPage | None = None  # the selected cell's page on display

        # Controls
        wide = widgets.Layout(width="auto", min_width="260px")
        self.run_dropdown = widgets.Dropdown(description="run", layout=widgets.Layout(width="auto", min_width="420px"))
        self.seed_dropdown = widgets.Dropdown(description="seed", layout=widgets.Layout(width="auto",
                                                                                        min_width="160px",
                                                                                        display="none"))
        self.model_dropdown = widgets.Dropdown(description="model", layout=wide)
        self.split_dropdown = widgets.Dropdown(description="split", layout=wide)
        self.mode_toggle = widgets.ToggleButtons(options=list(MODES), value="counts",
                                                 tooltips=["number of images", "share of the true class (row)"],
                                                 style={"button_width": "140px"})
        self.true_dropdown = widgets.Dropdown(description="true", options=[(n, i) for i, n in enumerate(EMOTIONS)],
                                              value=None)
        self.predicted_dropdown = widgets.Dropdown(description="predicted",
                                                   options=[(n, i) for i, n in enumerate(EMOTIONS)], value=None)
        for control, css in ((self.run_dropdown, "fer-run-select"), (self.seed_dropdown, "fer-seed-select"),
                             (self.model_dropdown, "fer-model-select"), (self.split_dropdown, "fer-split-select"),
                             (self.mode_toggle, "fer-cm-mode"), (self.true_dropdown, "fer-true-select"),
                             (self.predicted_dropdown, "fer-pred-select")):
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
            widgets.HBox([self.run_dropdown, self.seed_dropdown, self.model_dropdown, self.split_dropdown],
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
        self.seed_dropdown.observe(self._on_seed_change, names="value")
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
    def ids(self) -> np.ndarray | None:
        return None if self.predictions is None else self.predictions.ids

    @property
    def labels(self) -> np.ndarray | None:
        return None if self.predictions is None else self.predictions.labels

    @property
    def probabilities(self) -> np.ndarray | None:
        return None if self.predictions is None else self.predictions.probabilities

    @property
    def predicted(self) -> np.ndarray | None:
        return None if self.predictions is None else self.predictions.predicted

    @property
    def counts(self) -> np.ndarray | None:
        return None if self.predictions is None else self.predictions.counts

    @property
    def current_indices(self) -> np.ndarray:
        """Rows (of the predictions file) of all images of the selected cell (empty when nothing is selected)."""
        return self.shown.indices if self.shown is not None else np.array([], dtype=np.int64)

    @property
    def page_indices(self) -> np.ndarray:
        """Rows of the images shown on the current page."""
        return self.shown.page_indices if self.shown is not None else np.array([], dtype=np.int64)

    @property
    def page_number(self) -> int:
        return self.shown.page_number if self.shown is not None else 0

    @property
    def n_pages(self) -> int:
        return self.shown.n_pages if self.shown is not None else 1

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

    def _model_folder(self, model: str) -> str:
        """``models/<model>`` (``seeds/seed-<s>/models/<model>`` for one seed), as messages name it."""
        assert self.run_dir is not None
        return runs.model_dir(self.run_dir, model, self.seed).relative_to(self.run_dir).as_posix()

    def _populate_runs(self, run_dir: str | Path | None) -> None:
        try:
            choices = run_choices(self.outputs_dir, run_dir)
        except FileNotFoundError as error:
            self._show_nothing(_message(html.escape(str(error)), "error"))
            return
        with self._quietly():
            self.run_dropdown.options = choices.options
            self.run_dropdown.value = str(choices.chosen) if choices.chosen is not None else None
        if choices.chosen is None:
            self._show_nothing(_message(
                f"No run folders under '{html.escape(str(self.outputs_dir))}'. Train a model first: "
                f"<code>fer-study run</code> or the 02_train notebook.", "warning"))
            return
        self.load_run(choices.chosen)

    @_reporting
    def load_run(self, run_dir: str | Path) -> None:
        """Open a run folder: list its seeds (if several) and show the first (or the requested) one."""
        self.run_dir = Path(run_dir).resolve()
        self.seeds = runs.run_seeds(self.run_dir)
        with self._quietly():
            if str(self.run_dir) not in _option_values(self.run_dropdown):
                self.run_dropdown.options = [(self.run_dir.name, str(self.run_dir)), *self.run_dropdown.options]
            self.run_dropdown.value = str(self.run_dir)
            self.seed_dropdown.options = [(str(seed), seed) for seed in self.seeds]
            self.seed_dropdown.value = None
            self.seed_dropdown.layout.display = None if self.seeds else "none"
        self.load_seed(choose(self.seeds, self._wanted_seed))

    @_reporting
    def load_seed(self, seed: int | None) -> None:
        """Show one seed of a several-seed run (``None`` for a single-seed run): list its trained models."""
        assert self.run_dir is not None, "load a run first"
        if self.seeds and seed not in self.seeds:
            raise ValueError(f"seed must be one of {self.seeds} (the run's seeds), got {seed!r}")
        self.seed = seed if self.seeds else None
        models = runs.run_models(self.run_dir, self.seed)
        with self._quietly():
            self.seed_dropdown.value = self.seed
            self.model_dropdown.options = models
            self.model_dropdown.value = None
        if not models:
            where = ("models/&lt;model&gt;" if self.seed is None
                     else f"seeds/seed-{self.seed}/models/&lt;model&gt;")
            self._show_nothing(_message(
                f"Run '{html.escape(self.run_dir.name)}' has no trained model yet (no "
                f"{where}/metrics.json): train one with <code>fer-study run</code> or the 02_train "
                f"notebook, or choose another run.", "warning"))
            return
        self.load_model(choose(models, self._wanted_model))

    @_reporting
    def load_model(self, model: str) -> None:
        """Show one model of the current run: list its prediction files and load the requested split."""
        assert self.run_dir is not None, "load a run first"
        available = available_splits(self.run_dir, model, self.seed)
        self.model = model
        with self._quietly():
            self.model_dropdown.value = model
            self.split_dropdown.options = [(split_title(s), s) for s in available]
            self.split_dropdown.value = None
        split = default_split(available, self._wanted_split)
        if split is None:
            self._show_nothing(_message(
                f"Model '{html.escape(model)}' of run '{html.escape(self.run_dir.name)}' has no predictions file "
                f"({html.escape(self._model_folder(model))}/predictions_{self._wanted_split}.npz): it was not "
                f"evaluated. Re-run its evaluation (<code>fer-study run</code> or 02_train).", "warning"))
            return
        self.load_split(split)
        if split != self._wanted_split:
            self.message.value = _message(
                f"Model '{html.escape(model)}' has no predictions_{self._wanted_split}.npz; showing the "
                f"{split_title(split)} split instead.", "warning")

    @_reporting
    def load_split(self, split: str) -> None:
        """Load ``predictions_<split>.npz`` of the current model and draw its confusion matrix."""
        assert self.run_dir is not None and self.model is not None, "load a run and a model first"
        path = predictions_path(self.run_dir, self.model, split, self.seed)
        if not path.is_file():
            self._show_nothing(_message(f"No predictions file {html.escape(str(path))}.", "warning"))
            return
        predictions = SplitPredictions.load(path, split)
        self.split = split
        with self._quietly():
            self.split_dropdown.value = split
        self.predictions = predictions
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
        assert self.predictions is not None and self.run_dir is not None
        seed = f" (seed {self.seed})" if self.seed is not None else ""
        text = (f"<b>{html.escape(str(self.model))}</b>{seed} on <b>{split_title(str(self.split))}</b> of run "
                f"<code>{html.escape(self.run_dir.name)}</code>: {len(self.predictions)} images, accuracy "
                f"{self.predictions.accuracy:.3f}. Rows: true class; columns: predicted class.")
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
        counts = self.counts
        if counts is None:
            return
        intensities = cell_intensities(counts, self.mode)
        for true_class, row in enumerate(self.cell_buttons):
            for predicted_class, button in enumerate(row):
                button.description = cell_text(counts, true_class, predicted_class, self.mode)
                background, foreground = cell_colours(intensities[true_class, predicted_class])
                button.style.button_color = background
                button.style.text_color = foreground
                button.tooltip = cell_tooltip(counts, true_class, predicted_class)
                if counts[true_class, predicted_class] == 0:
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
        self.predictions = None
        self.message.value = notice
        self.summary.value = ""
        self.matrix.layout.display = "none"
        self._clear_images("")

    def _clear_images(self, notice: str) -> None:
        self.shown = None
        self.cell_info.value = notice
        self.page_label.value = ""
        self.prev_button.disabled = self.next_button.disabled = True
        self.image_grid.children = ()

    @_reporting
    def select_cell(self, true_class: int, predicted_class: int) -> None:
        """Select the cell (true, predicted): sync the dropdowns and buttons, and show its first page of images."""
        true_class = check_class(true_class, "true_class")
        predicted_class = check_class(predicted_class, "predicted_class")
        self.selected = (true_class, predicted_class)
        with self._quietly():
            self.true_dropdown.value = true_class
            self.predicted_dropdown.value = predicted_class
        self._highlight()
        if self.predictions is None:
            return
        self.set_page(0)

    @_reporting
    def set_page(self, page_number: int) -> None:
        """Show page ``page_number`` (0-based) of the selected cell's images."""
        if self.selected is None or self.predictions is None:
            return
        true_class, predicted_class = self.selected
        shown = self.shown = cell_page(self.predictions, true_class, predicted_class, page_number, self.page_size)
        n = len(shown.indices)
        title = split_title(str(self.split))
        where = f"true <b>{EMOTIONS[true_class]}</b>, predicted <b>{EMOTIONS[predicted_class]}</b> ({title})"
        self.prev_button.disabled = not shown.has_previous
        self.next_button.disabled = not shown.has_next
        self.page_label.value = shown.label
        if n == 0:
            self.cell_info.value = _message(
                f"No images in this cell: no {title} image of true class "
                f"'{EMOTIONS[true_class]}' was predicted as '{EMOTIONS[predicted_class]}'.")
            self.image_grid.children = ()
            return
        self.cell_info.value = (f"{where}: {n} image{'s' if n != 1 else ''}; captions: id and top-3 predicted "
                                f"probabilities (true class in bold).")
        try:
            images = self._images(shown.page_indices)
        except Exception as error:  # data moved or changed since the run: say so, keep the ids
            self.cell_info.value += _message(f"Cannot show the images: {html.escape(str(error))}", "error")
            self.image_grid.children = ()
            return
        items = []
        for image, row in zip(images, shown.page_indices):
            picture = widgets.Image(value=png_bytes(image, size=self.image_size), format="png",
                                    width=self.image_size, height=self.image_size).add_class("fer-image")
            caption = widgets.HTML(caption_html(str(self.predictions.ids[row]),
                                                top_k(self.predictions.probabilities[row], 3), true_class))
            items.append(widgets.VBox([picture, caption], layout=widgets.Layout(align_items="flex-start"))
                         .add_class("fer-image-item"))
        self.image_grid.children = tuple(items)

    def _images(self, rows: np.ndarray) -> np.ndarray:
        """Pixels of the given prediction rows, from the run's reloaded data set, matched by id (and label)."""
        assert self.run_dir is not None and self.predictions is not None
        dataset, _ = load_run_dataset(self.run_dir)
        data_split: Split = dataset.split(str(self.split).removesuffix("_tta"))
        key = (str(self.run_dir), self.seed, str(self.model), str(self.split))
        if key not in self._positions:  # align the whole split once: paging is then only indexing
            self._positions[key] = split_positions(self.predictions, data_split)
        return data_split.images[self._positions[key][rows]]

    # ---- callbacks ---------------------------------------------------------------------------------------------------

    def _on_cell_click(self, true_class: int, predicted_class: int, _button: widgets.Button) -> None:
        self.select_cell(true_class, predicted_class)

    def _on_run_change(self, change: Mapping[str, Any]) -> None:
        if not self._quiet and change["new"]:
            self.load_run(change["new"])

    def _on_seed_change(self, change: Mapping[str, Any]) -> None:
        if not self._quiet and change["new"] is not None:
            self._wanted_seed = change["new"]
            self.load_seed(change["new"])

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
    from fer_lib.app.params import PAPER_AUGMENTATION, AugmentConfig

    if augmentation is None:
        return PAPER_AUGMENTATION
    return augmentation if isinstance(augmentation, AugmentConfig) else AugmentConfig.from_mapping(augmentation)


class SampleBrowser(_Quiet, widgets.VBox):
    """Browse a data set by split and class, with random augmentations of the chosen image.

    ``dataset_or_run_dir``: a :class:`fer_lib.core.data.FerDataset`, or a run folder (its data set is reloaded from its
    params.yaml and its augmentation params are used). ``augmentation`` overrides the augmentation (default: the
    run's, else :data:`fer_lib.app.params.PAPER_AUGMENTATION`). Moving the seed slider draws new augmentations.
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
        from fer_lib.core.augment import augment_preview

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
