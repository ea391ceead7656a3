"""Throughput benchmark: training and inference images/s, compile time and time-to-target accuracy per model.

Runs on whatever device Keras's backend finds (TensorFlow on CPU here, JAX with CUDA on a GPU box) and writes a JSON
record with the device, versions and settings, so that numbers are only ever compared with their context.
Augmentation is part of the measured model, as in real training.
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from fer_lib.augment import PAPER_AUGMENTATION
from fer_lib.cli import device_info, package_versions
from fer_lib.data import FerDataset
from fer_lib.models import build_model
from fer_lib.train import TrainConfig, make_optimizer, one_hot


class _EpochClock(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []
        self._start = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.seconds.append(time.perf_counter() - self._start)


def benchmark_model(name: str, *, batch_size: int = 128, steps: int = 20, mixed_precision: bool = False,
                    model_options: dict[str, Any] | None = None, seed: int = 0) -> dict[str, Any]:
    """Train two epochs of ``steps`` batches on random pixels: the first pays compilation, the second is steady."""
    rng = np.random.default_rng(seed)
    n = batch_size * steps
    images = rng.integers(0, 256, (n, 48, 48, 1), dtype=np.uint8)
    targets = one_hot(rng.integers(0, 7, n))
    model = build_model(name, augmentation=PAPER_AUGMENTATION, mixed_precision=mixed_precision, seed=seed,
                        **(model_options or {}))
    config = TrainConfig(epochs=2, batch_size=batch_size)
    model.compile(optimizer=make_optimizer(config, steps), loss="categorical_crossentropy", jit_compile="auto")
    clock = _EpochClock()
    model.fit(images, targets, batch_size=batch_size, epochs=3, shuffle=False, verbose=0, callbacks=[clock])
    steady = float(np.median(clock.seconds[1:]))
    model.predict(images[: batch_size * 2], batch_size=batch_size * 2, verbose=0)  # compile inference
    started = time.perf_counter()
    model.predict(images, batch_size=batch_size * 2, verbose=0)
    inference_seconds = time.perf_counter() - started
    return {
        "model": name, "params": int(model.count_params()), "batch_size": batch_size, "images_per_epoch": n,
        "mixed_precision": mixed_precision, "jit_compile": bool(model.jit_compile),
        "train_images_per_second": n / steady, "first_epoch_seconds": clock.seconds[0],
        "compile_seconds_estimate": max(0.0, clock.seconds[0] - steady),
        "inference_images_per_second": n / inference_seconds,
        "model_options": model_options or {},
    }


def time_to_accuracy(dataset: FerDataset, name: str, target: float, *, max_epochs: int = 50,
                     params: dict[str, Any] | None = None, model_options: dict[str, Any] | None = None
                     ) -> dict[str, Any]:
    """Wall time until validation accuracy first reaches ``target`` (or None within ``max_epochs``)."""
    config = TrainConfig.from_mapping({"epochs": max_epochs, "verbose": 0, **(params or {})})
    model = build_model(name, augmentation=PAPER_AUGMENTATION, mixed_precision=config.mixed_precision,
                        seed=config.seed, **(model_options or {}))
    model.compile(optimizer=make_optimizer(config, int(np.ceil(len(dataset.train) / config.batch_size))),
                  loss="categorical_crossentropy", metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
                  jit_compile=config.jit_compile)
    reached: dict[str, Any] = {"epoch": None, "seconds": None}
    started = time.perf_counter()

    class StopAtTarget(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            if logs and logs.get("val_accuracy", 0.0) >= target and reached["epoch"] is None:
                reached.update(epoch=epoch + 1, seconds=time.perf_counter() - started)
                self.model.stop_training = True

    history = model.fit(dataset.train.images, one_hot(dataset.train.labels), batch_size=config.batch_size,
                        epochs=config.epochs, validation_data=(dataset.val.images, one_hot(dataset.val.labels)),
                        callbacks=[StopAtTarget()], verbose=0)
    return {"model": name, "target_val_accuracy": target, "reached_at_epoch": reached["epoch"],
            "seconds_to_target": reached["seconds"], "best_val_accuracy": float(max(history.history["val_accuracy"])),
            "epochs_run": len(history.history["val_accuracy"]), "data": dataset.source}


def run_benchmark(models: Sequence[str] = ("basic_cnn", "resnet50v2"), *, batch_size: int = 128, steps: int = 20,
                  mixed_precision: bool = False, out_dir: str | Path = "benchmarks/results",
                  model_options: dict[str, dict[str, Any]] | None = None,
                  time_to_target: list[dict[str, Any]] | None = None, note: str = "") -> Path:
    """Benchmark each model and write ``<date>-<backend>-<device>.json`` under ``out_dir``; returns its path."""
    device = device_info()
    record: dict[str, Any] = {
        "date": _dt.datetime.now().isoformat(timespec="seconds"), "device": device["summary"],
        "device_details": device, "backend": keras.backend.backend(), "versions": package_versions(),
        "settings": {"batch_size": batch_size, "steps_per_epoch": steps, "mixed_precision": mixed_precision,
                     "augmentation": "paper"},
        "note": note,
        "throughput": [benchmark_model(name, batch_size=batch_size, steps=steps, mixed_precision=mixed_precision,
                                       model_options=(model_options or {}).get(name)) for name in models],
        "time_to_target": time_to_target or [],
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device_slug = "".join(c if c.isalnum() else "-" for c in record["device"].split(",")[0]).strip("-")[:40]
    path = out / f"{record['date'][:10]}-{keras.backend.backend()}-{device_slug}.json"
    counter = 2
    while path.exists():
        path = path.with_name(f"{path.stem.rsplit('--', 1)[0]}--{counter}.json")
        counter += 1
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path
