"""Train a registered model on a loaded data set from a plain params mapping, resumably, with its records on disk.

One call, :func:`train_model`, covers what the study needs: optimizer, learning-rate schedule, epochs, batch size,
label smoothing, class weights and seed from a mapping; history to CSV, the best checkpoint on a validation metric,
early stopping and optional ReduceLROnPlateau as callbacks. A killed run resumes from its last completed epoch when
called again with the same ``out_dir`` (Keras's BackupAndRestore).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd

from fer_lib.augment import AugmentConfig
from fer_lib.data import FerDataset
from fer_lib.labels import NUM_CLASSES
from fer_lib.models import build_model

OPTIMIZERS = ("adam", "adamw", "sgd")
LR_SCHEDULES = ("constant", "cosine", "step")
MONITORS = ("val_accuracy", "val_loss")
HISTORY_FILE = "history.csv"
BEST_MODEL_FILE = "best.keras"
BEST_WEIGHTS_FILE = "best.weights.h5"
BACKUP_DIR = "backup"


class TrainConfigError(ValueError):
    """A training parameter with a wrong type or an impossible value; raised before any training starts."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that decides how a model is trained (not which model, nor which data)."""

    epochs: int = 30
    batch_size: int = 64
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    lr_schedule: str = "constant"
    warmup_epochs: float = 0.0
    reduce_lr_on_plateau: bool = False
    label_smoothing: float = 0.0
    class_weights: str | tuple[float, ...] | None = None  # None, "balanced" or 7 weights in csv label order
    early_stopping_patience: int | None = None
    monitor: str = "val_accuracy"
    seed: int = 0
    mixed_precision: bool = False
    jit_compile: bool | str = "auto"
    verbose: int = 2

    def __post_init__(self) -> None:
        _require_int("epochs", self.epochs, minimum=1)
        _require_int("batch_size", self.batch_size, minimum=1)
        _require_int("seed", self.seed, minimum=0)
        _require_int("verbose", self.verbose, minimum=0)
        _require_choice("optimizer", self.optimizer, OPTIMIZERS)
        _require_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _require_choice("monitor", self.monitor, MONITORS)
        _require_number("learning_rate", self.learning_rate, low=0.0, low_inclusive=False)
        _require_number("weight_decay", self.weight_decay, low=0.0)
        _require_number("momentum", self.momentum, low=0.0, high=1.0, high_inclusive=False)
        _require_number("warmup_epochs", self.warmup_epochs, low=0.0)
        _require_number("label_smoothing", self.label_smoothing, low=0.0, high=1.0, high_inclusive=False)
        for name in ("reduce_lr_on_plateau", "mixed_precision"):
            if not isinstance(getattr(self, name), bool):
                raise TrainConfigError(f"training parameter {name} must be true or false, got {getattr(self, name)!r}")
        if self.early_stopping_patience is not None:
            _require_int("early_stopping_patience", self.early_stopping_patience, minimum=1)
        if self.jit_compile not in (True, False, "auto"):
            raise TrainConfigError(f"training parameter jit_compile must be true, false or 'auto', "
                                   f"got {self.jit_compile!r}")
        if self.reduce_lr_on_plateau and self.lr_schedule != "constant":
            raise TrainConfigError(f"reduce_lr_on_plateau needs lr_schedule 'constant' (it changes the learning rate "
                                   f"itself), got lr_schedule {self.lr_schedule!r}")
        if self.warmup_epochs >= self.epochs:
            raise TrainConfigError(f"warmup_epochs ({self.warmup_epochs}) must be below epochs ({self.epochs})")
        weights = self.class_weights
        if weights is not None and weights != "balanced":
            if (isinstance(weights, str) or not isinstance(weights, Sequence) or len(weights) != NUM_CLASSES
                    or not all(isinstance(w, (int, float)) and not isinstance(w, bool) and w > 0 for w in weights)):
                raise TrainConfigError(f"training parameter class_weights must be null, 'balanced' or a list of "
                                       f"{NUM_CLASSES} positive numbers (csv label order), got {weights!r}")
            object.__setattr__(self, "class_weights", tuple(float(w) for w in weights))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> TrainConfig:
        """Take the training keys of a params mapping; unknown keys are the caller's to check (see fer_lib.params)."""
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in names})

    def as_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        if isinstance(values["class_weights"], tuple):
            values["class_weights"] = list(values["class_weights"])
        return values


def _require_int(name: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise TrainConfigError(f"training parameter {name} must be an integer >= {minimum}, got {value!r}")


def _require_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise TrainConfigError(f"training parameter {name} must be one of {', '.join(choices)}, got {value!r}")


def _require_number(name: str, value: Any, *, low: float, high: float = math.inf, low_inclusive: bool = True,
                    high_inclusive: bool = True) -> None:
    ok = isinstance(value, (int, float, np.floating)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value >= low if low_inclusive else value > low) and (value <= high if high_inclusive else value < high)
    if not ok:
        interval = f"{'[' if low_inclusive else '('}{low}, {high}{']' if high_inclusive else ')'}"
        raise TrainConfigError(f"training parameter {name} must be a number in {interval}, got {value!r}")


@dataclasses.dataclass
class TrainResult:
    """The trained model (best checkpoint loaded), its per-epoch history and where its files are."""

    model: keras.Model
    history: pd.DataFrame
    out_dir: Path
    best_epoch: int
    best_value: float
    monitor: str
    train_seconds: float
    resumed_from_epoch: int


def class_weight_vector(labels: np.ndarray, class_weights: str | Sequence[float] | None) -> np.ndarray | None:
    """Per-class loss weights: None, sklearn's 'balanced' (n / (k * count)), or the given vector."""
    if class_weights is None:
        return None
    if class_weights == "balanced":
        from sklearn.utils.class_weight import compute_class_weight

        present = np.unique(labels)
        weights = np.ones(NUM_CLASSES)
        weights[present] = compute_class_weight("balanced", classes=present, y=labels)
        return weights
    return np.asarray(class_weights, dtype=np.float64)


def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """The configured optimizer with its learning-rate schedule (steps counted in batches)."""
    total_steps = max(1, config.epochs * steps_per_epoch)
    warmup_steps = int(config.warmup_epochs * steps_per_epoch)
    learning_rate: Any = config.learning_rate
    if config.lr_schedule == "cosine":
        learning_rate = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0 if warmup_steps else config.learning_rate,
            decay_steps=max(1, total_steps - warmup_steps), alpha=0.0,
            warmup_target=config.learning_rate if warmup_steps else None, warmup_steps=warmup_steps)
    elif config.lr_schedule == "step":  # divide by 10 at half and three quarters of training
        boundaries = [max(1, total_steps // 2), max(2, (3 * total_steps) // 4)]
        learning_rate = keras.optimizers.schedules.PiecewiseConstantDecay(
            boundaries, [config.learning_rate, config.learning_rate / 10, config.learning_rate / 100])
    if config.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate)
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(learning_rate, weight_decay=config.weight_decay)
    return keras.optimizers.SGD(learning_rate, momentum=config.momentum, nesterov=True,
                                weight_decay=config.weight_decay or None)


class EpochStats(keras.callbacks.Callback):
    """Adds the epoch's wall time, training throughput (validation excluded) and learning rate to the logs."""

    def __init__(self, n_train: int) -> None:
        super().__init__()
        self.n_train = n_train
        self._start = 0.0
        self._train_end: float | None = None

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._start, self._train_end = time.perf_counter(), None

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:  # fit's validation pass starts
        if self._train_end is None:
            self._train_end = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is None:
            return
        now = time.perf_counter()
        train_seconds = (self._train_end or now) - self._start
        logs["epoch_seconds"] = now - self._start
        logs["train_images_per_second"] = self.n_train / train_seconds if train_seconds > 0 else float("nan")
        logs.setdefault("learning_rate", float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))


def one_hot(labels: np.ndarray) -> np.ndarray:
    return np.eye(NUM_CLASSES, dtype="float32")[np.asarray(labels, dtype=np.int64)]


def train_model(dataset: FerDataset, model_name: str, params: Mapping[str, Any] | TrainConfig, out_dir: str | Path,
                *, model_options: Mapping[str, Any] | None = None,
                augmentation: AugmentConfig | Mapping[str, Any] | None = None,
                extra_callbacks: Sequence[keras.callbacks.Callback] = ()) -> TrainResult:
    """Train ``model_name`` on ``dataset.train``, select on ``dataset.val``, and keep every record in ``out_dir``.

    ``out_dir`` gets ``history.csv`` (one row per epoch), ``best.keras`` (the model at its best epoch on ``monitor``,
    without optimizer state, which would triple its size),
    ``train_config.json`` and, while training, ``backup/`` for resuming. Calling again with the ``out_dir`` of a
    killed run resumes it; the ``out_dir`` of a finished run is refused rather than overwritten.
    """
    config = params if isinstance(params, TrainConfig) else TrainConfig.from_mapping(params)
    out_dir = Path(out_dir)
    history_file, backup_dir = out_dir / HISTORY_FILE, out_dir / BACKUP_DIR
    best_weights = out_dir / BEST_WEIGHTS_FILE
    if history_file.exists() and not backup_dir.exists():
        raise FileExistsError(f"'{out_dir}' already holds a finished training run ({HISTORY_FILE} without "
                              f"{BACKUP_DIR}/); runs never overwrite each other, choose a new folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    resumed_from = _completed_epochs(history_file) if backup_dir.exists() else 0

    keras.utils.set_random_seed(config.seed)
    model = build_model(model_name, augmentation=augmentation, mixed_precision=config.mixed_precision,
                        seed=config.seed, **dict(model_options or {}))
    steps_per_epoch = math.ceil(len(dataset.train) / config.batch_size)
    model.compile(
        optimizer=make_optimizer(config, steps_per_epoch),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy"),
                 keras.metrics.TopKCategoricalAccuracy(k=2, name="top2_accuracy")],
        jit_compile=config.jit_compile,
    )
    (out_dir / "train_config.json").write_text(json.dumps(
        {"model": model_name, "model_options": dict(model_options or {}),
         "augmentation": dataclasses.asdict(augmentation) if isinstance(augmentation, AugmentConfig)
         else dict(augmentation or {}),
         "train": config.as_dict(), "data": {"source": dataset.source, "fingerprint": dataset.fingerprint,
                                             "synthetic": dataset.is_synthetic, "val_origin": dataset.val_origin,
                                             "n_train": len(dataset.train), "n_val": len(dataset.val)}},
        indent=2, default=str))

    mode = "max" if config.monitor.endswith("accuracy") else "min"
    best_so_far = _best_so_far(history_file, config.monitor, mode) if resumed_from else None
    callbacks: list[keras.callbacks.Callback] = [
        EpochStats(len(dataset.train)),
        keras.callbacks.BackupAndRestore(str(backup_dir), save_freq="epoch", delete_checkpoint=True),
        keras.callbacks.ModelCheckpoint(str(best_weights), monitor=config.monitor, mode=mode, save_best_only=True,
                                        save_weights_only=True, initial_value_threshold=best_so_far),
        keras.callbacks.CSVLogger(str(history_file), append=True),
    ]
    if config.reduce_lr_on_plateau:
        callbacks.insert(1, keras.callbacks.ReduceLROnPlateau(monitor=config.monitor, mode=mode, factor=0.5,
                                                              patience=3, min_lr=1e-6))
    if config.early_stopping_patience:
        callbacks.append(keras.callbacks.EarlyStopping(monitor=config.monitor, mode=mode,
                                                       patience=config.early_stopping_patience))
    callbacks.extend(extra_callbacks)

    weights = class_weight_vector(dataset.train.labels, config.class_weights)
    sample_weight = None if weights is None else weights[dataset.train.labels].astype("float32")
    started = time.perf_counter()
    model.fit(
        dataset.train.images, one_hot(dataset.train.labels), sample_weight=sample_weight,
        validation_data=(dataset.val.images, one_hot(dataset.val.labels)),
        epochs=config.epochs, batch_size=config.batch_size, shuffle=True, callbacks=callbacks,
        verbose=config.verbose,
    )
    train_seconds = time.perf_counter() - started

    history = pd.read_csv(history_file)
    if best_weights.exists():
        model.load_weights(best_weights)
    save_inference_model(model, out_dir / BEST_MODEL_FILE)
    best_weights.unlink(missing_ok=True)
    values = history[config.monitor]
    best_row = int(values.idxmax() if mode == "max" else values.idxmin())
    return TrainResult(model=model, history=history, out_dir=out_dir, best_epoch=int(history["epoch"][best_row]) + 1,
                       best_value=float(values[best_row]), monitor=config.monitor, train_seconds=train_seconds,
                       resumed_from_epoch=resumed_from)


def save_inference_model(model: keras.Model, path: Path) -> Path:
    """Save architecture and weights without the optimizer's slots (a third of the size for Adam)."""
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    clone.save(path)
    return path


def _completed_epochs(history_file: Path) -> int:
    return len(pd.read_csv(history_file)) if history_file.exists() else 0


def _best_so_far(history_file: Path, monitor: str, mode: str) -> float | None:
    if not history_file.exists():
        return None
    values = pd.read_csv(history_file).get(monitor)
    if values is None or values.empty:
        return None
    return float(values.max() if mode == "max" else values.min())
