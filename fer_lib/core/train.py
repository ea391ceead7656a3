"""Train a registered model on a loaded data set from a :class:`TrainConfig`, resumably, with its records on disk.

Built to keep an accelerator busy (README, "the training loop"): epoch-level callbacks only (a batch hook makes Keras
wait for the device after every batch), full batches and padded predictions (each step function compiles once), the
best weights in host memory, timed backups and, on JAX, optionally a ``keras.distribution.DataParallel`` scope."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd

from fer_lib.core.config import AugmentConfig, Config, TrainConfig, launch_from_environment, require_config
from fer_lib.core.config import model_options as default_options  # train_model's own argument is model_options
from fer_lib.core.data import FerDataset, Split
from fer_lib.core.evaluate import evaluation_batch_size, predict_proba, process_share
from fer_lib.core.labels import NUM_CLASSES
from fer_lib.core.models import build_model
from fer_lib.core.records import (BEST_MODEL_FILE, HISTORY_FILE, PROGRESS_FILE, TRAIN_CONFIG_FILE, TRAINING_FILE,
                                  read_history, read_json, write_json)

BACKUP_DIR = "backup"


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite; training stopped at that epoch (the message says what to try)."""


@dataclasses.dataclass
class TrainResult:
    """The trained model (best weights loaded), its per-epoch history and where its files are."""

    model: keras.Model
    history: pd.DataFrame
    out_dir: Path
    best_epoch: int
    best_value: float
    monitor: str
    train_seconds: float
    resumed_from_epoch: int
    distribution: keras.distribution.Distribution | None = None  # evaluate inside distribution_scope(this)


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


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Gradient steps in one epoch: full batches only (see :class:`TrainBatches`)."""
    return n_train // batch_size


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
    common = {"global_clipnorm": config.clip_norm, "use_ema": config.ema, "ema_momentum": config.ema_momentum}
    if config.optimizer == "adam":
        return Adam(learning_rate, **common)
    if config.optimizer == "adamw":
        return AdamW(learning_rate, weight_decay=config.weight_decay, **common)
    return SGD(learning_rate, momentum=config.momentum, nesterov=True, weight_decay=config.weight_decay or None,
               **common)


class EmaWarmup:
    """Keras's ``use_ema`` with the momentum warmed up as in TensorFlow's ExponentialMovingAverage(num_updates):
    Keras's fixed momentum keeps 0.999**2000 = 14% of the random first weights in the average (README, protocols)."""

    def _update_model_variables_moving_average(self, trainable_variables: list) -> None:
        if not self.use_ema:
            return
        steps = keras.ops.cast(self.iterations, "float32")
        momentum = keras.ops.minimum(self.ema_momentum, (1.0 + steps) / (10.0 + steps))
        for variable, average in zip(trainable_variables, self._model_variables_moving_average):
            if average is not None:
                rate = keras.ops.cast(momentum, variable.dtype)
                average.assign(rate * average + (1.0 - rate) * variable)


class SGD(EmaWarmup, keras.optimizers.SGD):
    pass


class Adam(EmaWarmup, keras.optimizers.Adam):
    pass


class AdamW(EmaWarmup, keras.optimizers.AdamW):
    pass


def kernels_only(optimizer: keras.optimizers.Optimizer, model: keras.Model) -> None:
    """Weight decay on kernels only: biases and BatchNorm's scale and offset (the 1-D variables) are left out."""
    optimizer.exclude_from_weight_decay(var_list=[v for v in model.trainable_variables if len(v.shape) < 2])


def one_hot(labels: np.ndarray) -> np.ndarray:
    return np.eye(NUM_CLASSES, dtype="float32")[np.asarray(labels, dtype=np.int64)]


class DataParallel(keras.distribution.DataParallel):
    """Keras's DataParallel; with several processes the output is replicated on every device, since ``predict``
    cannot read a shard on another machine's devices (one process keeps the output sharded)."""

    def get_tensor_layout(self, path: str) -> keras.distribution.TensorLayout | None:
        if self.num_processes > 1 and path.split("/")[-2:] == ["predictions", "output"]:
            return keras.distribution.TensorLayout([None, None], self.device_mesh)
        return None


_JOINED = False  # keras.distribution.initialize may run once per process


def join_processes() -> int:
    """Join the other processes of a multi-machine run, once, before JAX computes anything; their number
    (``keras.distribution.initialize`` reads KERAS_DISTRIBUTION_*, else JAX reads srun's or mpirun's variables)."""
    global _JOINED
    processes, _ = launch_from_environment()
    if processes > 1 and not _JOINED:
        keras.distribution.initialize()
        _JOINED = True
    return processes


def make_distribution(config: TrainConfig) -> DataParallel | None:
    """The run's DataParallel (None: one device), by the rule of ``TrainConfig.distribution_devices``; the loop
    shards the data itself (:class:`TrainBatches`, ``evaluate.predict_proba``), so ``auto_shard_dataset=False``."""
    backend = keras.backend.backend()
    processes = join_processes() if backend == "jax" and config.distribution != "none" else 1
    devices = keras.distribution.list_devices() if backend == "jax" else []
    accelerators = sum(1 for name in devices if not name.startswith("cpu"))
    count = config.distribution_devices(len(devices), accelerators, processes, backend=backend)
    if count == 1:
        return None
    config.check_device_count(count)
    return DataParallel(devices=devices[:count], auto_shard_dataset=False)


def distribution_scope(distribution: keras.distribution.Distribution | None) -> contextlib.AbstractContextManager:
    """``distribution.scope()``, or nothing for a run on one device."""
    return contextlib.nullcontext() if distribution is None else distribution.scope()


def distribution_record(distribution: keras.distribution.Distribution | None, config: TrainConfig) -> dict[str, Any]:
    """What train_config.json records of the distribution the model trained with (the mesh actually used)."""
    if distribution is None:
        return {"setting": config.distribution, "kind": None, "devices": 1, "processes": 1}
    mesh = distribution.device_mesh
    return {"setting": config.distribution, "kind": type(distribution).__name__,
            "devices": int(mesh.devices.size), "processes": distribution.num_processes,
            "mesh": {"shape": list(mesh.shape), "axis_names": list(mesh.axis_names)},
            "device_names": [str(d) for d in mesh.devices.ravel()], "global_batch_size": config.batch_size,
            "per_device_batch_size": config.batch_size // int(mesh.devices.size)}


class TrainBatches(keras.utils.PyDataset):
    """The training split as full batches (one shape: XLA compiles the step once), reshuffled by (seed, epoch) so
    that a resumed run draws the same batches; mixing runs on the host. Fit with ``shuffle=False``."""

    def __init__(self, split: Split, batch_size: int, *, seed: int, first_epoch: int = 0,
                 class_weights: np.ndarray | None = None, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0,
                 mix_probability: float = 1.0, share: tuple[int, int] = (0, 1)) -> None:
        super().__init__()
        self.images, self.targets = split.images, one_hot(split.labels)
        self.sample_weights = None if class_weights is None else class_weights[split.labels].astype("float32")
        self.batch_size, self.seed, self.share = batch_size, seed, share
        self.mixing = [(name, alpha) for name, alpha in (("mixup", mixup_alpha), ("cutmix", cutmix_alpha)) if alpha]
        self.mix_probability = mix_probability
        self.epoch, self._in_epoch = first_epoch, False
        self._order = self._permutation(first_epoch)

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.targets))

    def __len__(self) -> int:
        return steps_per_epoch(len(self.targets), self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, ...]:
        part, parts = self.share  # this process's share of the global batch, cut after the mixing
        return tuple(array[part * len(array) // parts:(part + 1) * len(array) // parts]
                     for array in self.batch(self.epoch, index, self._order))

    def batch(self, epoch: int, index: int, order: np.ndarray) -> tuple[np.ndarray, ...]:
        """Batch ``index`` of ``epoch`` (whose shuffle is ``order``): (images, targets[, weights])."""
        rows = order[index * self.batch_size:(index + 1) * self.batch_size]
        arrays = [self.images[rows], self.targets[rows]]
        if self.sample_weights is not None:
            arrays.append(self.sample_weights[rows])
        if self.mixing:
            arrays[:2] = mix_batch(*arrays[:2], np.random.default_rng([self.seed, epoch, index, 1]), self.mixing,
                                   self.mix_probability)
        return tuple(arrays)

    def on_epoch_begin(self) -> None:
        self._in_epoch = True

    def on_epoch_end(self) -> None:
        if not self._in_epoch:  # fit also calls this once before its first epoch (EpochIterator.reset)
            return
        self._in_epoch = False
        self.epoch += 1
        self._order = self._permutation(self.epoch)

    def remaining_epochs_nbytes(self, epochs: int) -> int:
        """Bytes of images that :meth:`remaining_epochs` would hold."""
        return max(0, epochs - self.epoch) * len(self) * self.batch_size * int(self.images[0].nbytes)

    def remaining_epochs(self, epochs: int) -> tuple[np.ndarray, ...]:
        """The batches of epochs ``self.epoch`` .. ``epochs - 1`` concatenated: what ``fit`` draws from this sequence,
        so fed unshuffled with ``steps_per_epoch=len(self)`` they train on the same batches in the same order."""
        batches = [self.batch(epoch, index, self._permutation(epoch))
                   for epoch in range(self.epoch, epochs) for index in range(len(self))]
        if not batches:
            return tuple(np.zeros((0, *a.shape[1:]), a.dtype) for a in self.batch(self.epoch, 0, self._order))
        return tuple(np.concatenate(parts) for parts in zip(*batches))


def mix_batch(images: np.ndarray, targets: np.ndarray, rng: np.random.Generator,
              mixing: Sequence[tuple[str, float]], probability: float) -> tuple[np.ndarray, np.ndarray]:
    """With ``probability``, mixup or cutmix (one of ``mixing``) of a batch with a permutation of itself (timm's batch
    mode), lambda ~ Beta(alpha, alpha): mixup rounds to grey levels, cutmix's lambda is what its clipped box left."""
    if rng.random() >= probability:
        return images, targets
    name, alpha = mixing[int(rng.integers(len(mixing)))]
    lam = float(rng.beta(alpha, alpha))
    partner = rng.permutation(len(images))
    if name == "mixup":
        mixed = np.rint(lam * images + (1.0 - lam) * images[partner]).astype(images.dtype)
    else:
        height, width = images.shape[1:3]
        cut_h, cut_w = int(height * np.sqrt(1.0 - lam)), int(width * np.sqrt(1.0 - lam))
        y, x = int(rng.integers(height)), int(rng.integers(width))
        top, bottom = max(0, y - cut_h // 2), min(height, y + cut_h - cut_h // 2)
        left, right = max(0, x - cut_w // 2), min(width, x + cut_w - cut_w // 2)
        mixed = images.copy()
        mixed[:, top:bottom, left:right] = images[partner, top:bottom, left:right]
        lam = 1.0 - (bottom - top) * (right - left) / (height * width)
    return mixed, (lam * targets + (1.0 - lam) * targets[partner]).astype(targets.dtype)


ARRAY_FEED_LIMIT_BYTES = 512 * 2**20  # above this, TensorFlow is fed the PyDataset (the arrays are copied once more)


def fit_inputs(batches: TrainBatches, epochs: int) -> dict[str, Any]:
    """``model.fit``'s data arguments for ``batches``, the same batches either way: on TensorFlow, arrays in a tf.data
    pipeline with autotuning off (twice the steps per second on 2 cores, no wait at the end; README), else the
    PyDataset. fer_lib's one use of the TensorFlow API, imported only here."""
    if keras.backend.backend() != "tensorflow" or batches.remaining_epochs_nbytes(epochs) > ARRAY_FEED_LIMIT_BYTES:
        return {"x": batches, "shuffle": False}  # Keras would shuffle the batch order again, with Python's random
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    pipeline = tf.data.Dataset.from_tensor_slices(batches.remaining_epochs(epochs)).batch(batches.batch_size)
    return {"x": pipeline.with_options(options), "steps_per_epoch": len(batches), "shuffle": False}


class EpochRecord(keras.callbacks.Callback):
    """Validates each epoch by a padded ``predict`` (compiled once, as the final evaluation's) and the compiled loss,
    and adds the timings; runs first among the epoch-end callbacks, so the others see the validation metrics."""

    def __init__(self, val: Split, n_train_per_epoch: int, loss: keras.losses.Loss, batch_size: int) -> None:
        super().__init__()
        self.val_images, self.val_targets = val.images, one_hot(val.labels)
        self.n_train_per_epoch, self.loss, self.batch_size = n_train_per_epoch, loss, batch_size
        self._start = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is None:
            return
        train_seconds = time.perf_counter() - self._start  # the logs are host floats by now: the steps are done
        probabilities = predict_proba(self.model, self.val_images, batch_size=self.batch_size)
        predicted = probabilities.argmax(axis=1)
        truth = self.val_targets.argmax(axis=1)
        top2 = np.argsort(probabilities, axis=1)[:, -2:]
        logs["val_loss"] = float(keras.ops.convert_to_numpy(self.loss(self.val_targets, probabilities)))
        logs["val_accuracy"] = float(np.mean(predicted == truth))
        logs["val_top2_accuracy"] = float(np.mean((top2 == truth[:, None]).any(axis=1)))
        logs["epoch_seconds"] = time.perf_counter() - self._start
        logs["train_images_per_second"] = self.n_train_per_epoch / train_seconds if train_seconds > 0 else math.nan
        logs.setdefault("learning_rate", float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))


class SwapEma(keras.callbacks.Callback):
    """Swaps the weights with their moving average, and back when called again: placed around the callbacks that
    validate, select and record, while the backup keeps the raw ones (Keras's SwapEMAWeights swaps all of them)."""

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        optimizer = self.model.optimizer
        for variable, average in zip(optimizer._trainable_variables, optimizer._model_variables_moving_average):
            raw = keras.ops.convert_to_numpy(variable)
            variable.assign(average)
            average.assign(raw)


class StopOnDivergence(keras.callbacks.Callback):
    """Stops at the first epoch whose training loss is not finite, saying what to try (TerminateOnNaN is per batch)."""

    def __init__(self, model_name: str, config: TrainConfig) -> None:
        super().__init__()
        self.model_name, self.config = model_name, config

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            rate = self.config.learning_rate
            hint = " or mixed_precision=false" if self.config.mixed_precision else ""
            raise TrainingDiverged(
                f"{self.model_name} diverged in epoch {epoch + 1} of {self.config.epochs}: the training loss is "
                f"{loss}. Training stopped there. Try a lower learning_rate (it is {rate:g}; e.g. "
                f"-p learning_rate={rate / 10:g}){hint}.")


class HistoryFile(keras.callbacks.CSVLogger):
    """Keras's CSVLogger (appending, so a resumed run continues its file) with epochs numbered from 1."""

    def __init__(self, path: Path) -> None:
        super().__init__(str(path), append=True)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        super().on_epoch_end(epoch + 1, logs)


class BestWeights(keras.callbacks.Callback):
    """Keeps a host copy of the weights of the best epoch on ``monitor`` (no file write per improvement)."""

    def __init__(self, monitor: str, mode: str) -> None:
        super().__init__()
        self.monitor, self.mode = monitor, mode
        self.best_value: float | None = None
        self.best_epoch: int | None = None  # from 1, as in history.csv
        self.weights: list[np.ndarray] | None = None

    def improves(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.best_value is None:
            return True
        return value > self.best_value if self.mode == "max" else value < self.best_value

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        value = (logs or {}).get(self.monitor)
        if value is not None and self.improves(float(value)):
            self.best_value, self.best_epoch = float(value), epoch + 1
            self.weights = self.model.get_weights()

    def save(self, folder: Path) -> None:
        """Write the best weights and their epoch and value beside the backup, as one file replaced atomically."""
        if self.weights is None:
            return
        arrays = {f"weight_{i}": weight for i, weight in enumerate(self.weights)}
        with open(folder / "best.npz.tmp", "wb") as handle:
            np.savez(handle, best_value=self.best_value, best_epoch=self.best_epoch, **arrays)
        os.replace(folder / "best.npz.tmp", folder / "best.npz")

    def load(self, folder: Path) -> None:
        if not (folder / "best.npz").is_file():
            return
        with np.load(folder / "best.npz") as stored:
            self.weights = [stored[f"weight_{i}"] for i in range(len(stored.files) - 2)]
            self.best_value, self.best_epoch = float(stored["best_value"]), int(stored["best_epoch"])


class PeriodicBackup(keras.callbacks.BackupAndRestore):
    """Keras's BackupAndRestore with the best weights beside it, written every N epochs or M seconds; ``async_safe``:
    its inherited batch hook does nothing with ``save_freq="epoch"``."""

    async_safe = True

    def __init__(self, backup_dir: Path, best: BestWeights, *, every_epochs: int | None, every_seconds: float) -> None:
        # double_checkpoint: the previous backup is kept until the new one is written, so a kill while writing
        # falls back to it instead of leaving a corrupt file
        super().__init__(str(backup_dir), save_freq="epoch", delete_checkpoint=True, double_checkpoint=True)
        self.best, self.every_epochs, self.every_seconds = best, every_epochs, every_seconds
        self._last_save = time.monotonic()
        self._epochs_since_save = 0

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._current_epoch = epoch + 1
        self._epochs_since_save += 1
        if self._current_epoch >= self.params.get("epochs", math.inf):
            return  # training ends now: on_train_end removes the backup anyway
        epochs_due = self.every_epochs is not None and self._epochs_since_save >= self.every_epochs
        if epochs_due or time.monotonic() - self._last_save >= self.every_seconds:
            self._save_model()
            self.best.save(Path(self.backup_dir))
            self._last_save, self._epochs_since_save = time.monotonic(), 0


class ProgressFile(keras.callbacks.Callback):
    """Writes ``progress.json`` after every epoch (atomically): what the runner shows while a notebook trains."""

    def __init__(self, path: Path, model_name: str, epochs: int) -> None:
        super().__init__()
        self.path, self.model_name, self.epochs = path, model_name, epochs
        self._started = time.monotonic()
        self._first_epoch: int | None = None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        if self._first_epoch is None:
            self._first_epoch = epoch
        per_epoch = (time.monotonic() - self._started) / (epoch + 1 - self._first_epoch)
        write_json(self.path, {"model": self.model_name, "epoch": epoch + 1, "epochs": self.epochs,
                               "accuracy": logs.get("accuracy"), "val_accuracy": logs.get("val_accuracy"),
                               "loss": logs.get("loss"), "images_per_second": logs.get("train_images_per_second"),
                               "seconds_left": per_epoch * (self.epochs - epoch - 1)})


def train_model(dataset: FerDataset, model_name: str, params: TrainConfig, out_dir: str | Path,
                *, model_options: Config | None = None, augmentation: AugmentConfig | None = None,
                extra_callbacks: Sequence[keras.callbacks.Callback] = ()) -> TrainResult:
    """Train ``model_name`` on ``dataset.train``, select on ``dataset.val``, and keep every record in ``out_dir``.

    Calling again resumes a killed run from ``backup/``; a finished one (``best.keras``) is refused, never overwritten.
    With several devices, evaluate in ``TrainResult.distribution``."""
    require_config(params, TrainConfig, "train_model's params")
    with distribution_scope(make_distribution(params)):  # made first: it may join the other processes
        return _train_in_scope(dataset, model_name, params, out_dir, model_options, augmentation, extra_callbacks)


def _train_in_scope(dataset: FerDataset, model_name: str, config: TrainConfig, out_dir: str | Path,
                    model_options: Config | None, augmentation: AugmentConfig | None,
                    extra_callbacks: Sequence[keras.callbacks.Callback]) -> TrainResult:
    """:func:`train_model` in the distribution's scope: the model's variables live on every device of its mesh."""
    require_config(augmentation, AugmentConfig, "train_model's augmentation", optional=True)
    options = model_options if model_options is not None else default_options(model_name)
    config.check_training_split(len(dataset.train))
    out_dir = Path(out_dir)
    history_file, backup_dir = out_dir / HISTORY_FILE, out_dir / BACKUP_DIR
    if (out_dir / BEST_MODEL_FILE).exists():
        raise FileExistsError(f"'{out_dir}' already holds a finished training run ({BEST_MODEL_FILE}); runs never "
                              f"overwrite each other, choose a new folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    resumed_from = _backup_epoch(backup_dir)
    _keep_history_rows(history_file, resumed_from)  # epochs after the last backup are trained again

    distribution = keras.distribution.distribution()  # the one train_model made (None: one device)
    keras.utils.set_random_seed(config.seed)
    model = build_model(model_name, options, augmentation=augmentation, mixed_precision=config.mixed_precision,
                        seed=config.seed, bn_momentum=config.bn_momentum)
    batches = TrainBatches(dataset.train, config.batch_size, seed=config.seed, first_epoch=resumed_from,
                           class_weights=class_weight_vector(dataset.train.labels, config.class_weights),
                           mixup_alpha=config.mixup_alpha, cutmix_alpha=config.cutmix_alpha,
                           mix_probability=config.mix_probability, share=process_share())
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing)
    optimizer = make_optimizer(config, len(batches))
    if config.decay_kernels_only:
        kernels_only(optimizer, model)
    model.compile(optimizer=optimizer, loss=loss, jit_compile=config.jit_compile,
                  metrics=[keras.metrics.CategoricalAccuracy(name="accuracy"),
                           keras.metrics.TopKCategoricalAccuracy(k=2, name="top2_accuracy")])
    write_json(out_dir / TRAIN_CONFIG_FILE, {
        "model": model_name, "model_options": options.as_dict(),
        "augmentation": {} if augmentation is None else augmentation.as_dict(), "train": config.as_dict(),
        "data": {"source": dataset.source, "fingerprint": dataset.fingerprint, "synthetic": dataset.is_synthetic,
                 "val_origin": dataset.val_origin, "n_train": len(dataset.train), "n_val": len(dataset.val)},
        "distribution": distribution_record(distribution, config)})

    best = BestWeights(config.monitor, "max" if config.monitor.endswith("accuracy") else "min")
    if resumed_from:
        best.load(backup_dir)
    callbacks = training_callbacks(config, model_name, dataset, out_dir, best, loss,
                                   n_train_per_epoch=len(batches) * config.batch_size,  # every device's images
                                   devices=device_count(distribution))
    callbacks.extend(extra_callbacks)

    started = time.perf_counter()
    model.fit(**fit_inputs(batches, config.epochs), epochs=config.epochs, initial_epoch=resumed_from,
              callbacks=callbacks, verbose=config.verbose)
    train_seconds = time.perf_counter() - started

    history = read_history(history_file)
    if best.weights is not None:
        model.set_weights(best.weights)
    best_row = history.index[history["epoch"] == best.best_epoch][0] if best.best_epoch else history.index[-1]
    record = {"best_epoch": int(history["epoch"][best_row]), "best_value": float(history[config.monitor][best_row]),
              "monitor": config.monitor, "train_seconds": train_seconds, "resumed_from_epoch": resumed_from}
    write_json(out_dir / TRAINING_FILE, record)
    save_inference_model(model, out_dir / BEST_MODEL_FILE)  # last: its presence means "training finished"
    return TrainResult(model=model, history=history, out_dir=out_dir, distribution=distribution, **record)


def device_count(distribution: keras.distribution.Distribution | None) -> int:
    """The devices a distribution spans (1 without one): every prediction's batch must divide by them."""
    return 1 if distribution is None else int(distribution.device_mesh.devices.size)


def is_finished(out_dir: str | Path) -> bool:
    """True when ``out_dir`` holds a finished training run (its best model was saved)."""
    return (Path(out_dir) / BEST_MODEL_FILE).is_file() and (Path(out_dir) / TRAINING_FILE).is_file()


def load_finished(out_dir: str | Path) -> TrainResult:
    """The :class:`TrainResult` of a finished run, from its files (e.g. to evaluate again after an interruption)."""
    out_dir = Path(out_dir)
    if not is_finished(out_dir):
        raise FileNotFoundError(f"'{out_dir}' holds no finished training run ({BEST_MODEL_FILE} and {TRAINING_FILE})")
    model = load_inference_model(out_dir / BEST_MODEL_FILE)
    return TrainResult(model=model, history=read_history(out_dir / HISTORY_FILE), out_dir=out_dir,
                       **read_json(out_dir / TRAINING_FILE))


def load_inference_model(path: str | Path) -> keras.Model:
    """The one way fer_lib loads a model saved by :func:`save_inference_model` (uncompiled), e.g. ``best.keras``;
    importing this module registers fer_lib's augmentation layers, which the saved models contain."""
    return keras.saving.load_model(path, compile=False)


def training_callbacks(config: TrainConfig, model_name: str, dataset: FerDataset, out_dir: Path, best: BestWeights,
                       loss: keras.losses.Loss, *, n_train_per_epoch: int, devices: int = 1
                       ) -> list[keras.callbacks.Callback]:
    """The epoch-end callbacks, in the order they must run (validation first, the backup after the CSV row)."""
    mode = best.mode
    callbacks: list[keras.callbacks.Callback] = [SwapEma()] if config.ema else []  # the average in ...
    callbacks += [EpochRecord(dataset.val, n_train_per_epoch, loss,
                              evaluation_batch_size(config.batch_size, dataset, devices=devices)),
                  StopOnDivergence(model_name, config)]
    if config.reduce_lr_on_plateau:
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            monitor=config.monitor, mode=mode, factor=config.plateau_factor, patience=config.plateau_patience,
            min_lr=config.learning_rate * 1e-3))
    callbacks += [best, HistoryFile(out_dir / HISTORY_FILE)]
    callbacks += [SwapEma()] if config.ema else []  # ... and out: the backup keeps the raw weights training goes on
    callbacks += [PeriodicBackup(out_dir / BACKUP_DIR, best, every_epochs=config.backup_every_epochs,
                                 every_seconds=config.backup_every_seconds),
                  ProgressFile(out_dir / PROGRESS_FILE, model_name, config.epochs)]
    if config.early_stopping_patience:
        callbacks.append(keras.callbacks.EarlyStopping(monitor=config.monitor, mode=mode,
                                                       patience=config.early_stopping_patience))
    return callbacks


def save_inference_model(model: keras.Model, path: Path) -> Path:
    """Save an uncompiled copy, without optimizer slots (Adam's are twice the weights); rebuilt from the config, as
    ``keras.models.clone_model`` of a compiled model compiles the clone (Keras 3.15)."""
    copy = model.__class__.from_config(model.get_config())
    copy.set_weights(model.get_weights())
    copy.save(path)
    return path


def _backup_epoch(backup_dir: Path) -> int:
    """Epochs completed by the last backup in ``backup_dir`` (0 when there is none)."""
    metadata = backup_dir / "training_metadata.json"
    if not metadata.is_file():
        return 0
    try:
        return int(read_json(metadata)["epoch"])
    except (ValueError, KeyError, TypeError):
        return 0


def _keep_history_rows(history_file: Path, rows: int) -> None:
    """Cut history.csv to its first ``rows`` epochs (all of it is removed when ``rows`` is 0)."""
    if rows == 0:
        history_file.unlink(missing_ok=True)
    elif history_file.exists():
        history = pd.read_csv(history_file)
        if len(history) > rows:
            history.iloc[:rows].to_csv(history_file, index=False)
