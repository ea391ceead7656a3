"""Notebook widgets: a confusion cell's images (model error or FER2013 label ambiguity?) and augmentations by eye;
views only (:mod:`fer_lib.analysis.confusion` decides what they show), so tests drive them without a browser."""

from __future__ import annotations

import contextlib
import functools
import html
import io
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import ipywidgets as widgets
import numpy as np
from PIL import Image

from fer_lib.analysis.confusion import (DEFAULT_PAGE_SIZE, MODES, CellPage, SplitPredictions, available_splits,
                                        cell_colours, cell_intensities, cell_page, cell_text, cell_tooltip,
                                        check_class, choose, default_split, load_run_dataset, page, split_positions,
                                        split_title)
from fer_lib.analysis.report import notice_html
from fer_lib.analysis.results import RunResults
from fer_lib.core import records
from fer_lib.core.config import PAPER_AUGMENTATION, AugmentConfig
from fer_lib.core.data import SPLITS, FerDataset, Split
from fer_lib.core.evaluate import top_k
from fer_lib.core.labels import EMOTIONS, NUM_CLASSES


def png_bytes(image: np.ndarray, *, size: int | None = None) -> bytes:
    """PNG bytes (what ``ipywidgets.Image`` needs) of a uint8 or 0-1 grayscale image, scaled to ``size`` sharply."""
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
        lines.append(f"<b>{text}</b>" if true_class is not None and name == EMOTIONS[true_class] else text)
    return ('<div class="fer-caption" style="font-size:11px;line-height:1.25;overflow-wrap:anywhere">'
            + "<br>".join(lines) + "</div>")


F = TypeVar("F", bound=Callable[..., Any])


def _reporting(method: F) -> F:
    """Show an unexpected error of a widget callback in the widget itself, not only in JupyterLab's hidden log."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except Exception as error:
            self.message.value = notice_html(f"Error: {html.escape(type(error).__name__)}: "
                                             f"{html.escape(str(error))}", "error")
            raise

    return wrapper  # type: ignore[return-value]


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

    def _watch(self, control: widgets.Widget, action: Callable[[Any], Any]) -> None:
        control.observe(lambda change: None if self._quiet or change["new"] is None else action(change["new"]),
                        names="value")


def _dropdown(description: str, css: str, width: str = "260px") -> widgets.Dropdown:
    return widgets.Dropdown(description=description, layout=widgets.Layout(width="auto", min_width=width)
                            ).add_class(css)


class ConfusionInspector(_Quiet, widgets.VBox):
    """A run's confusion matrix as buttons; clicking a cell shows its images with their top-3 predictions (first:
    ``model``, ``split``, ``seed``, else the first model, test, the first seed). Nothing is selected at first, so
    showing the widget never loads the data set; the first selection does (then cached)."""

    def __init__(self, results: RunResults, *, model: str | None = None, split: str = "test",
                 seed: int | None = None, page_size: int = DEFAULT_PAGE_SIZE, image_size: int = 96) -> None:
        super().__init__()
        if split not in records.PREDICTION_SPLITS:
            raise ValueError(f"split must be one of {', '.join(records.PREDICTION_SPLITS)}, got {split!r}")
        page((), 0, page_size)  # validates page_size
        self.results, self.page_size, self.image_size = results, int(page_size), int(image_size)
        self._wanted = {"model": model, "split": split}
        self._positions: dict[tuple[int, str, str], np.ndarray] = {}  # prediction rows -> rows of the data split
        self.seed: int | None = None
        self.model: str | None = None
        self.split: str | None = None
        self.predictions: SplitPredictions | None = None
        self.selected: tuple[int, int] | None = None
        self.shown: CellPage | None = None

        self.seed_dropdown = _dropdown("seed", "fer-seed-select", "160px")
        self.seed_dropdown.options = [(str(s), s) for s in results.seeds]
        self.seed_dropdown.layout.display = None if len(results.seeds) > 1 else "none"
        self.model_dropdown = _dropdown("model", "fer-model-select")
        self.split_dropdown = _dropdown("split", "fer-split-select")
        self.mode_toggle = widgets.ToggleButtons(options=list(MODES), value="counts", style={"button_width": "140px"},
                                                 tooltips=["number of images", "share of the true class (row)"]
                                                 ).add_class("fer-cm-mode")
        self.message = widgets.HTML().add_class("fer-message")
        self.summary = widgets.HTML().add_class("fer-summary")
        self.cell_buttons = [[widgets.Button(description="", layout=widgets.Layout(width="auto", height="30px"))
                              .add_class("fer-cm-cell").add_class(f"fer-cm-cell-{t}-{p}")
                              for p in range(NUM_CLASSES)] for t in range(NUM_CLASSES)]
        cells: list[widgets.Widget] = [widgets.HTML("<i>true \u2193 / predicted \u2192</i>")]
        cells += [widgets.HTML(f'<div style="text-align:center;font-weight:bold">{name}</div>') for name in EMOTIONS]
        for true_class, row in enumerate(self.cell_buttons):
            cells.append(widgets.HTML(f'<div style="font-weight:bold;text-align:right;padding-right:6px">'
                                      f'{EMOTIONS[true_class]}</div>'))
            for predicted_class, button in enumerate(row):
                button.on_click(functools.partial(lambda t, p, _: self.select_cell(t, p), true_class, predicted_class))
                cells.append(button)
        self.matrix = widgets.GridBox(cells, layout=widgets.Layout(
            grid_template_columns="150px repeat(7, 66px)", grid_gap="2px", width="fit-content"))
        self.cell_info = widgets.HTML().add_class("fer-cell-info")
        self.prev_button = widgets.Button(description="Prev", icon="arrow-left", disabled=True,
                                          layout=widgets.Layout(width="90px")).add_class("fer-prev")
        self.next_button = widgets.Button(description="Next", icon="arrow-right", disabled=True,
                                          layout=widgets.Layout(width="90px")).add_class("fer-next")
        self.page_label = widgets.Label("").add_class("fer-page-label")
        self.prev_button.on_click(lambda _: self.set_page(self.shown.page_number - 1))
        self.next_button.on_click(lambda _: self.set_page(self.shown.page_number + 1))
        self.image_grid = widgets.GridBox([], layout=widgets.Layout(
            grid_template_columns=f"repeat(auto-fill, minmax({self.image_size + 16}px, 1fr))", grid_gap="6px",
            width="100%")).add_class("fer-image-grid")
        self.children = (
            widgets.HBox([self.seed_dropdown, self.model_dropdown, self.split_dropdown],
                         layout=widgets.Layout(flex_flow="row wrap")),
            widgets.HBox([widgets.Label("cells show:"), self.mode_toggle], layout=widgets.Layout(align_items="center")),
            self.message, self.summary, self.matrix.add_class("fer-confusion-matrix"), self.cell_info,
            widgets.HBox([self.prev_button, self.page_label, self.next_button],
                         layout=widgets.Layout(align_items="center")),
            self.image_grid)
        self.add_class("fer-confusion-inspector")
        self._watch(self.seed_dropdown, self.load_seed)
        self._watch(self.model_dropdown, lambda model: self.load_model(model, wanted=True))
        self._watch(self.split_dropdown, lambda split: self.load_split(split, wanted=True))
        self._watch(self.mode_toggle, lambda _: self._draw_matrix())
        self.load_seed(choose(results.seeds, seed))

    @_reporting
    def load_seed(self, seed: int) -> None:
        """Show one seed of the run: list its models and show the wanted (else the first) one."""
        if seed not in self.results.by_seed:
            raise ValueError(f"seed must be one of {self.results.seeds} (the run's seeds), got {seed!r}")
        self.seed = seed
        with self._quietly():
            self.seed_dropdown.value = seed
            self.model_dropdown.options = self.results.models
        self.load_model(choose(self.results.models, self._wanted["model"]))

    @_reporting
    def load_model(self, model: str, *, wanted: bool = False) -> None:
        """Show one model of the current seed: list its prediction files and load the wanted split."""
        self._wanted["model"] = model if wanted else self._wanted["model"]
        available = available_splits(self.results.by_seed[self.seed], model)
        self.model = model
        with self._quietly():
            self.model_dropdown.value = model
            self.split_dropdown.options = [(split_title(s), s) for s in available]
        split = default_split(available, self._wanted["split"])
        if split is None:
            return self._show_nothing(notice_html(
                f"Model '{html.escape(model)}' has no predictions file (predictions_{self._wanted['split']}.npz): it "
                f"was not evaluated. Re-run its evaluation (<code>fer-study run</code> or 02_train).", "warning"))
        self.load_split(split)
        if split != self._wanted["split"]:
            self.message.value = notice_html(f"Model '{html.escape(model)}' has no predictions_"
                                             f"{self._wanted['split']}.npz; showing {split_title(split)}.", "warning")

    @_reporting
    def load_split(self, split: str, *, wanted: bool = False) -> None:
        """Draw the current model's matrix on ``split``; a selected cell stays selected, to compare it across splits."""
        self._wanted["split"] = split if wanted else self._wanted["split"]
        folder = self.results.by_seed[self.seed].model_dir(str(self.model))
        self.predictions, self.split = SplitPredictions.load(folder / records.predictions_file(split), split), split
        with self._quietly():
            self.split_dropdown.value = split
        synthetic = (" <b style='color:#8b0000'>SYNTHETIC DATA</b>: generated faces, not FER2013; these numbers say "
                     "nothing about real facial expression recognition.") if self.results.synthetic else ""
        self.message.value = ""
        self.summary.value = (f"<b>{html.escape(str(self.model))}</b> (seed {self.seed}) on <b>{split_title(split)}"
                              f"</b> of run <code>{html.escape(self.results.run_dir.name)}</code>: "
                              f"{len(self.predictions)} images, accuracy {self.predictions.accuracy:.3f}. Rows: true "
                              f"class; columns: predicted class.{synthetic}")
        self.matrix.layout.display = None
        self._draw_matrix()
        if self.selected is None:
            return self._clear_images(notice_html("Click a cell of the matrix to see its images."))
        self.select_cell(*self.selected)

    def _draw_matrix(self) -> None:
        """Every cell button's label, colour, tooltip and highlight from the counts and the mode."""
        if self.predictions is None:
            return
        counts, mode = self.predictions.counts, str(self.mode_toggle.value)
        intensities = cell_intensities(counts, mode)
        for true_class, row in enumerate(self.cell_buttons):
            for predicted_class, button in enumerate(row):
                button.description = cell_text(counts, true_class, predicted_class, mode)
                button.style.button_color, button.style.text_color = cell_colours(
                    intensities[true_class, predicted_class])
                button.tooltip = cell_tooltip(counts, true_class, predicted_class)
                selected = self.selected == (true_class, predicted_class)
                button.layout.border = "3px solid #ff7f0e" if selected else None
                for css, on in (("fer-cm-empty", counts[true_class, predicted_class] == 0),
                                ("fer-cm-selected", selected)):
                    (button.add_class if on else button.remove_class)(css)

    def _show_nothing(self, notice: str) -> None:
        self.predictions = None
        self.message.value, self.summary.value = notice, ""
        self.matrix.layout.display = "none"
        self._clear_images("")

    def _clear_images(self, notice: str) -> None:
        self.shown = None
        self.cell_info.value, self.page_label.value = notice, ""
        self.prev_button.disabled = self.next_button.disabled = True
        self.image_grid.children = ()

    @_reporting
    def select_cell(self, true_class: int, predicted_class: int) -> None:
        """Select the cell (true, predicted) and show the first page of its images."""
        self.selected = (check_class(true_class, "true_class"), check_class(predicted_class, "predicted_class"))
        self._draw_matrix()
        self.set_page(0)

    @_reporting
    def set_page(self, page_number: int) -> None:
        """Show page ``page_number`` (0-based) of the selected cell's images."""
        if self.selected is None or self.predictions is None:
            return
        true_class, predicted_class = self.selected
        shown = self.shown = cell_page(self.predictions, true_class, predicted_class, page_number, self.page_size)
        self.prev_button.disabled, self.next_button.disabled = not shown.has_previous, not shown.has_next
        self.page_label.value = shown.label
        title, n = split_title(str(self.split)), len(shown.indices)
        self.image_grid.children = ()
        if n == 0:
            self.cell_info.value = notice_html(f"No images in this cell: no {title} image of true class "
                                               f"'{EMOTIONS[true_class]}' was predicted as "
                                               f"'{EMOTIONS[predicted_class]}'.")
            return
        self.cell_info.value = (f"true <b>{EMOTIONS[true_class]}</b>, predicted <b>{EMOTIONS[predicted_class]}</b> "
                                f"({title}): {n} image{'s' if n != 1 else ''}; captions: id and top-3 predicted "
                                f"probabilities (true class in bold).")
        try:
            images = self._images(shown.page_indices)
        except Exception as error:  # data moved or changed since the run: say so, keep the ids
            self.cell_info.value += notice_html(f"Cannot show the images: {html.escape(str(error))}", "error")
            return
        self.image_grid.children = tuple(widgets.VBox([
            widgets.Image(value=png_bytes(image, size=self.image_size), format="png", width=self.image_size,
                          height=self.image_size).add_class("fer-image"),
            widgets.HTML(caption_html(str(self.predictions.ids[row]), top_k(self.predictions.probabilities[row], 3),
                                      true_class))], layout=widgets.Layout(align_items="flex-start")
        ).add_class("fer-image-item") for image, row in zip(images, shown.page_indices))

    def _images(self, rows: np.ndarray) -> np.ndarray:
        """Pixels of the given prediction rows, from the run's reloaded data set, matched by id (and label)."""
        dataset, _ = load_run_dataset(self.results)
        data_split: Split = dataset.split(str(self.split).split("_")[0])
        key = (int(self.seed), str(self.model), str(self.split))
        if key not in self._positions:  # align the whole split once: paging is then only indexing
            self._positions[key] = split_positions(self.predictions, data_split)
        return data_split.images[self._positions[key][rows]]


class SampleBrowser(_Quiet, widgets.VBox):
    """Browse a data set (or a run's) by split and class, with random augmentations of the chosen image: by
    ``augmentation``, else the run's, else :data:`fer_lib.core.config.PAPER_AUGMENTATION`."""

    def __init__(self, data: FerDataset | RunResults, *, augmentation: AugmentConfig | None = None, variants: int = 8,
                 image_size: int = 144, preview_size: int = 96, split: str = "train") -> None:
        super().__init__()
        self.add_class("fer-sample-browser")
        self.dataset = data if isinstance(data, FerDataset) else load_run_dataset(data)[0]
        if augmentation is None and isinstance(data, RunResults):
            augmentation = AugmentConfig.from_mapping(data.params.get("augmentation"))
        self.augmentation = augmentation or PAPER_AUGMENTATION
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        if isinstance(variants, bool) or not isinstance(variants, int) or variants < 1:
            raise ValueError(f"variants must be a positive integer, got {variants!r}")
        self.variants, self.image_size, self.preview_size = variants, int(image_size), int(preview_size)
        self.positions: np.ndarray = np.array([], dtype=np.int64)  # positions in the split of the chosen class

        self.split_dropdown = widgets.Dropdown(description="split", options=list(SPLITS), value=split)
        self.class_dropdown = widgets.Dropdown(description="class")
        self.index_slider = widgets.IntSlider(description="index", min=0, max=0, value=0, continuous_update=False)
        self.seed_slider = widgets.IntSlider(description="aug. seed", min=0, max=99, value=0, continuous_update=False,
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
        self._watch(self.split_dropdown, lambda _: self._update_classes())
        self._watch(self.class_dropdown, lambda _: self._update_positions())
        self._watch(self.index_slider, lambda _: self._show_image())
        self._watch(self.seed_slider, lambda _: self._draw_preview())
        self._update_classes()

    @property
    def current_split(self) -> Split:
        return self.dataset.split(str(self.split_dropdown.value))

    @property
    def current_position(self) -> int | None:
        """Position in the split of the image shown (None when the chosen class has no image in the split)."""
        return int(self.positions[self.index_slider.value]) if len(self.positions) else None

    @property
    def current_id(self) -> str | None:
        position = self.current_position
        return None if position is None else str(self.current_split.ids[position])

    @property
    def preview_images(self) -> list[bytes]:
        """PNG bytes of the augmentation previews currently shown."""
        return [bytes(child.value) for child in self.preview.children]

    def _update_classes(self) -> None:
        counts = np.bincount(self.current_split.labels, minlength=NUM_CLASSES)
        previous = self.class_dropdown.value
        with self._quietly():
            self.class_dropdown.options = [(f"{name} ({int(counts[i])})", i) for i, name in enumerate(EMOTIONS)]
            self.class_dropdown.value = previous if previous is not None else int(np.argmax(counts > 0))
        self._update_positions()

    def _update_positions(self) -> None:
        self.positions = np.flatnonzero(self.current_split.labels == self.class_dropdown.value)
        with self._quietly():
            self.index_slider.max = max(0, len(self.positions) - 1)
            self.index_slider.value = 0
            self.index_slider.disabled = len(self.positions) <= 1
        self._show_image()

    @_reporting
    def _show_image(self) -> None:
        position = self.current_position
        name = EMOTIONS[int(self.class_dropdown.value)]
        if position is None:
            self.message.value = notice_html(f"The {self.split_dropdown.value} split has no '{name}' image.", "warning")
            self.image.value, self.info.value, self.preview.children = b"", "", ()
            return
        split = self.current_split
        self.message.value = ""
        self.image.value = png_bytes(split.images[position], size=self.image_size)
        notice = (" <b style='color:#8b0000'>SYNTHETIC DATA</b> (generated faces, not FER2013)"
                  if self.dataset.is_synthetic else "")
        self.info.value = (f"<b>{html.escape(name)}</b>, {self.split_dropdown.value} split: index "
                           f"{self.index_slider.value} of 0..{len(self.positions) - 1}<br>id "
                           f"<code>{html.escape(str(split.ids[position]))}</code><br>"
                           f"<small>{html.escape(self.dataset.source)}</small>{notice}")
        self._draw_preview()

    @_reporting
    def _draw_preview(self) -> None:
        """Draw ``variants`` random augmentations of the current image with the slider's seed."""
        from fer_lib.core.augment import augment_preview  # Keras: only once an augmentation is drawn

        position = self.current_position
        if position is None:
            return
        augmented = augment_preview(self.current_split.images[position][None], self.augmentation,
                                    variants=self.variants, seed=int(self.seed_slider.value))[0]
        self.preview.children = tuple(
            widgets.Image(value=png_bytes(variant, size=self.preview_size), format="png", width=self.preview_size,
                          height=self.preview_size).add_class("fer-augment-image")
            for variant in augmented)
        settings = ", ".join(f"{key} {value}" for key, value in self.augmentation.as_dict().items())
        identity = " (identity: this augmentation changes nothing)" if self.augmentation.is_identity else ""
        self.preview_info.value = (f"{self.variants} random augmentations (as in training), seed "
                                   f"{self.seed_slider.value}: {html.escape(settings)}{identity}")
