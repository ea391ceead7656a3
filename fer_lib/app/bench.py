"""Throughput benchmark of the study's own training step: training and inference images/s and compile time.

Each model runs :func:`fer_lib.core.train.train_model` with the params' full schedule, stopped once enough steps are
timed, so the compiled programs are the study's own (on JAX its persistent cache then serves the study that follows).
"""

from __future__ import annotations

import datetime as _dt
import math
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from fer_lib.app import runs
from fer_lib.app.provenance import device_info, package_versions
from fer_lib.core import records
from fer_lib.core.config import AugmentConfig, TrainConfig, model_options
from fer_lib.core.data import FerDataset
from fer_lib.core.evaluate import evaluation_batch_size, predict_proba
from fer_lib.core.train import device_count, distribution_scope, steps_per_epoch, train_model


class _StopAfter(keras.callbacks.Callback):
    def __init__(self, epochs: int) -> None:
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if epoch + 1 >= self.epochs:
            self.model.stop_training = True


def benchmark_model(dataset: FerDataset, name: str, params: Mapping[str, Any], *, min_timed_steps: int = 200,
                    inference_repeats: int = 3) -> dict[str, Any]:
    """Time ``name`` in the study's loop: first epoch (with compilation), then at least ``min_timed_steps`` steps."""
    config = TrainConfig.from_mapping({**params, "verbose": 0}, ignore_unknown=True)
    steps = steps_per_epoch(len(dataset.train), config.batch_size)
    measured_epochs = 1 + max(1, math.ceil(min_timed_steps / max(1, steps)))
    config = TrainConfig.from_mapping({**config.as_dict(), "epochs": max(config.epochs, measured_epochs)})
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as folder:
        result = train_model(dataset, name, config, Path(folder) / name,
                             model_options=model_options(name, dict(params.get("model_options", {})).get(name)),
                             augmentation=AugmentConfig.from_mapping(params.get("augmentation")),
                             extra_callbacks=[_StopAfter(measured_epochs)])
    history = result.history
    images_per_epoch = steps * config.batch_size
    train_seconds = images_per_epoch / history["train_images_per_second"].to_numpy()
    steady = float(np.median(train_seconds[1:]))
    devices = device_count(result.distribution)
    batch = evaluation_batch_size(config.batch_size, dataset, devices=devices)
    images = dataset.test.images
    with distribution_scope(result.distribution):
        predict_proba(result.model, images, batch_size=batch)  # compiled already by validation; this warms the cache
        started = time.perf_counter()
        for _ in range(inference_repeats):
            predict_proba(result.model, images, batch_size=batch)
        inference_seconds = (time.perf_counter() - started) / inference_repeats
    return {
        "model": name, "params": int(result.model.count_params()), "batch_size": config.batch_size,
        "steps_per_epoch": steps, "images_per_epoch": images_per_epoch, "epochs_measured": int(len(history)),
        "timed_steps": int(steps * (len(history) - 1)), "mixed_precision": config.mixed_precision,
        "jit_compile": bool(result.model.jit_compile), "distribution": config.distribution, "devices": devices,
        "train_images_per_second": images_per_epoch / steady,
        "train_images_per_second_per_epoch": [float(v) for v in history["train_images_per_second"]],
        "first_epoch_train_seconds": float(train_seconds[0]), "steady_epoch_train_seconds": steady,
        "compile_seconds_estimate": max(0.0, float(train_seconds[0]) - steady),
        "inference_batch_size": batch, "inference_images": int(len(images)),
        "inference_images_per_second": len(images) / inference_seconds,
        "model_options": dict(params.get("model_options", {})).get(name, {}),
    }


def run_benchmark(dataset: FerDataset, params: Mapping[str, Any], *, out_dir: str | Path = "benchmarks/results",
                  min_timed_steps: int = 200, note: str = "", tag: str = "",
                  scaling: Sequence[str | int] = ()) -> Path:
    """Benchmark each model of ``params`` into ``<out_dir>/<date>-<backend>-<device>[-<tag>].json``: ``throughput`` in
    the params' distribution (what estimates read), ``scaling`` again per setting (e.g. ``none``), relative to it."""
    device = device_info()
    throughput, scaled = [], []
    for name in params["models"]:
        measured = benchmark_model(dataset, name, params, min_timed_steps=min_timed_steps)  # params' distribution
        throughput.append(measured)
        print(f"benchmark {name}: {measured['train_images_per_second']:,.0f} training images/s, "
              f"{measured['inference_images_per_second']:,.0f} inference images/s, compile "
              f"~{measured['compile_seconds_estimate']:.1f} s ({measured['devices']} device(s))", flush=True)
        for setting in scaling:
            row = benchmark_model(dataset, name, {**params, "distribution": setting}, min_timed_steps=min_timed_steps)
            row["relative_to_throughput"] = row["train_images_per_second"] / measured["train_images_per_second"]
            scaled.append(row)
            print(f"benchmark {name} on {row['devices']} device(s) (distribution {setting}): "
                  f"{row['train_images_per_second']:,.0f} training images/s, {row['relative_to_throughput']:.2f} x "
                  f"the {measured['devices']} device(s) above", flush=True)
    record: dict[str, Any] = {
        "date": _dt.datetime.now().isoformat(timespec="seconds"), "device": device["summary"],
        "device_details": device, "backend": keras.backend.backend(), "versions": package_versions(),
        "settings": {"params": params.get("name"), "data": dataset.source, "synthetic": dataset.is_synthetic,
                     "n_train": len(dataset.train), "n_val": len(dataset.val), "n_test": len(dataset.test),
                     "min_timed_steps": min_timed_steps,
                     "loop": "fer_lib.core.train.train_model (the study's own training step)"},
        "note": note,
        "throughput": throughput,
        "scaling": scaled,
    }
    gpu = (device.get("nvidia_gpus") or [""])[0].split(",")[0]
    device_slug = "-".join("".join(c if c.isalnum() else " " for c in (gpu or record["device"])).split())[:40]
    stem = f"{record['date'][:10]}-{keras.backend.backend()}-{device_slug}{'-' + tag if tag else ''}"
    return records.write_json(runs.unique_path(out_dir, stem, ".json"), record)  # write_json makes the folder
