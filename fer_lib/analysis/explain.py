"""What the models look at: occlusion-sensitivity maps (Zeiler & Fergus, 2014), from predictions only.
Where covering the face with a grey patch lowers the true class's probability, the model relied on that region. Only
a predict callable is needed (any backend; tested with numpy); Keras is imported only inside :func:`run_occlusion`."""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fer_lib.analysis.confusion import SplitPredictions, load_run_dataset, split_positions
from fer_lib.analysis.results import RunResults
from fer_lib.core import records
from fer_lib.core.evaluate import evaluation_batch_size, predict_proba
from fer_lib.core.labels import EMOTIONS, NUM_CLASSES

Predict = Callable[[np.ndarray], np.ndarray]  # images (m, H, W[, C]) -> class probabilities (m, n_classes)

DEFAULT_PATCH = 8  # a sixth of a 48-pixel face: about an eye, a mouth corner, the tip of the nose
DEFAULT_STRIDE = 4  # half a patch: every pixel is covered by up to 4 patches, so maps are smooth
DEFAULT_MAX_BATCH = 4096  # occluded copies per predict call (48x48 uint8: 9 MiB)
RUN_STRIDE = 8  # run_occlusion's: non-overlapping patches, a third of stride 4's predictions (seconds on a CPU)
RUN_PER_CLASS = 2  # run_occlusion's images per class and model (raise it on a GPU: the cost is linear)
RUN_EXAMPLES = 3  # run_occlusion's default single faces

__all__ = ["ClassMaps", "ModelOcclusion", "RunOcclusion", "choose_per_class", "class_mean_maps",
           "mean_maps_by_class", "occlusion_positions", "occlusion_sensitivity", "run_occlusion"]


# --- The map ----------------------------------------------------------------------------------------------------------
def _positive_int(value: Any, name: str, *, low: int = 1, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low \
            or (high is not None and value > high):
        limit = f"an integer in {low}..{high}" if high is not None else f"an integer >= {low}"
        raise ValueError(f"{name} must be {limit}, got {value!r}")
    return int(value)


def occlusion_positions(size: int, patch: int, stride: int) -> np.ndarray:
    """Patch starts along one axis: every ``stride`` pixels, plus ``size - patch`` so the border is covered too."""
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return np.array(starts, dtype=np.int64)


def _fill_values(images: np.ndarray, fill: float | None) -> np.ndarray:
    """The grey of each image's patches, in the images' dtype: the image's mean pixel, or the constant ``fill``.
    The mean keeps the face's brightness, so a map shows what a region holds, not the shock of a bright square."""
    n = images.shape[0]
    if fill is None:
        values = images.reshape(n, int(np.prod(images.shape[1:]))).mean(axis=1, dtype=np.float64)
    else:
        if isinstance(fill, bool) or not isinstance(fill, (int, float, np.integer, np.floating)) \
                or not np.isfinite(fill):
            raise ValueError(f"fill must be None (each image's mean pixel) or a finite number, got {fill!r}")
        values = np.full(n, float(fill))
    if np.issubdtype(images.dtype, np.integer):
        info = np.iinfo(images.dtype)
        values = np.clip(np.rint(values), info.min, info.max)
    return values.astype(images.dtype)


def _occlusion(predict: Predict, images: np.ndarray, labels: np.ndarray, *, patch: int, stride: int,
               fill: float | None, max_batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Maps (n, H, W) and each image's unoccluded true-class probability (n,); see :func:`occlusion_sensitivity`."""
    images = np.asarray(images)
    if images.ndim not in (3, 4):
        raise ValueError(f"images must have shape (n, H, W) or (n, H, W, C), got {images.shape}")
    n, height, width = images.shape[:3]
    labels = np.asarray(labels)
    if labels.shape != (n,) or (n and not np.issubdtype(labels.dtype, np.integer)):
        raise ValueError(f"labels must be {n} integer class codes (one per image), got shape {labels.shape} "
                         f"({labels.dtype})")
    patch = _positive_int(patch, "patch", high=min(height, width))
    stride = _positive_int(stride, "stride", high=patch)  # a stride above the patch would leave pixels uncovered
    max_batch = _positive_int(max_batch, "max_batch")
    fills = _fill_values(images, fill)
    if n == 0:
        return np.zeros((0, height, width)), np.zeros(0)

    corners = [(int(y), int(x)) for y in occlusion_positions(height, patch, stride)
               for x in occlusion_positions(width, patch, stride)]
    coverage = np.zeros((height, width))
    for y, x in corners:
        coverage[y:y + patch, x:x + patch] += 1
    copies_per_image = len(corners) + 1  # the image itself first, then one copy per patch position
    per_call = max(1, max_batch // copies_per_image)
    maps, base = np.empty((n, height, width)), np.empty(n)
    for start in range(0, n, per_call):
        chunk = images[start:start + per_call]
        c = chunk.shape[0]
        copies = np.repeat(chunk[:, None], copies_per_image, axis=1)  # (c, P + 1, H, W[, C])
        grey = fills[start:start + c].reshape(c, *([1] * (images.ndim - 1)))
        for k, (y, x) in enumerate(corners, start=1):
            copies[:, k, y:y + patch, x:x + patch] = grey
        probabilities = np.asarray(predict(copies.reshape(c * copies_per_image, *images.shape[1:])),
                                   dtype=np.float64)
        if probabilities.ndim != 2 or probabilities.shape[0] != c * copies_per_image:
            raise ValueError(f"predict must return probabilities of shape ({c * copies_per_image}, n_classes), got "
                             f"{probabilities.shape}")
        chunk_labels = labels[start:start + c]
        if chunk_labels.min() < 0 or chunk_labels.max() >= probabilities.shape[1]:
            raise ValueError(f"labels must be class codes 0..{probabilities.shape[1] - 1}")
        true = probabilities.reshape(c, copies_per_image, -1)[np.arange(c), :, chunk_labels]  # (c, P + 1)
        drops = true[:, :1] - true[:, 1:]
        summed = np.zeros((c, height, width))
        for k, (y, x) in enumerate(corners):
            summed[:, y:y + patch, x:x + patch] += drops[:, k, None, None]
        maps[start:start + c] = summed / coverage
        base[start:start + c] = true[:, 0]
    return maps, base


def occlusion_sensitivity(predict: Predict, images: np.ndarray, labels: np.ndarray | Sequence[int], *,
                          patch: int = DEFAULT_PATCH, stride: int = DEFAULT_STRIDE, fill: float | None = None,
                          max_batch: int = DEFAULT_MAX_BATCH) -> np.ndarray:
    """Maps (n, H, W) of the drop of the true class's probability when a grey patch covers each pixel (mean over
    the patches covering it). ``predict`` gets the copies in large batches (XLA compiles one batch shape); ``fill``:
    None = each image's mean pixel, else a constant in the images' units (e.g. 127.5)."""
    return _occlusion(predict, images, np.asarray(labels), patch=patch, stride=stride, fill=fill,
                      max_batch=max_batch)[0]


# --- Per class --------------------------------------------------------------------------------------------------------
def choose_per_class(labels: np.ndarray, eligible: np.ndarray, per_class: int, *, seed: int = 0,
                     order: np.ndarray | None = None) -> list[np.ndarray]:
    """Per class, the positions of at most ``per_class`` eligible images, in one seeded order (or ``order``): two
    models that both get a face right are explained on the same faces."""
    labels, eligible = np.asarray(labels), np.asarray(eligible, dtype=bool)
    if eligible.shape != labels.shape:
        raise ValueError(f"eligible must have the labels' shape {labels.shape}, got {eligible.shape}")
    per_class = _positive_int(per_class, "per_class")
    if order is None:
        order = np.random.default_rng(seed).permutation(len(labels))
    ordered = np.asarray(order)[eligible[order]]
    return [ordered[labels[ordered] == code][:per_class] for code in range(NUM_CLASSES)]


def mean_maps_by_class(maps: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mean map of each class (NaN for a class without a map) and the number of maps averaged per class."""
    maps, labels = np.asarray(maps, dtype=np.float64), np.asarray(labels)
    means = np.full((NUM_CLASSES, *maps.shape[1:]), np.nan)
    counts = np.bincount(labels, minlength=NUM_CLASSES)[:NUM_CLASSES] if len(labels) else np.zeros(NUM_CLASSES, int)
    for code in range(NUM_CLASSES):
        if counts[code]:
            means[code] = maps[labels == code].mean(axis=0)
    return means, counts.astype(np.int64)


@dataclasses.dataclass(frozen=True)
class ClassMaps:
    """Per class: the mean occlusion map (NaN where no image qualified), its image count and image positions."""

    maps: np.ndarray  # (n_classes, H, W)
    counts: np.ndarray  # (n_classes,)
    indices: list[np.ndarray]


def class_mean_maps(predict: Predict, images: np.ndarray, labels: np.ndarray | Sequence[int], *,
                    predicted: np.ndarray | Sequence[int] | None = None, per_class: int = 4, seed: int = 0,
                    patch: int = DEFAULT_PATCH, stride: int = DEFAULT_STRIDE, fill: float | None = None,
                    max_batch: int = DEFAULT_MAX_BATCH) -> ClassMaps:
    """Per class, the mean map over at most ``per_class`` correctly classified images (seeded): what the model used
    to get it right. ``predicted``: the classes predicted for ``images`` if known, else one ``predict`` call."""
    images, labels = np.asarray(images), np.asarray(labels)
    predicted = np.asarray(predict(images)).argmax(axis=1) if predicted is None else np.asarray(predicted)
    chosen = choose_per_class(labels, predicted == labels, per_class, seed=seed)
    rows = np.concatenate(chosen).astype(np.int64)
    maps = occlusion_sensitivity(predict, images[rows], labels[rows], patch=patch, stride=stride, fill=fill,
                                 max_batch=max_batch)
    means, counts = mean_maps_by_class(maps, labels[rows])
    return ClassMaps(means, counts, chosen)


# --- A run folder -----------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ModelOcclusion:
    """One model's maps in :class:`RunOcclusion`."""

    model: str
    model_file: Path
    class_maps: np.ndarray  # (7, H, W): mean map per class, NaN where no correctly classified image
    class_counts: np.ndarray  # (7,): images averaged per class
    class_positions: list[np.ndarray]  # per class: positions (in the split) of the images averaged
    example_maps: np.ndarray  # (k, H, W): the single faces' maps (RunOcclusion.example_*)
    example_probabilities: np.ndarray  # (k,): the model's probability of the true class of each single face
    seconds: float  # loading the model and computing its maps


@dataclasses.dataclass(frozen=True)
class RunOcclusion:
    """Occlusion maps of every trained model of a run, on its ``split`` images (see :func:`run_occlusion`)."""

    run_dir: Path
    split: str
    patch: int
    stride: int
    fill: float | None
    per_class: int
    seed: int  # of the choice of images
    model_seed: int | None  # the training seed whose models are explained (None: a single-seed run)
    synthetic: bool
    mean_faces: np.ndarray  # (7, H, W): the mean image of each class in the split (0-255), NaN for an absent class
    example_positions: np.ndarray  # (k,) positions in the split of the single faces, the same for every model
    example_images: np.ndarray  # (k, H, W, C) their pixels
    example_labels: np.ndarray  # (k,)
    example_ids: np.ndarray  # (k,)
    models: dict[str, ModelOcclusion]
    seconds: float  # everything, including importing Keras
    import_seconds: float = 0.0  # importing Keras (the compare notebook's first use of it)

    @property
    def class_maps(self) -> dict[str, np.ndarray]:
        return {name: result.class_maps for name, result in self.models.items()}

    @property
    def class_counts(self) -> dict[str, np.ndarray]:
        return {name: result.class_counts for name, result in self.models.items()}

    @property
    def example_maps(self) -> dict[str, np.ndarray]:
        return {name: result.example_maps for name, result in self.models.items()}

    @property
    def example_probabilities(self) -> dict[str, np.ndarray]:
        return {name: result.example_probabilities for name, result in self.models.items()}

    def describe(self) -> str:
        """One paragraph (markdown) saying how the maps were made and what they cost."""
        grey = "each image's mean pixel value" if self.fill is None else f"the constant {self.fill:g}"
        lines = [f"**Occlusion**: an {self.patch}x{self.patch}-pixel patch of {grey}, every {self.stride} pixels, "
                 f"on the {self.split} images; per class the mean over at most {self.per_class} correctly classified "
                 f"images per model (chosen with seed {self.seed}); {len(self.example_positions)} single faces that "
                 f"every model classifies correctly"
                 + (f"; the models of training seed {self.model_seed}" if self.model_seed is not None else "")
                 + ". Red: covering the region lowers the probability of the true class."]
        for name, result in self.models.items():
            path = result.model_file
            where = path.relative_to(self.run_dir).as_posix() if path.is_relative_to(self.run_dir) else str(path)
            lines.append(f"{name}: {int(result.class_counts.sum())} images averaged "
                         f"({', '.join(f'{EMOTIONS[c]} {int(n)}' for c, n in enumerate(result.class_counts))}), "
                         f"{result.seconds:.1f} s, from `{where}`.")
        lines.append(f"Total {self.seconds:.1f} s (importing Keras: {self.import_seconds:.1f} s).")
        return "\n\n".join(lines)


def _choose_examples(order: np.ndarray, labels: np.ndarray, right_for_all: np.ndarray, examples: int) -> np.ndarray:
    """Up to ``examples`` faces every model gets right, in the seeded order, one per class before any repeats."""
    candidates = np.asarray(order, dtype=np.int64)[right_for_all[order]]
    _, firsts = np.unique(labels[candidates], return_index=True)  # each class's first candidate
    distinct = candidates[np.sort(firsts)]
    return np.concatenate([distinct, candidates[~np.isin(candidates, distinct)]])[:examples]


def run_occlusion(results: RunResults, *, split: str = "test", per_class: int = RUN_PER_CLASS,
                  examples: int = RUN_EXAMPLES, patch: int = DEFAULT_PATCH, stride: int = RUN_STRIDE,
                  fill: float | None = None, seed: int = 0, batch_size: int | None = None,
                  models: Sequence[str] | None = None, model_seed: int | None = None,
                  load_model: Callable[[Path], Any] | None = None) -> RunOcclusion:
    """Occlusion maps of each ``best.keras`` of ``model_seed`` (default: the first): per class the mean over at most
    ``per_class`` correct ``split`` images (per its saved predictions, as in the report), and ``examples`` faces every
    model gets right. ``batch_size``: the run's evaluation one (the shape it compiled); ``load_model``: for tests."""
    started = time.perf_counter()
    run_dir = results.run_dir
    model_seed = results.first.seed if model_seed is None else model_seed
    if model_seed not in results.by_seed:
        raise ValueError(f"model_seed must be one of the run's seeds {results.seeds}, got {model_seed!r}")
    files = {name: results.by_seed[model_seed].model_dir(name) / records.BEST_MODEL_FILE for name in results.models}
    files = {name: path for name, path in files.items() if path.is_file()}
    names = list(files) if models is None else list(models)
    unknown = [m for m in names if m not in files]
    if unknown:
        raise ValueError(f"models {unknown} have no saved best model in {run_dir} (trained: {sorted(files)})")
    if not names:
        raise FileNotFoundError(f"run folder '{run_dir}' has no trained model with a saved {records.BEST_MODEL_FILE}")
    per_class = _positive_int(per_class, "per_class")
    examples = _positive_int(examples, "examples", low=0)
    dataset, _ = load_run_dataset(results)
    if batch_size is None:
        batch_size = evaluation_batch_size(int(results.params.get("batch_size", 64)), dataset)
    data = dataset.split(split)
    labels = np.asarray(data.labels, dtype=np.int64)
    order = np.random.default_rng(seed).permutation(len(data))
    tick = time.perf_counter()
    if load_model is None:  # timed apart: the notebook's first Keras import, not a model's cost
        from fer_lib.core.train import load_inference_model as load_model
    import_seconds = time.perf_counter() - tick

    # Which images each model classifies correctly (from its saved predictions, else predicted here)
    loaded: dict[str, Any] = {}
    correct: dict[str, np.ndarray] = {}
    load_seconds: dict[str, float] = {}
    for name in names:
        predictions_file = files[name].parent / records.predictions_file(split)
        if predictions_file.is_file():
            stored = SplitPredictions.load(predictions_file, split)
            correct[name] = np.zeros(len(data), dtype=bool)
            correct[name][split_positions(stored, data)] = stored.predicted == stored.labels
        else:
            tick = time.perf_counter()
            loaded[name] = load_model(files[name])
            load_seconds[name] = time.perf_counter() - tick
            correct[name] = predict_proba(loaded[name], data.images, batch_size=batch_size).argmax(axis=1) == labels
    right_for_all = np.logical_and.reduce([correct[name] for name in names])
    example_positions = _choose_examples(order, labels, right_for_all, examples)

    by_model: dict[str, ModelOcclusion] = {}
    for name in names:
        tick = time.perf_counter()
        model = loaded.pop(name) if name in loaded else load_model(files[name])
        chosen = choose_per_class(labels, correct[name], per_class, order=order)
        rows = np.unique(np.concatenate([*chosen, example_positions]).astype(np.int64))
        predict = functools.partial(predict_proba, model, batch_size=batch_size)  # one compiled batch shape
        maps, base = _occlusion(predict, data.images[rows], labels[rows], patch=patch, stride=stride, fill=fill,
                                max_batch=16 * batch_size)
        class_rows = np.searchsorted(rows, np.concatenate(chosen))  # positions in the split -> rows of the maps
        means, counts = mean_maps_by_class(maps[class_rows], labels[rows][class_rows])
        example_rows = np.searchsorted(rows, example_positions)
        by_model[name] = ModelOcclusion(name, files[name], means, counts, chosen, maps[example_rows],
                                        base[example_rows], time.perf_counter() - tick + load_seconds.get(name, 0.0))
        del model  # free it before the next model is loaded

    return RunOcclusion(run_dir=run_dir, split=split, patch=int(patch), stride=int(stride), fill=fill,
                        per_class=per_class, seed=seed, model_seed=model_seed, synthetic=bool(dataset.is_synthetic),
                        mean_faces=mean_maps_by_class(data.images.reshape(data.images.shape[:3]), labels)[0],
                        example_positions=example_positions, example_images=data.images[example_positions],
                        example_labels=labels[example_positions], example_ids=data.ids[example_positions],
                        models=by_model, seconds=time.perf_counter() - started, import_seconds=import_seconds)
