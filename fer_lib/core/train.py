"""Train a registered model on a loaded data set from a :class:`TrainConfig`, resumably, with its records on disk.

One call, :func:`train_model`, covers what the study needs: optimizer (with gradient-norm clipping, weight decay on
kernels only, an exponential moving average of the weights), learning-rate schedule or ReduceLROnPlateau, epochs,
batch size, label smoothing, mixup/cutmix, class weights and seed from the config; history to CSV, the best weights
on a validation metric and early stopping as callbacks. A killed run resumes from its last backup when called again
with the same ``out_dir``.

The loop is built to keep an accelerator busy (it is the one training program of the study: the benchmark times it
too):

* every callback is epoch-level, so Keras keeps asynchronous step dispatch (a callback that overrides
  ``on_train_batch_end``, as BackupAndRestore and ModelCheckpoint do, makes Keras wait for the device after every
  batch);
* training uses full batches only (a fresh seeded shuffle per epoch, the remainder left out for that epoch) and
  validation pads its last batch, so XLA compiles each step function once instead of twice;
* on TensorFlow (the CPU), those batches reach ``fit`` as arrays in a tf.data pipeline rather than through Python
  (:func:`fit_inputs`: twice the steps per second on 2 cores);
* validation is a padded ``predict`` whose compiled function the final evaluation reuses;
* the best weights are kept in host memory, and the resumable backup (weights plus optimizer state) is written every
  ``backup_every_seconds`` / ``backup_every_epochs``, not after every 3-second GPU epoch;
* with ``distribution`` on (JAX), the model is built, trained and evaluated inside a
  ``keras.distribution.DataParallel`` scope: each device takes an equal share of every batch (all of the above holds
  unchanged), and with several processes (machines) each feeds only its share (:func:`make_distribution`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd

from fer_lib.core.config import (MODEL_OPTIONS, AugmentConfig, Config, TrainConfig, launch_from_environment,
                                 require_config)
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
    """Keras's ``use_ema`` with its momentum warmed up as TensorFlow's ExponentialMovingAverage(num_updates) does:
    min(ema_momentum, (1 + n) / (10 + n)) at step n.

    Keras averages from the first step with the fixed momentum, so after n steps the average still holds
    momentum**n of the first step's (near-random) weights: 0.999**2000 = 14%. On a 12-epoch CPU run of the strong
    protocol that kept validation at the majority class (benchmarks/results/2026-12-02-tensorflow-protocols-fer2013
    .json, its first record); with the warmup the average holds no more than recent steps.
    """

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
    """Keras's DataParallel; with several processes, the model's output is replicated on every device.

    Keras's ``predict`` returns host arrays, and a batch-sharded output would span the other machines' devices,
    which no process can read: replicated (a gather of 7 probabilities per image), every process reads every
    prediction. One process has all its devices at hand and keeps the output sharded.
    """

    def get_tensor_layout(self, path: str) -> keras.distribution.TensorLayout | None:
        if self.num_processes > 1 and path.split("/")[-2:] == ["predictions", "output"]:
            return keras.distribution.TensorLayout([None, None], self.device_mesh)
        return None


_JOINED = False  # keras.distribution.initialize may run once per process


def join_processes() -> int:
    """Join the other processes of a multi-machine run, once, before JAX computes anything; their number.

    ``keras.distribution.initialize`` reads KERAS_DISTRIBUTION_JOB_ADDRESSES (the coordinator's host:port),
    KERAS_DISTRIBUTION_NUM_PROCESSES and KERAS_DISTRIBUTION_PROCESS_ID; with those unset, JAX finds Slurm's (srun)
    and Open MPI's (mpirun) own variables.
    """
    global _JOINED
    processes, _ = launch_from_environment()
    if processes > 1 and not _JOINED:
        keras.distribution.initialize()
        _JOINED = True
    return processes


def make_distribution(config: TrainConfig) -> DataParallel | None:
    """The run's DataParallel (None: one device), by the rule of ``TrainConfig.distribution_devices``.

    The batch must divide by its devices (a ParamsError otherwise). Data is sharded by the training loop itself
    (``auto_shard_dataset=False``): each process's :class:`TrainBatches` yields its share of every global batch,
    and every prediction feeds each process's share of every padded batch (``evaluate.predict_proba``).
    """
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
    """The training split as full batches: a fresh shuffle per epoch, seeded by (seed, epoch), remainder left out;
    with mixup or cutmix, each batch mixed with a seeded permutation of itself and its targets mixed alike.

    Every batch has the same shape, so XLA compiles the train step once (a ragged last batch compiles it a second
    time). Which images sit out an epoch changes with the shuffle; seeding by epoch (and batch, for the mixing) makes
    a resumed run draw the same batches as an uninterrupted one. Fit it with ``shuffle=False`` (:func:`fit_inputs`
    does): Keras would otherwise shuffle the batch order once more, with Python's global random state. The mixing
    runs on the host, on raw pixels, before the model's own augmentation: no step of the model changes. ``share``
    (process index, processes) makes it yield only this process's consecutive share of every global batch of
    ``batch_size`` (cut after the mixing): the processes of a multi-machine run together train on the very batches
    one process would.
    """

    def __init__(self, split: Split, batch_size: int, *, seed: int, first_epoch: int = 0,
                 class_weights: np.ndarray | None = None, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0,
                 mix_probability: float = 1.0, share: tuple[int, int] = (0, 1)) -> None:
        super().__init__()
        self.share = share
        self.images = split.images
        self.targets = one_hot(split.labels)
        self.sample_weights = None if class_weights is None else class_weights[split.labels].astype("float32")
        self.batch_size = batch_size
        self.seed = seed
        self.mixing = [(name, alpha) for name, alpha in (("mixup", mixup_alpha), ("cutmix", cutmix_alpha)) if alpha]
        self.mix_probability = mix_probability
        self.epoch = first_epoch
        self._order = self._permutation(first_epoch)
        self._in_epoch = False

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
        """The batches of epochs ``self.epoch`` .. ``epochs - 1`` one after another, as (images, targets[, weights]).

        Exactly what iterating this sequence yields as ``fit`` drives it (``on_epoch_begin`` and ``on_epoch_end``
        around each epoch), so ``fit`` fed these arrays unshuffled with ``steps_per_epoch=len(self)`` trains on the
        same batches in the same order.
        """
        batches = [self.batch(epoch, index, self._permutation(epoch))
                   for epoch in range(self.epoch, epochs) for index in range(len(self))]
        if not batches:
            return tuple(np.zeros((0, *a.shape[1:]), a.dtype) for a in self.batch(self.epoch, 0, self._order))
        return tuple(np.concatenate(parts) for parts in zip(*batches))


def mix_batch(images: np.ndarray, targets: np.ndarray, rng: np.random.Generator,
              mixing: Sequence[tuple[str, float]], probability: float) -> tuple[np.ndarray, np.ndarray]:
    """Mixup or cutmix of one batch with a permutation of itself (timm's batch mode), targets mixed alike.

    With ``probability``, one of ``mixing`` (chosen evenly) mixes the batch: mixup blends every image with its
    partner by lambda ~ Beta(alpha, alpha) (rounded to whole grey levels: the images stay uint8); cutmix pastes the
    partner's box of area share 1 - lambda (clipped to the image; lambda then is the share left). Targets become
    lambda * own + (1 - lambda) * partner's, so each row still sums to 1.
    """
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
    """The data arguments of ``model.fit`` for ``batches``: the same batches in the same order either way.

    On TensorFlow, the remaining epochs' batches as one tf.data pipeline over arrays, with tf.data's autotuning
    off. Measured on a 2-core CPU (benchmarks/results/*-smoke-feed-*.json), a ResNet50V2 step then runs about
    twice as fast as when a PyDataset's batches cross from Python through ``from_generator``; and with autotuning
    on, the pipeline's end waits for the autotuner's thread to wake (0 to 60 s after the last epoch, seen as a
    25-40 s pause after ResNet50V2's last epoch). This is fer_lib's one use of the TensorFlow API: Keras offers no
    switch for either, and it is imported only on the TensorFlow backend (the GPU machines have no TensorFlow).
    Elsewhere (JAX iterates batches in Python either way), or when the arrays would pass
    ``ARRAY_FEED_LIMIT_BYTES``, the PyDataset itself.
    """
    if keras.backend.backend() != "tensorflow" or batches.remaining_epochs_nbytes(epochs) > ARRAY_FEED_LIMIT_BYTES:
        return {"x": batches, "shuffle": False}  # Keras would shuffle the batch order again, with Python's random
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    pipeline = tf.data.Dataset.from_tensor_slices(batches.remaining_epochs(epochs)).batch(batches.batch_size)
    return {"x": pipeline.with_options(options), "steps_per_epoch": len(batches), "shuffle": False}


class EpochRecord(keras.callbacks.Callback):
    """Validates at the end of each epoch and adds what history.csv records beside the training metrics.

    Validation is a padded ``predict`` (one compiled function, shared with the final evaluation) scored with the
    compiled loss, so ``val_loss``/``val_accuracy``/``val_top2_accuracy`` mean what Keras's own validation means.
    ``train_images_per_second`` counts training time only; ``epoch_seconds`` includes validation. Runs first among
    the epoch-end callbacks, so the others (checkpoint, early stopping, the CSV) see the validation metrics.
    """

    def __init__(self, val: Split, n_train_per_epoch: int, loss: keras.losses.Loss, batch_size: int) -> None:
        super().__init__()
        self.val_images, self.val_targets = val.images, one_hot(val.labels)
        self.n_train_per_epoch = n_train_per_epoch
        self.loss = loss
        self.batch_size = batch_size
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
    """Swaps the model's weights with the optimizer's moving average of them (Keras's ``use_ema``), and back when
    called again: placed around the epoch-end callbacks that validate, select and record, so that they see the
    averaged weights while training and the resumable backup go on with the raw ones. (Keras's SwapEMAWeights swaps
    around its own evaluation, or for a whole epoch end; the backup needs the raw weights within it.)"""

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        optimizer = self.model.optimizer
        for variable, average in zip(optimizer._trainable_variables, optimizer._model_variables_moving_average):
            raw = keras.ops.convert_to_numpy(variable)
            variable.assign(average)
            average.assign(raw)


class StopOnDivergence(keras.callbacks.Callback):
    """Stops at the first epoch whose training loss is NaN or infinite, naming the model, the epoch and a remedy.

    Epoch-level (Keras's TerminateOnNaN checks every batch and so turns off asynchronous dispatch).
    """

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
    """Keras's BackupAndRestore (weights and optimizer state), written every N epochs or M seconds, not every epoch.

    With the best weights beside it, so a resumed run keeps its best epoch. Declared ``async_safe``: it saves only at
    epoch ends, so its (inherited, no-op for ``save_freq="epoch"``) batch hook need not stop asynchronous dispatch.
    """

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
        due = time.monotonic() - self._last_save >= self.every_seconds
        if self.every_epochs is not None and self._epochs_since_save >= self.every_epochs:
            due = True
        if due:
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
        done = epoch + 1 - self._first_epoch
        per_epoch = (time.monotonic() - self._started) / done
        record = {"model": self.model_name, "epoch": epoch + 1, "epochs": self.epochs,
                  "accuracy": logs.get("accuracy"), "val_accuracy": logs.get("val_accuracy"),
                  "loss": logs.get("loss"), "images_per_second": logs.get("train_images_per_second"),
                  "seconds_left": per_epoch * (self.epochs - epoch - 1)}
        write_json(self.path, record)


def _in_distribution_scope(train: Callable[..., TrainResult]) -> Callable[..., TrainResult]:
    """Run ``train`` inside the scope of the config's distribution (:func:`make_distribution`), so that the model is
    built, compiled, trained and saved with its variables on every device of the mesh; the distribution is made
    first, as it may have to join the other processes before anything computes."""
    @functools.wraps(train)
    def in_scope(dataset: FerDataset, model_name: str, params: TrainConfig, out_dir: str | Path,
                 **kwargs: Any) -> TrainResult:
        require_config(params, TrainConfig, "train_model's params")
        with distribution_scope(make_distribution(params)):
            return train(dataset, model_name, params, out_dir, **kwargs)
    return in_scope


@_in_distribution_scope
def train_model(dataset: FerDataset, model_name: str, params: TrainConfig, out_dir: str | Path,
                *, model_options: Config | None = None, augmentation: AugmentConfig | None = None,
                extra_callbacks: Sequence[keras.callbacks.Callback] = ()) -> TrainResult:
    """Train ``model_name`` on ``dataset.train``, select on ``dataset.val``, and keep every record in ``out_dir``.

    ``out_dir`` gets ``history.csv`` (one row per epoch), ``best.keras`` (the model at its best epoch on ``monitor``,
    without optimizer state), ``train_config.json``, ``progress.json`` and, while training, ``backup/`` for
    resuming. Calling again with the ``out_dir`` of a killed run resumes it from its last backup (epochs after the
    backup are trained again and recorded once); the ``out_dir`` of a finished run is refused rather than
    overwritten. A NaN or infinite training loss stops training with :class:`TrainingDiverged`.

    ``params`` is a :class:`TrainConfig`, ``model_options`` the model's typed options (None: its defaults) and
    ``augmentation`` an :class:`AugmentConfig` (None: none); mappings are a TypeError: the configs are built where
    the params come in (fer_lib.app.study.run_model does, from resolved params). With ``params.distribution`` on
    several devices, all of it runs in that DataParallel's scope (``TrainResult.distribution``: evaluate in it too).
    """
    require_config(params, TrainConfig, "train_model's params")
    require_config(augmentation, AugmentConfig, "train_model's augmentation", optional=True)
    config = params
    options = model_options if model_options is not None else MODEL_OPTIONS[model_name]()
    config.check_training_split(len(dataset.train))
    out_dir = Path(out_dir)
    history_file, backup_dir = out_dir / HISTORY_FILE, out_dir / BACKUP_DIR
    if (out_dir / BEST_MODEL_FILE).exists():
        raise FileExistsError(f"'{out_dir}' already holds a finished training run ({BEST_MODEL_FILE}); runs never "
                              f"overwrite each other, choose a new folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    resumed_from = _backup_epoch(backup_dir)
    _keep_history_rows(history_file, resumed_from)  # epochs after the last backup are trained again

    distribution = keras.distribution.distribution()  # the one @_in_distribution_scope made (None: one device)
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
    model.compile(
        optimizer=optimizer,
        loss=loss,
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy"),
                 keras.metrics.TopKCategoricalAccuracy(k=2, name="top2_accuracy")],
        jit_compile=config.jit_compile,
    )
    write_json(out_dir / TRAIN_CONFIG_FILE, {
        "model": model_name, "model_options": options.as_dict(),
        "augmentation": {} if augmentation is None else augmentation.as_dict(), "train": config.as_dict(),
        "data": {"source": dataset.source, "fingerprint": dataset.fingerprint, "synthetic": dataset.is_synthetic,
                 "val_origin": dataset.val_origin, "n_train": len(dataset.train), "n_val": len(dataset.val)},
        "distribution": distribution_record(distribution, config)})

    mode = "max" if config.monitor.endswith("accuracy") else "min"
    best = BestWeights(config.monitor, mode)
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
    """A model saved by :func:`save_inference_model` (uncompiled), e.g. ``best.keras``.

    The one way fer_lib loads a trained model (resumed evaluation, occlusion maps, predict on photos); importing this
    module registers fer_lib's augmentation layer, which the saved models contain.
    """
    return keras.saving.load_model(path, compile=False)


def training_callbacks(config: TrainConfig, model_name: str, dataset: FerDataset, out_dir: Path, best: BestWeights,
                       loss: keras.losses.Loss, *, n_train_per_epoch: int, devices: int = 1
                       ) -> list[keras.callbacks.Callback]:
    """The epoch-end callbacks, in the order they must run (validation first, the backup after the CSV row)."""
    mode = best.mode
    callbacks: list[keras.callbacks.Callback] = [SwapEma()] if config.ema else []  # the average in ...
    callbacks += [
        EpochRecord(dataset.val, n_train_per_epoch, loss,
                    evaluation_batch_size(config.batch_size, dataset, devices=devices)),
        StopOnDivergence(model_name, config),
    ]
    if config.reduce_lr_on_plateau:
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            monitor=config.monitor, mode=mode, factor=config.plateau_factor, patience=config.plateau_patience,
            min_lr=config.learning_rate * 1e-3))
    callbacks += [best, HistoryFile(out_dir / HISTORY_FILE)]
    callbacks += [SwapEma()] if config.ema else []  # ... and out: the backup keeps the raw weights training goes on with
    callbacks += [
        PeriodicBackup(out_dir / BACKUP_DIR, best, every_epochs=config.backup_every_epochs,
                       every_seconds=config.backup_every_seconds),
        ProgressFile(out_dir / PROGRESS_FILE, model_name, config.epochs),
    ]
    if config.early_stopping_patience:
        callbacks.append(keras.callbacks.EarlyStopping(monitor=config.monitor, mode=mode,
                                                       patience=config.early_stopping_patience))
    return callbacks


def save_inference_model(model: keras.Model, path: Path) -> Path:
    """Save architecture and weights only: an uncompiled copy, so no optimizer slots (Adam's are twice the weights).

    ``keras.models.clone_model`` of a compiled model compiles the clone (Keras 3.15), so the copy is rebuilt from
    the model's config instead.
    """
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
    if not history_file.exists():
        return
    if rows == 0:
        history_file.unlink()
        return
    history = pd.read_csv(history_file)
    if len(history) > rows:
        history.iloc[:rows].to_csv(history_file, index=False)
