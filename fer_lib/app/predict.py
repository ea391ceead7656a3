"""Predict the expressions of the faces in new photos with a run's trained model(s) (``fer-study predict``, 04_predict).

One plain function per step (the README's "Predict on new photos" says why each is so); Keras, OpenCV and matplotlib
are imported inside them, so ``fer-study --help`` stays fast. A mistake in what was asked is a :class:`PredictError`;
an unreadable file is named and skipped (:attr:`PhotoResult.error`); a photo without a face is a result, not an error.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import io
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from fer_lib.app import runs
from fer_lib.app.errors import UserError
from fer_lib.core import records
from fer_lib.core.evaluate import batch_holding, ensemble_probabilities, predict_proba, top_k
from fer_lib.core.labels import EMOTIONS, IMAGE_SIZE, NUM_CLASSES

if TYPE_CHECKING:  # types only: importing this module starts no backend and no OpenCV
    from matplotlib.figure import Figure

ENSEMBLE = "ensemble"
PREDICTIONS_DIR = "predictions"  # <run_dir>/predictions/<YYYYmmdd-HHMMSS>-<model>/ unless --out is given
PREDICTIONS_FILE = "predictions.json"
CASCADE_FILE = "haarcascade_frontalface_default.xml"
# Photos are downscaled to at most this many pixels per side before detection. On FER2013 test faces pasted on
# scikit-image's 1600x1200 sample photos, 1024 px found 62% of the faces with 0.72 false faces per photo, 640 px 55%
# with 0.03 (FER2013's tight crops are harder for the cascade than faces in photos, hence the low share found).
DETECT_MAX_SIDE = 640
SCALE_FACTOR = 1.1  # detectMultiScale: the step between the sizes searched
MIN_NEIGHBORS = 5  # ... how many overlapping detections make a face (higher: fewer false faces, more missed)
MIN_FACE = 24  # ... smallest face, in pixels of the (downscaled) detection image: the cascade's own window
DETECT_BORDER = 0.1  # the detection image is padded by this share (faces cut by the edge; +0.08 false faces/photo)
DEFAULT_MARGIN = 0.02  # per side, of the detected box: the cascade finds FER2013's faces in 96% of their frame
PHOTO_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".pgm")

# One colour per emotion (RGB), for the boxes of the annotated photos and the bars of the charts.
EMOTION_COLORS: dict[str, tuple[int, int, int]] = {
    "angry": (214, 39, 40), "disgust": (140, 86, 75), "fear": (148, 103, 189), "happy": (44, 160, 44),
    "sad": (31, 119, 180), "surprise": (255, 127, 14), "neutral": (127, 127, 127),
}


class Box(NamedTuple):
    """A rectangle in pixels of the (upright) photo."""

    x: int
    y: int
    width: int
    height: int


class PredictError(UserError):
    """A mistake in what was asked: not a run folder, no trained model, an unknown model, a missing path."""


class PhotoError(ValueError):
    """A file that cannot be read as an image; the message names it."""


@dataclasses.dataclass
class Face:
    """One face of a photo: where it is and what the model(s) say (``predictions.json`` holds it as it is)."""

    box: Box  # the face's part inside the photo
    probabilities: np.ndarray  # (7,) in FER2013's label order, summing to 1
    per_model: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # each model's (7,) (seed average)
    crop: Box | None = None  # the square that was cropped (may extend past the photo: padded)
    at_border: bool = False  # the detected face is cut by the photo's edge
    emotion: str = dataclasses.field(init=False)  # the most probable class ...
    probability: float = dataclasses.field(init=False)  # ... its probability ...
    top3: list[tuple[str, float]] = dataclasses.field(init=False)  # ... and the three most probable

    def __post_init__(self) -> None:
        self.top3 = top_k(self.probabilities, 3)
        self.emotion, self.probability = self.top3[0]


@dataclasses.dataclass
class PhotoResult:
    """One photo: its faces (possibly none), its annotated copy, or why it was skipped."""

    source: str  # the path as given (or found in a folder), or an uploaded file's name
    faces: list[Face] = dataclasses.field(default_factory=list)
    size: tuple[int, int] | None = None  # width, height (upright)
    annotated: Path | None = None
    error: str | None = None

    @property
    def status(self) -> str:
        """``error`` (skipped), ``no_face`` or ``ok``."""
        if self.error is not None:
            return "error"
        return "ok" if self.faces else "no_face"


@dataclasses.dataclass
class Predictions:
    """What :func:`predict_photos` did: the photos, the models used, the warnings and where the files went."""

    run_dir: Path
    model: str
    models: dict[str, list[Path]]  # the best.keras files used, per model (one per seed)
    photos: list[PhotoResult]
    out_dir: Path | None = None
    warnings: list[str] = dataclasses.field(default_factory=list)
    tta: bool = False
    class_names: tuple[str, ...] = EMOTIONS  # the order of every probability list

    @property
    def json_path(self) -> Path | None:
        return None if self.out_dir is None else self.out_dir / PREDICTIONS_FILE

    @property
    def errors(self) -> list[PhotoResult]:
        return [photo for photo in self.photos if photo.status == "error"]

    @property
    def n_faces(self) -> int:
        return sum(len(photo.faces) for photo in self.photos)

    @property
    def exit_code(self) -> int:
        """0 when every photo was read (with or without faces), 1 when a file was skipped."""
        return 1 if self.errors else 0

    def write(self) -> Path:
        """``predictions.json``: this record as it is, with each photo's status, and when it was made."""
        record = dataclasses.asdict(self)
        for photo, entry in zip(self.photos, record["photos"]):
            entry["status"] = photo.status
        return records.write_json(self.json_path, {**record, "created": records.now(), "summary": {
            "photos": len(self.photos), "faces": self.n_faces, "skipped": [p.source for p in self.errors],
            "no_face": [p.source for p in self.photos if p.status == "no_face"]}})


def load_photo(source: str | Path | bytes, name: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A photo (a file, or its bytes named ``name``) upright by its EXIF: RGB and grayscale (as FER2013's) uint8."""
    from PIL import Image, ImageOps

    label = name if name is not None else str(source)
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            image.seek(0)  # the first frame of an animated GIF/WebP
            upright = ImageOps.exif_transpose(image)
            rgb = np.asarray(upright.convert("RGB"), dtype=np.uint8)
            gray = np.asarray(upright.convert("L"), dtype=np.uint8)
    except Exception as error:  # noqa: BLE001 - Pillow raises many kinds (UnidentifiedImageError, OSError, ...)
        reason = str(error).split("\n")[0] or type(error).__name__
        raise PhotoError(f"'{label}' is not a readable image ({type(error).__name__}: {reason})") from None
    if rgb.ndim != 3 or rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise PhotoError(f"'{label}' is an empty image")
    return rgb, gray


def _cascade() -> Any:
    import cv2

    path = Path(cv2.data.haarcascades) / CASCADE_FILE
    cascade = cv2.CascadeClassifier(str(path)) if hasattr(cv2, "CascadeClassifier") else None
    if cascade is None or cascade.empty():
        raise PredictError(f"OpenCV's face detector is missing ({path}): install opencv-python-headless 4.x "
                           f"(OpenCV 5 moved the Haar cascades out of the package): pip install "
                           f"'opencv-python-headless<5'")
    return cascade


def detect_faces(gray: np.ndarray, *, max_side: int = DETECT_MAX_SIDE, scale_factor: float = SCALE_FACTOR,
                 min_neighbors: int = MIN_NEIGHBORS, min_size: int = MIN_FACE,
                 border: float = DETECT_BORDER) -> list[Box]:
    """Face boxes in a grayscale photo's pixels, left to right, found on a downscaled (fewer false faces), equalised
    (dim photos) copy in a grey frame: a face cut by the edge is kept, past the edge, if half of it is inside."""
    import cv2

    gray = np.asarray(gray)
    if gray.ndim != 2:
        raise ValueError(f"detect_faces needs a 2-D grayscale image, got shape {gray.shape}")
    height, width = gray.shape
    scale = min(1.0, max_side / max(height, width))
    small = gray if scale == 1.0 else cv2.resize(gray, (max(1, round(width * scale)), max(1, round(height * scale))),
                                                 interpolation=cv2.INTER_AREA)
    pad = round(border * max(small.shape))
    padded = cv2.copyMakeBorder(cv2.equalizeHist(np.ascontiguousarray(small, dtype=np.uint8)), pad, pad, pad, pad,
                                cv2.BORDER_CONSTANT, value=128)
    found = _cascade().detectMultiScale(padded, scaleFactor=scale_factor, minNeighbors=min_neighbors,
                                        minSize=(min_size, min_size))
    boxes = [Box(round((x - pad) / scale), round((y - pad) / scale), round(w / scale), round(h / scale))
             for x, y, w, h in np.asarray(found, dtype=np.float64).reshape(-1, 4)]
    visible = [clip_box(box, width, height) for box in boxes]
    return sorted(box for box, seen in zip(boxes, visible)  # at least half of the face is in the photo
                  if seen.width * seen.height >= 0.5 * box.width * box.height)


def clip_box(box: Box, width: int, height: int) -> Box:
    """The part of ``box`` inside a ``width`` x ``height`` photo (zero width or height when none is)."""
    x, y, w, h = box
    x0, y0 = min(max(0, x), width), min(max(0, y), height)
    return Box(x0, y0, max(0, min(width, x + w) - x0), max(0, min(height, y + h) - y0))


def crop_box(box: Box, margin: float = DEFAULT_MARGIN) -> Box:
    """The square crop around a face box: its larger side plus ``margin`` of it on each side, centred on the box."""
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    x, y, w, h = box
    if w <= 0 or h <= 0:
        raise ValueError(f"a face box needs a positive width and height, got {box}")
    side = max(1, round(max(w, h) * (1 + 2 * margin)))
    return Box(round(x + w / 2 - side / 2), round(y + h / 2 - side / 2), side, side)


def crop_face(gray: np.ndarray, box: Box, margin: float = DEFAULT_MARGIN, size: int = IMAGE_SIZE) -> np.ndarray:
    """The face in ``box`` framed as FER2013's (square, ``margin``, ``size`` px), edge pixels repeated past the edge."""
    import cv2

    gray = np.asarray(gray, dtype=np.uint8)
    if gray.ndim != 2:
        raise ValueError(f"crop_face needs a 2-D grayscale image, got shape {gray.shape}")
    height, width = gray.shape
    x, y, side, _ = crop_box(box, margin)
    top, left = max(0, -y), max(0, -x)
    bottom, right = max(0, y + side - height), max(0, x + side - width)
    padded = cv2.copyMakeBorder(gray, top, bottom, left, right, cv2.BORDER_REPLICATE)  # edge pixels past the photo
    square = padded[y + top:y + top + side, x + left:x + left + side]
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(square, (size, size), interpolation=interpolation)


def check_run(run_dir: str | Path) -> Path:
    """``run_dir`` as a Path, or :class:`PredictError` when it is not a run folder."""
    path = Path(run_dir).expanduser()
    if not path.exists():
        raise PredictError(f"run folder '{run_dir}' does not exist")
    if not records.is_run_dir(path):
        raise PredictError(f"'{run_dir}' is not a run folder (no {records.PARAMS_FILE} or {records.MANIFEST_FILE})")
    return path


def select_model_files(run_dir: str | Path, model: str = ENSEMBLE) -> dict[str, list[Path]]:
    """The ``best.keras`` files to use: every trained model's (``ensemble``) or one model's, one file per seed."""
    run_dir = check_run(run_dir)
    trained = records.trained_model_files(run_dir)
    if not trained:
        if evaluated := records.run_models(run_dir):  # e.g. a run brought back from a GPU machine without its weights
            raise PredictError(f"run '{run_dir}' has no trained model to predict with: its models "
                               f"({', '.join(sorted(set(evaluated)))}) were evaluated but their "
                               f"{records.BEST_MODEL_FILE} files are not in the run folder; choose a run that has them")
        raise PredictError(f"run '{run_dir}' has no trained model (no {records.BEST_MODEL_FILE} of a finished model): "
                           f"finish it with `fer-study resume {run_dir}` or choose another run")
    if model == ENSEMBLE:
        return trained
    if model not in trained:
        raise PredictError(f"--model {model!r} is not a trained model of run '{run_dir.name}'; choose one of: "
                           f"{', '.join([*trained, ENSEMBLE])}")
    return {model: trained[model]}


def predictable_runs(outputs_dir: str | Path | None = None) -> list[Path]:
    """Every run folder with a saved trained model, newest first."""
    return [run for run in reversed(records.list_runs(outputs_dir)) if records.trained_model_files(run)]


def run_warnings(model_files: Mapping[str, Sequence[Path]]) -> list[str]:
    """What the user must know before trusting the predictions: synthetic training data, collapsed models."""
    warnings: list[str] = []
    synthetic: list[str] = []
    for name, paths in model_files.items():
        for path in paths:
            try:
                metrics = records.read_json(path.parent / records.METRICS_FILE)
            except (OSError, ValueError):
                continue
            seed = f" ({path.parent.parent.parent.name})" if len(paths) > 1 else ""
            if metrics.get("synthetic") and name not in synthetic:
                synthetic.append(name)
            if collapse := (metrics.get("test") or {}).get("collapse_warning"):
                warnings.append(f"{name}{seed} is no better than always answering one class on its test split "
                                f"({collapse}): its predictions mean little")
    if synthetic:
        warnings.insert(0, f"{', '.join(synthetic)} trained on SYNTHETIC cartoon faces, not FER2013: "
                           f"the predictions on real photos mean nothing")
    return warnings


def load_models(model_files: Mapping[str, Sequence[Path]]) -> dict[str, list[Any]]:
    """Load each ``best.keras`` (the inference models fer_lib.core.train saves), keyed like ``model_files``."""
    from fer_lib.app.keras_start import import_keras_quietly
    from fer_lib.app.provenance import BackendUnavailable

    try:
        import_keras_quietly()  # TensorFlow's start-up lines say nothing to the user of `fer-study predict`
    except BackendUnavailable as error:
        raise PredictError(str(error)) from None
    from fer_lib.core.train import load_inference_model

    def load(path: Path) -> Any:
        try:
            return load_inference_model(path)
        except Exception as error:  # noqa: BLE001 - a damaged or foreign file: say which
            raise PredictError(f"cannot load model '{path}': {type(error).__name__}: "
                               f"{str(error).splitlines()[0] if str(error) else ''}") from None

    return {name: [load(path) for path in paths] for name, paths in model_files.items()}


def average_probabilities(per_model: Mapping[str, Sequence[np.ndarray]]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(ensemble, {model: mean over its seeds}) of (n, 7) arrays: every model weighs the same, whatever its seeds."""
    if not per_model:
        raise ValueError("no model probabilities to average")
    means: dict[str, np.ndarray] = {}
    for name, seeds in per_model.items():
        arrays = [np.asarray(a, dtype=np.float64) for a in seeds]
        if not arrays or arrays[0].ndim != 2 or arrays[0].shape[1] != NUM_CLASSES:
            raise ValueError(f"model {name!r}: expected (n, {NUM_CLASSES}) arrays, got "
                             f"{[a.shape for a in arrays] or 'none'}")
        means[name] = ensemble_probabilities(arrays)  # over the model's seeds
    return ensemble_probabilities(list(means.values())), means  # over the models


def classify_faces(faces: np.ndarray, models: Mapping[str, Sequence[Any]], *,
                   tta: bool = False) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """:func:`average_probabilities` of (n, 48, 48[, 1]) uint8 face crops, with ``tta`` of the mirrored ones too."""
    faces = np.asarray(faces, dtype=np.uint8)
    if faces.ndim == 3:
        faces = faces[..., None]
    if faces.ndim != 4 or faces.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 1):
        raise ValueError(f"faces must have shape (n, {IMAGE_SIZE}, {IMAGE_SIZE}[, 1]), got {faces.shape}")
    if len(faces) == 0:
        empty = np.zeros((0, NUM_CLASSES))
        return empty, {name: empty for name in models}
    batch = batch_holding(len(faces))  # one padded batch for a photo's few faces
    per_model = {name: [predict_proba(m, faces, tta=tta, batch_size=batch) for m in seeds]
                 for name, seeds in models.items()}
    return average_probabilities(per_model)


class Predictor:
    """A run's model(s), loaded once, that find and classify the faces of one photo after another."""

    def __init__(self, run_dir: str | Path, model: str = ENSEMBLE, *, tta: bool = False,
                 margin: float = DEFAULT_MARGIN, whole_image: bool = False,
                 min_neighbors: int = MIN_NEIGHBORS) -> None:
        if margin < 0:
            raise PredictError(f"--margin must be >= 0, got {margin}")
        if min_neighbors < 1:
            raise PredictError(f"--min-neighbors must be >= 1, got {min_neighbors}")
        self.min_neighbors = int(min_neighbors)
        self.run_dir = check_run(run_dir)
        self.model_files = select_model_files(self.run_dir, model)
        self.model, self.tta, self.margin, self.whole_image = model, tta, margin, whole_image
        self.warnings = run_warnings(self.model_files)

    @property
    def description(self) -> str:
        """What predicts, in words: 'basic_cnn' or 'ensemble of basic_cnn + resnet50v2', with seeds."""
        parts = [name + (f" ({len(paths)} seeds)" if len(paths) > 1 else "")
                 for name, paths in self.model_files.items()]
        return "ensemble of " + " + ".join(parts) if len(parts) > 1 else parts[0]

    @property
    def label(self) -> str:
        """A short name for folders: the model, or ``ensemble`` when several models are averaged."""
        return ENSEMBLE if len(self.model_files) > 1 else next(iter(self.model_files))

    @functools.cached_property
    def models(self) -> dict[str, list[Any]]:
        return load_models(self.model_files)

    def faces_of(self, gray: np.ndarray) -> list[Face]:
        """Find, crop and classify the faces of one decoded photo (in grayscale, as FER2013 shows them)."""
        height, width = gray.shape
        boxes = ([Box(0, 0, width, height)] if self.whole_image  # already a face crop, e.g. FER2013's own images
                 else detect_faces(gray, min_neighbors=self.min_neighbors))
        if not boxes:
            return []
        margin = 0.0 if self.whole_image else self.margin
        crops = np.stack([crop_face(gray, box, margin) for box in boxes])
        probabilities, per_model = classify_faces(crops, self.models, tta=self.tta)
        visible = [clip_box(box, width, height) for box in boxes]
        return [Face(box=seen, probabilities=probabilities[i], crop=crop_box(box, margin), at_border=seen != box,
                     per_model={name: probs[i] for name, probs in per_model.items()})
                for i, (box, seen) in enumerate(zip(boxes, visible))]

    def predict(self, source: str | Path | bytes, name: str | None = None) -> tuple[PhotoResult, np.ndarray | None]:
        """One photo: its result and its RGB pixels (None when it could not be read; the result says why)."""
        label = name if name is not None else str(source)
        try:
            rgb, gray = load_photo(source, label)
        except PhotoError as error:
            return PhotoResult(source=label, error=str(error)), None
        return PhotoResult(source=label, faces=self.faces_of(gray), size=(rgb.shape[1], rgb.shape[0])), rgb


def face_label(index: int, face: Face) -> str:
    return f"{index}: {face.emotion} {face.probability:.2f}"


def annotate(rgb: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
    """A copy of the photo with each face's box and :func:`face_label` (numbered from 1, as the JSON), in its colour."""
    import cv2

    image = np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8).copy())
    height, width = image.shape[:2]
    thickness = max(2, round(min(height, width) / 300))
    font = cv2.FONT_HERSHEY_SIMPLEX
    for index, face in enumerate(faces, start=1):
        x, y, w, h = face.box
        color = EMOTION_COLORS[face.emotion]
        cv2.rectangle(image, (x, y), (x + w - 1, y + h - 1), color, thickness)
        text = face_label(index, face)
        scale = max(0.45, min(2.5, w / 160))
        text_thickness = max(1, round(scale * 1.5))
        (text_w, text_h), baseline = cv2.getTextSize(text, font, scale, text_thickness)
        pad = max(2, round(text_h * 0.25))
        label_h = text_h + baseline + 2 * pad
        top = y - label_h if y - label_h >= 0 else y  # above the box, or inside it at the photo's top edge
        left = min(max(0, x), max(0, width - text_w - 2 * pad))
        cv2.rectangle(image, (left, top), (left + text_w + 2 * pad, top + label_h), color, cv2.FILLED)
        cv2.putText(image, text, (left + pad, top + pad + text_h), font, scale, (255, 255, 255), text_thickness,
                    cv2.LINE_AA)
    return image


def probability_chart(face: Face, *, title: str | None = None) -> Figure:
    """A horizontal bar chart of one face's seven probabilities (the top one in its colour), built without pyplot."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2, 2.6), layout="constrained")
    ax = fig.add_subplot()
    positions = np.arange(NUM_CLASSES)[::-1]
    top = int(np.argmax(face.probabilities))
    colors = [np.array(EMOTION_COLORS[name]) / 255 if i == top else (0.7, 0.7, 0.7) for i, name in enumerate(EMOTIONS)]
    ax.barh(positions, face.probabilities, color=colors)
    ax.set_yticks(positions, EMOTIONS)
    ax.set_xlim(0, 1)
    ax.set_xlabel("probability")
    for position, value in zip(positions, face.probabilities):
        ax.text(min(value + 0.02, 0.86), position, f"{value:.2f}", va="center", fontsize=8)
    ax.set_title(title or f"{face.emotion} {face.probability:.2f}", fontsize=10)
    return fig


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def annotated_name(source: str, out_dir: Path, taken: set[str]) -> str:
    """``<stem>.png`` for a PNG photo, else ``<stem>.jpg``; ``<stem>-2...`` when two photos share a stem."""
    path = Path(source)
    name = runs.unique_path(out_dir, path.stem or "photo", ".png" if path.suffix.lower() == ".png" else ".jpg",
                            taken=taken).name
    taken.add(name)
    return name


def find_photos(inputs: Sequence[str | Path]) -> tuple[list[Path], list[PhotoResult]]:
    """The files named and the photos of the folders named (by suffix, sorted), and a skipped entry per empty folder."""
    if not inputs:
        raise PredictError("no photo given: name image files and/or folders of them")
    missing = [str(p) for p in inputs if not Path(p).expanduser().exists()]
    if missing:
        raise PredictError(f"no such file or folder: {', '.join(repr(m) for m in missing)}")
    photos: list[Path] = []
    problems: list[PhotoResult] = []
    for given in inputs:
        path = Path(given).expanduser()
        found = (sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES)
                 if path.is_dir() else [path])
        if not found:
            problems.append(PhotoResult(source=str(given), error=f"folder '{given}' holds no photo (files ending "
                                                                  f"in {', '.join(PHOTO_SUFFIXES)})"))
        photos.extend(found)
    return photos, problems


def prepare_out_dir(out: str | Path) -> Path:
    """``--out``: a folder that is created when missing and refused when it already holds predictions."""
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise PredictError(f"--out '{out}' exists and is not a folder")
    if (out / PREDICTIONS_FILE).exists():
        raise PredictError(f"--out '{out}' already holds {PREDICTIONS_FILE}; predictions never overwrite earlier "
                           f"ones: choose another folder")
    out.mkdir(parents=True, exist_ok=True)
    return out


PhotoSource = str | Path | tuple[str, bytes]  # a path, or (name, bytes) of an uploaded file


def predict_photos(run_dir: str | Path, photos: Sequence[PhotoSource], *, model: str = ENSEMBLE,
                   out: str | Path | None = None, margin: float = DEFAULT_MARGIN, tta: bool = False,
                   whole_image: bool = False, min_neighbors: int = MIN_NEIGHBORS, predictor: Predictor | None = None,
                   on_start: Callable[[Path], None] | None = None,
                   on_photo: Callable[[PhotoResult], None] | None = None) -> Predictions:
    """Find, classify and annotate the faces of ``photos`` (paths or ``(name, bytes)`` uploads) into ``out`` (default: a
    new ``<run_dir>/predictions/<timestamp>-<model>/``), written after every check; calls ``on_start``, ``on_photo``."""
    from PIL import Image

    predictor = predictor or Predictor(run_dir, model, tta=tta, margin=margin, whole_image=whole_image,
                                       min_neighbors=min_neighbors)
    paths = [p for p in photos if not isinstance(p, tuple)]
    uploads = [p for p in photos if isinstance(p, tuple)]
    found, problems = ([], []) if uploads and not paths else find_photos(paths)  # none at all: find_photos says so
    out_dir = (prepare_out_dir(out) if out is not None  # else a fresh one, suffixed -2, -3, ... when taken
               else runs.new_run_dir(predictor.label, outputs_dir=predictor.run_dir / PREDICTIONS_DIR))
    if on_start is not None:
        on_start(out_dir)
    report = on_photo or (lambda _result: None)
    results: list[PhotoResult] = list(problems)
    taken: set[str] = set()
    for problem in problems:
        report(problem)
    for label, source in [(str(p), p) for p in found] + uploads:
        result, rgb = predictor.predict(source, label)
        if rgb is not None:
            result.annotated = out_dir / annotated_name(label, out_dir, taken)
            Image.fromarray(annotate(rgb, result.faces)).save(result.annotated, quality=92)  # JPEG's; PNG ignores it
        results.append(result)
        report(result)
    predictions = Predictions(run_dir=predictor.run_dir, model=predictor.model, models=predictor.model_files,
                              photos=results, out_dir=out_dir, warnings=list(predictor.warnings), tta=predictor.tta)
    predictions.write()
    return predictions


def photo_text(result: PhotoResult) -> str:
    """What became of a photo: its faces with top emotion and runner-up, that it has none, or why it was skipped."""
    if result.status == "error":
        return f"skipped: {result.error}"
    if result.status == "no_face":
        return "no face found"
    faces = "; ".join(f"#{i} {face.emotion} {face.probability:.2f} ("
                      + ", ".join(f"{name} {p:.2f}" for name, p in face.top3[1:]) + ")"
                      for i, face in enumerate(result.faces, start=1))
    return f"{len(result.faces)} face{'s' if len(result.faces) > 1 else ''}: {faces}"


def photo_line(result: PhotoResult) -> str:
    """One line per photo for the terminal: its name, then :func:`photo_text`."""
    return f"{result.source}: {photo_text(result)}"


def summary_line(predictions: Predictions) -> str:
    """The closing line: how many photos, faces, photos without a face and skipped files, and where the files are."""
    photos = [p for p in predictions.photos if p.status != "error"]
    no_face = sum(p.status == "no_face" for p in photos)
    skipped = len(predictions.errors)
    text = (f"{len(photos)} photo{'s' if len(photos) != 1 else ''}, {predictions.n_faces} "
            f"face{'s' if predictions.n_faces != 1 else ''}")
    if no_face:
        text += f" ({no_face} photo{'s' if no_face != 1 else ''} without a face)"
    if skipped:
        text += f", {skipped} file{'s' if skipped != 1 else ''} skipped"
    return f"{text}: annotated photos and {PREDICTIONS_FILE} in {predictions.out_dir}"


def sample_photo() -> Path | None:
    """scikit-image's bundled sample photo with a face (``astronaut.png``, inside its wheel), or None without it."""
    try:
        path = Path(str(importlib.resources.files("skimage.data") / "astronaut.png"))
    except (ImportError, TypeError):
        return None
    return path if path.is_file() else None


@dataclasses.dataclass
class NotebookChoice:
    """What 04_predict works on: a run (None when there is none) and the photos, and a sentence saying so."""

    run_dir: Path | None
    photos: list[Path]
    message: str


def notebook_choice(run_dir: str | Path | None, photos: str | Path | Sequence[str | Path] | None, *,
                    outputs_dir: str | Path | None = None) -> NotebookChoice:
    """04_predict's parameters resolved (None: the newest run with a trained model, scikit-image's sample photo); a
    wrong run or photo given is a :class:`PredictError`, no run at all a message."""
    if run_dir is None or str(run_dir) == "":
        run_dir = next(iter(predictable_runs(outputs_dir)), None)
        if run_dir is None:
            where = Path(outputs_dir) if outputs_dir is not None else records.default_outputs_dir()
            return NotebookChoice(None, [], f"No run folder with a trained model under '{where}', so there is nothing "
                                            f"to predict with. Train one (`fer-study run --params params/smoke.yaml`, "
                                            f"or the 02_train notebook) or set run_dir, then run this notebook again.")
    run = check_run(records.project_path(run_dir))
    models = select_model_files(run)
    if photos is None:
        sample = sample_photo()
        if sample is None:
            return NotebookChoice(run, [], "photos = None means scikit-image's sample photo, and scikit-image is not "
                                           "installed: set photos to a photo or a folder of photos.")
        chosen, what = [sample], f"{sample.name} (scikit-image's sample photo)"
    else:
        chosen = [records.project_path(p) for p in ([photos] if isinstance(photos, (str, Path)) else photos)]
        find_photos(chosen)  # a path that does not exist: PredictError now
        what = ", ".join(str(p) for p in chosen)
    return NotebookChoice(run, chosen, f"run: {run.name} (trained: {', '.join(models)})\nphotos: {what}")


def notebook_predict(choice: NotebookChoice, model: str = ENSEMBLE) -> Predictions | None:
    """:func:`predict_photos` for 04_predict's choice (None when there is nothing to predict)."""
    if choice.run_dir is None or not choice.photos:
        return None
    return predict_photos(choice.run_dir, choice.photos, model=model)


def show_predictions(predictions: Predictions | None, *, max_width: int = 640) -> None:
    """Display, per photo, its annotated copy and one probability chart per face (in a notebook)."""
    from IPython.display import Image as ImageDisplay
    from IPython.display import Markdown, display

    if predictions is None:
        return
    for warning in predictions.warnings:
        display(Markdown(f"**⚠ {warning}**"))
    display(Markdown(summary_line(predictions)))
    for photo in predictions.photos:
        display(Markdown(f"**{Path(photo.source).name}** — {photo_text(photo)}"))
        if photo.annotated is not None:
            width = min(max_width, photo.size[0]) if photo.size else max_width
            display(ImageDisplay(filename=str(photo.annotated), width=width))
        for index, face in enumerate(photo.faces, start=1):
            display(probability_chart(face, title=f"face {face_label(index, face)}"))
