"""04_predict's upload view: choose a run and a model, upload photos, see them annotated with a chart per face.

A thin shell over :func:`fer_lib.app.predict.predict_photos`, as ``fer-study predict`` is.
"""

from __future__ import annotations

import html
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ipywidgets as widgets

from fer_lib.analysis.report import notice_html
from fer_lib.app import predict
from fer_lib.core import records

DISPLAY_WIDTH = 560  # pixels: annotated photos are shown at most this wide (the files keep their full size)

__all__ = ["PredictView", "display_jpeg", "uploaded_files"]


def uploaded_files(value: Any) -> list[tuple[str, bytes]]:
    """``(name, bytes)`` of each file of an ipywidgets 8 ``FileUpload.value`` (a tuple of dicts)."""

    def field(item: Any, key: str) -> Any:
        return item.get(key) if isinstance(item, Mapping) else getattr(item, key, None)

    return [(str(field(item, "name") or "upload"), bytes(field(item, "content") or b"")) for item in value or ()]


def display_jpeg(path: Path, width: int = DISPLAY_WIDTH) -> bytes:
    """The annotated photo at ``path``, at most ``width`` pixels wide, as JPEG bytes (small enough for the page)."""
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        if image.width > width:
            image = image.resize((width, max(1, round(image.height * width / image.width))), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


class PredictView(widgets.VBox):
    """Run and model dropdowns, a photo upload, and per photo its annotated copy and one chart per face."""

    def __init__(self, run_dir: str | Path | None = None, *, model: str = predict.ENSEMBLE,
                 outputs_dir: str | Path | None = None) -> None:
        super().__init__()
        self.add_class("fer-predict-view")
        self.outputs_dir = Path(outputs_dir) if outputs_dir is not None else (
            Path(run_dir).resolve().parent if run_dir is not None else records.default_outputs_dir())
        self._predictor: predict.Predictor | None = None
        self.predictions: predict.Predictions | None = None  # of the last upload

        found = predict.predictable_runs(self.outputs_dir)
        chosen = Path(run_dir).resolve() if run_dir is not None else (found[0].resolve() if found else None)
        options = [(p.name, str(p.resolve())) for p in found]
        if chosen is not None and str(chosen) not in dict(options).values():
            options.insert(0, (chosen.name, str(chosen)))
        self.run_dropdown = widgets.Dropdown(options=options, value=str(chosen) if chosen else None,
                                             description="run", layout=widgets.Layout(width="420px"))
        self.model_dropdown = widgets.Dropdown(description="model", layout=widgets.Layout(width="260px"))
        self._wanted_model = model
        self.upload = widgets.FileUpload(accept="image/*", multiple=True, description="Upload photos",
                                         layout=widgets.Layout(width="200px")).add_class("fer-predict-upload")
        self.message = widgets.HTML().add_class("fer-message")
        self.results = widgets.VBox().add_class("fer-predict-results")
        self.children = (widgets.HBox([self.run_dropdown, self.model_dropdown],
                                      layout=widgets.Layout(flex_flow="row wrap")),
                         self.upload, self.message, self.results)
        self._update_models()
        self.run_dropdown.observe(lambda _change: self._guard(self._update_models), names="value")
        self.model_dropdown.observe(lambda _change: setattr(self, "_predictor", None), names="value")
        self.upload.observe(self._on_upload, names="value")
        if chosen is None:
            self._say(f"No run folder with a trained model under {html.escape(str(self.outputs_dir))}: train one "
                      f"(<code>fer-study run --params params/smoke.yaml</code> or 02_train.ipynb), then run this "
                      f"cell again.", "warning")
            self.upload.disabled = True
        else:
            self._say("Upload one or more photos: each face found is cropped as FER2013 shows faces (grayscale, "
                      "48x48) and classified.")

    @property
    def run_dir(self) -> Path | None:
        return Path(self.run_dropdown.value) if self.run_dropdown.value else None

    @property
    def model(self) -> str | None:
        return self.model_dropdown.value

    def predictor(self) -> predict.Predictor:
        """The chosen run's model(s), loaded once per (run, model) choice."""
        if self.run_dir is None or self.model is None:
            raise predict.PredictError("choose a run with a trained model first")
        if self._predictor is None or (self._predictor.run_dir, self._predictor.model) != (self.run_dir, self.model):
            self._predictor = predict.Predictor(self.run_dir, self.model)
        return self._predictor

    def predict_uploads(self, files: Sequence[tuple[str, bytes]]) -> predict.Predictions | None:
        """Predict uploaded ``(name, bytes)`` files and show them; returns the predictions (None without files)."""
        if not files:
            return None
        self._say(f"Predicting {len(files)} photo{'s' if len(files) > 1 else ''} ...")
        predictor = self.predictor()
        self.predictions = predict.predict_photos(predictor.run_dir, list(files), predictor=predictor)
        self._show(self.predictions)
        return self.predictions

    def _show(self, predictions: predict.Predictions) -> None:
        notes = [notice_html(f"⚠ {html.escape(w)}", "warning") for w in predictions.warnings]
        notes.append(notice_html(html.escape(f"{self.predictor().description}: {predict.summary_line(predictions)}")))
        self.message.value = "".join(notes)
        blocks = []
        for photo in predictions.photos:
            if photo.status == "error":
                blocks.append(widgets.VBox([widgets.HTML(notice_html(html.escape(str(photo.error)), "error"))])
                              .add_class("fer-predict-error"))
                continue
            parts: list[widgets.Widget] = [widgets.HTML(f"<b>{html.escape(photo.source)}</b>: "
                                                        f"{html.escape(predict.photo_text(photo))}")]
            if photo.annotated is not None:
                parts.append(widgets.Image(value=display_jpeg(photo.annotated), format="jpeg",
                                           layout=widgets.Layout(width="auto", max_width=f"{DISPLAY_WIDTH}px"))
                             .add_class("fer-predict-photo"))
            charts = [widgets.Image(value=predict.figure_png(predict.probability_chart(
                face, title=f"face {predict.face_label(i, face)}")), format="png")
                .add_class("fer-predict-chart") for i, face in enumerate(photo.faces, start=1)]
            if charts:
                parts.append(widgets.HBox(charts, layout=widgets.Layout(flex_flow="row wrap")))
            blocks.append(widgets.VBox(parts).add_class("fer-predict-result"))
        self.results.children = tuple(blocks)

    def _say(self, text: str, kind: str = "info") -> None:
        self.message.value = notice_html(text, kind)

    def _guard(self, action: Any, *args: Any) -> Any:
        """Run an action from the page; show its error in the view instead of losing it in the kernel's log."""
        try:
            return action(*args)
        except predict.PredictError as error:
            self._say(html.escape(str(error)), "error")
        except Exception as error:  # noqa: BLE001 - the page must say what went wrong
            self._say(f"Error: {html.escape(type(error).__name__)}: {html.escape(str(error))}", "error")

    def _update_models(self) -> None:
        self._predictor = None
        run_dir = self.run_dir
        trained = records.trained_model_files(run_dir) if run_dir is not None else {}
        names = list(trained) + ([predict.ENSEMBLE] if len(trained) > 1 else [])
        wanted = self._wanted_model if self._wanted_model in names else (names[-1] if names else None)
        self.model_dropdown.options = names
        self.model_dropdown.value = wanted
        if run_dir is not None and not trained:
            self._say(f"Run {html.escape(run_dir.name)} has no trained model.", "warning")

    def _on_upload(self, change: Mapping[str, Any]) -> None:
        self._guard(self.predict_uploads, uploaded_files(change.get("new")))  # nothing when the value is emptied
        self.upload.value = ()  # the same photo can be uploaded again
