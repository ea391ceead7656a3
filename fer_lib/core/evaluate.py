"""Evaluate a model with scikit-learn metrics, next to the majority-class baseline, and flag collapsed models:
FER2013 accuracy only means something beside always answering "happy" (about 0.25)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn import metrics as skm

if TYPE_CHECKING:  # only a type here: reading results (reports, widgets) must not start a Keras backend
    import keras

from fer_lib.core.data import FerDataset, Split, majority_class_accuracy
from fer_lib.core.labels import EMOTIONS, NUM_CLASSES

COLLAPSE_SHARE = 0.9  # one class takes at least this share of all predictions ...
COLLAPSE_MARGIN = 0.02  # ... or accuracy is within this margin of the majority-class accuracy
MAX_EVALUATION_BATCH = 256  # images per predict batch; fewer when a split (or a photo's faces) is smaller


def evaluation_batch_size(train_batch_size: int, dataset: FerDataset | None = None, *, devices: int = 1) -> int:
    """The batch size of every prediction of a run, so one predict function is compiled: 256 or :func:`batch_holding`
    the larger of val and test, at least the training batch, a multiple of ``devices`` (three GPUs cannot split 256)."""
    batch = MAX_EVALUATION_BATCH if dataset is None else batch_holding(max(len(dataset.val), len(dataset.test)))
    batch = max(batch, int(train_batch_size))
    return -(-batch // devices) * devices


def batch_holding(n: int) -> int:
    """The smallest power of two that holds ``n`` images, at most MAX_EVALUATION_BATCH: few images, one batch."""
    return min(MAX_EVALUATION_BATCH, 1 << max(0, n - 1).bit_length())


def tta_views(images: np.ndarray, crop: int | None = None) -> list[np.ndarray]:
    """The views test-time averaging averages: the images and their mirrors; with ``crop``, torchvision's TenCrop
    (four corners and the centre, resized back bilinearly and rounded to grey levels, and their mirrors)."""
    images = np.asarray(images)
    if crop is None:
        return [images, np.ascontiguousarray(images[:, :, ::-1])]
    from keras import ops  # only for the resize (any backend)

    height, width = images.shape[1:3]
    if not 0 < crop < min(height, width):
        raise ValueError(f"tta crop must be between 1 and {min(height, width) - 1} pixels, got {crop}")
    corners = [(0, 0), (0, width - crop), (height - crop, 0), (height - crop, width - crop),
               ((height - crop) // 2, (width - crop) // 2)]
    views = []
    for top, left in corners:
        part = images[:, top:top + crop, left:left + crop].astype("float32")
        resized = ops.convert_to_numpy(ops.image.resize(part, (height, width), interpolation="bilinear"))
        views.append(np.clip(np.rint(resized), 0, 255).astype(images.dtype))
    return views + [np.ascontiguousarray(view[:, :, ::-1]) for view in views]


def predict_proba(model: keras.Model, images: np.ndarray, *, tta: bool = False, tta_crop: int | None = None,
                  batch_size: int = 256) -> np.ndarray:
    """Class probabilities (n, 7), with ``tta`` averaged over :func:`tta_views`; padded to whole batches, so XLA
    compiles the predict function once for any ``n``."""
    images = np.asarray(images)
    n = images.shape[0]
    part, parts = process_share()

    def predict(view: np.ndarray) -> np.ndarray:
        padded = np.concatenate([view, np.zeros((-n % batch_size, *view.shape[1:]), dtype=view.dtype)])
        if parts > 1:  # this process feeds its share of every batch; Keras returns every process's predictions
            padded = padded.reshape(-1, parts, batch_size // parts, *view.shape[1:])[:, part]
            padded = padded.reshape(-1, *view.shape[1:])
        return np.asarray(model.predict(padded, batch_size=batch_size // parts, verbose=0), dtype=np.float64)[:n]

    if not tta:
        return predict(images)
    return np.mean([predict(view) for view in tta_views(images, tta_crop)], axis=0)


def process_share() -> tuple[int, int]:
    """(this process's index, processes) under a multi-process keras.distribution, else (0, 1): each process feeds
    its consecutive share of every global batch."""
    import keras  # a model is at hand (or in training): Keras is imported already

    distribution = keras.distribution.distribution()
    if distribution is None or distribution.num_processes == 1:
        return 0, 1
    return distribution.data_shard_id, distribution.num_processes


def top_k(probabilities: np.ndarray | Sequence[float], k: int = 3) -> list[tuple[str, float]]:
    """The ``k`` most probable classes of one image as ``(class name, probability)``, most probable first; ties keep
    label order, so captions are stable between runs."""
    values = np.asarray(probabilities, dtype=np.float64).ravel()
    if values.shape != (NUM_CLASSES,):
        raise ValueError(f"probabilities must hold {NUM_CLASSES} values (one per class), got shape {values.shape}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= NUM_CLASSES:
        raise ValueError(f"k must be an integer in 1..{NUM_CLASSES}, got {k!r}")
    order = np.argsort(-values, kind="stable")[:k]
    return [(EMOTIONS[int(i)], float(values[i])) for i in order]


def confusion_counts(labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """The (7, 7) matrix of counts: rows are true classes, columns predicted classes (csv label order)."""
    labels, predicted = np.asarray(labels, dtype=np.int64), np.asarray(predicted, dtype=np.int64)
    if labels.shape != predicted.shape:
        raise ValueError(f"labels and predicted differ in shape: {labels.shape} vs {predicted.shape}")
    return skm.confusion_matrix(labels, predicted, labels=list(range(NUM_CLASSES)))


def row_normalise(counts: np.ndarray) -> np.ndarray:
    """Each row divided by its total (recall of each true class on the diagonal); empty rows stay 0."""
    counts = np.asarray(counts, dtype=np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


def evaluate_predictions(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, Any]:
    """All metrics of one split from true labels and predicted probabilities (plain JSON-ready types)."""
    labels = np.asarray(labels, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or probabilities.shape != (labels.shape[0], NUM_CLASSES):
        raise ValueError(f"probabilities must have shape ({labels.shape[0]}, {NUM_CLASSES}), got {probabilities.shape}")
    predicted = probabilities.argmax(axis=1)
    classes = list(range(NUM_CLASSES))
    precision, recall, f1, support = skm.precision_recall_fscore_support(labels, predicted, labels=classes,
                                                                         zero_division=0)
    counts = confusion_counts(labels, predicted)
    prediction_shares = np.bincount(predicted, minlength=NUM_CLASSES) / max(1, predicted.size)
    result: dict[str, Any] = {
        "n": int(labels.size),
        "accuracy": float(skm.accuracy_score(labels, predicted)),
        "macro_f1": float(skm.f1_score(labels, predicted, labels=classes, average="macro", zero_division=0)),
        "weighted_f1": float(skm.f1_score(labels, predicted, labels=classes, average="weighted", zero_division=0)),
        "top2_accuracy": float(skm.top_k_accuracy_score(labels, probabilities, k=2, labels=classes)),
        "majority_class_accuracy": majority_class_accuracy(labels),
        "majority_class": EMOTIONS[int(np.bincount(labels, minlength=NUM_CLASSES).argmax())],
        "per_class": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                   "support": int(support[i]), "predicted_share": float(prediction_shares[i])}
            for i, name in enumerate(EMOTIONS)
        },
        "confusion_matrix": counts.tolist(),
        "confusion_matrix_normalised": row_normalise(counts).round(6).tolist(),
        "class_names": list(EMOTIONS),
    }
    result["collapse_warning"] = collapse_warning(result)
    return result


def collapse_warning(metrics: Mapping[str, Any]) -> str | None:
    """A sentence saying why a result is no better than predicting one class, or None for a real result."""
    shares = {name: values["predicted_share"] for name, values in metrics["per_class"].items()}
    top_class = max(shares, key=shares.get)
    if shares[top_class] >= COLLAPSE_SHARE:
        return (f"collapsed: {shares[top_class]:.0%} of predictions are '{top_class}'; accuracy "
                f"{metrics['accuracy']:.3f} vs majority-class baseline {metrics['majority_class_accuracy']:.3f}")
    if metrics["accuracy"] <= metrics["majority_class_accuracy"] + COLLAPSE_MARGIN:
        return (f"no better than the majority-class baseline: accuracy {metrics['accuracy']:.3f} vs "
                f"{metrics['majority_class_accuracy']:.3f} for always predicting '{metrics['majority_class']}'")
    return None


def evaluate_model(model: keras.Model, split: Split, *, tta: bool = False, tta_crop: int | None = None,
                   batch_size: int = 256) -> tuple[dict[str, Any], np.ndarray]:
    """Predict on a split; return its metrics (naming the split and the views averaged) and the probabilities."""
    if len(split) == 0:
        raise ValueError(f"cannot evaluate on the empty split {split.name!r}")
    probabilities = predict_proba(model, split.images, tta=tta, tta_crop=tta_crop, batch_size=batch_size)
    views = 1 if not tta else (2 if tta_crop is None else 10)
    return ({"split": split.name, "tta": tta, "views": views, "tta_crop": tta_crop,
             **evaluate_predictions(split.labels, probabilities)}, probabilities)


def save_predictions(path: str | Path, split: Split, probabilities: np.ndarray) -> Path:
    """Keep per-image ids, true labels and probabilities, so widgets can show which images fall in which cell."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, ids=split.ids, labels=split.labels, probabilities=probabilities.astype(np.float32))
    return path


def load_predictions(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as stored:
        return {name: stored[name] for name in stored.files}


def ensemble_probabilities(probabilities: Sequence[np.ndarray]) -> np.ndarray:
    """Average the class probabilities of several models (all on the same images, in the same order)."""
    shapes = {np.shape(p) for p in probabilities}
    if not probabilities or len(shapes) != 1:
        raise ValueError(f"ensemble needs at least one probability array, all of one shape; got shapes "
                         f"{sorted(shapes)}")
    return np.mean(np.stack(probabilities), axis=0)
