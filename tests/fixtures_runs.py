"""Small finished run folders for the widget tests (plain helpers, not pytest fixtures, so any test can build one).

A real run is made the real way (params -> run folder -> ``fer_lib.app.study.run_model``) on a few hundred synthetic
images with a tiny CNN and one epoch: a few seconds on a CPU, and exactly the files a real run has.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fer_lib.core import records
from fer_lib.app import runs
from fer_lib.core.data import load_synthetic
from fer_lib.core.evaluate import evaluate_predictions, save_predictions
from fer_lib.core.labels import NUM_CLASSES
from fer_lib.app.params import resolve_params
from fer_lib.app.study import run_model

SMALL_RUN: dict[str, Any] = {
    "name": "widget-test",
    "synthetic": True,
    "synthetic_train": 210,
    "synthetic_val": 70,
    "synthetic_test": 140,
    "models": ["basic_cnn"],
    "epochs": 1,
    "batch_size": 32,
    "verbose": 0,
    "tta": False,
    "model_options": {"basic_cnn": {"filters": [8, 16], "dense_units": [16]}},
}


def small_params(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return resolve_params(SMALL_RUN, overrides)


def make_finished_run(outputs_dir: str | Path, overrides: Mapping[str, Any] | None = None) -> Path:
    """A run folder under ``outputs_dir`` with one trained and evaluated ``basic_cnn`` (predictions_val/test.npz)."""
    params = small_params(overrides)
    dataset = load_synthetic(params["synthetic_train"], params["synthetic_val"], params["synthetic_test"],
                             seed=params["seed"], class_balance=params["synthetic_balance"])
    run_dir = runs.new_run_dir(params["name"], outputs_dir=outputs_dir, params=params)
    for model in params["models"]:
        run_model(params, model, dataset, records.model_dir(run_dir, model))
    return run_dir


def make_run_without_models(outputs_dir: str | Path, name: str = "no-models") -> Path:
    """A run folder that has params.yaml but no trained model (training not started, or killed)."""
    return runs.new_run_dir(name, outputs_dir=outputs_dir, params=small_params({"name": name}))


def make_crafted_run(outputs_dir: str | Path, true_to_predicted: Mapping[int, int], *,
                     name: str = "crafted") -> Path:
    """A run whose ``basic_cnn`` test predictions are chosen, not trained: every test image of true class ``t``
    is predicted ``true_to_predicted.get(t, t)``, so the test knows exactly which cells are full and which are empty.
    """
    params = small_params({"name": name})
    dataset = load_synthetic(params["synthetic_train"], params["synthetic_val"], params["synthetic_test"],
                             seed=params["seed"], class_balance=params["synthetic_balance"])
    run_dir = runs.new_run_dir(name, outputs_dir=outputs_dir, params=params)
    model_dir = records.model_dir(run_dir, "basic_cnn")
    split = dataset.test
    predicted = np.array([true_to_predicted.get(int(t), int(t)) for t in split.labels])
    rng = np.random.default_rng(0)
    probabilities = rng.uniform(0.0, 0.1, size=(len(split), NUM_CLASSES))
    probabilities[np.arange(len(split)), predicted] = 0.9
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    save_predictions(model_dir / "predictions_test.npz", split, probabilities)
    records.write_json(model_dir / records.METRICS_FILE, {"model": "basic_cnn", "synthetic": True,
                                                          "test": evaluate_predictions(split.labels, probabilities)})
    return run_dir


def copy_run_without_predictions(run_dir: str | Path, outputs_dir: str | Path) -> Path:
    """A copy of a finished run whose model lost its predictions files (e.g. evaluation was interrupted)."""
    target = Path(outputs_dir) / f"{Path(run_dir).name}-no-predictions"
    shutil.copytree(run_dir, target)
    for file in target.glob("models/*/predictions_*.npz"):
        file.unlink()
    return target


CRAFTED_ACCURACY: dict[str, float] = {"basic_cnn": 0.7, "resnet50v2": 0.45}


def make_crafted_seed_run(outputs_dir: str | Path, seeds: tuple[int, ...] = (0, 1), *,
                          accuracy: Mapping[str, float] = CRAFTED_ACCURACY, epochs: int = 5,
                          name: str = "crafted-seeds") -> Path:
    """A run with several seeds and two models whose records are chosen, not trained (seconds, no Keras training):
    per seed and model, test/val/test_tta predictions right on about ``accuracy[model]`` of the images (seeded), a
    ``history.csv`` of ``epochs`` rows and the metrics.json the study writes. The layout is the runner's:
    ``seeds/seed-<s>/models/<model>/`` (``models/<model>/`` for one seed)."""
    params = small_params({"name": name, "models": list(accuracy), "seeds": list(seeds), "epochs": epochs,
                           "tta": True})
    dataset = load_synthetic(params["synthetic_train"], params["synthetic_val"], params["synthetic_test"],
                             seed=seeds[0], class_balance=params["synthetic_balance"])
    run_dir = runs.new_run_dir(name, outputs_dir=outputs_dir, params=params)
    for seed in seeds:
        for index, (model, share) in enumerate(accuracy.items()):
            folder = records.model_dir(run_dir, model, seed if len(seeds) > 1 else None)
            rng = np.random.default_rng([seed, index])
            summary: dict[str, Any] = {"model": model, "synthetic": True, "data_source": dataset.source,
                                       "val_origin": dataset.val_origin, "params": 1000, "epochs_run": epochs,
                                       "best_epoch": epochs, "monitor": "val_accuracy", "best_val": share,
                                       "train_seconds": 1.0 + seed, "resumed_from_epoch": None}
            for key, split in (("val", dataset.val), ("test", dataset.test), ("test_tta", dataset.test)):
                right = rng.random(len(split)) < share
                predicted = np.where(right, split.labels, (split.labels + 1 + rng.integers(0, 6, len(split))) % 7)
                probabilities = rng.uniform(0.0, 0.1, size=(len(split), NUM_CLASSES))
                probabilities[np.arange(len(split)), predicted] = 0.9
                probabilities /= probabilities.sum(axis=1, keepdims=True)
                save_predictions(folder / f"predictions_{key}.npz", split, probabilities)
                summary[key] = evaluate_predictions(split.labels, probabilities)
            records.write_json(folder / records.METRICS_FILE, summary)
            curve = np.linspace(0.2, share, epochs) + rng.normal(0, 0.01, epochs)
            history = "epoch,accuracy,loss,val_accuracy,val_loss\n" + "".join(
                f"{e + 1},{curve[e] + 0.05:.4f},{2 - curve[e]:.4f},{curve[e]:.4f},{2.1 - curve[e]:.4f}\n"
                for e in range(epochs))
            (folder / records.HISTORY_FILE).write_text(history)
    return run_dir
