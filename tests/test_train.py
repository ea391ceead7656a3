"""fer_lib.train: one call trains from a params mapping, keeps its records, resumes a killed run, checks params."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from fer_lib import data, train
from fer_lib.evaluate import evaluate_model
from fer_lib.train import TrainConfig, TrainConfigError, train_model

TINY_CNN = {"filters": [8, 16], "dense_units": [16], "convs_per_block": 1}


@pytest.fixture(scope="module")
def tiny_data() -> data.FerDataset:
    return data.load_synthetic(210, 70, 70, seed=0)


@pytest.mark.slow
def test_basic_cnn_learns_synthetic_faces_within_three_epochs(tmp_path: Path) -> None:
    """The paper's basic CNN (default widths) reaches >= 0.8 on held-out synthetic faces in 3 CPU epochs."""
    dataset = data.load_synthetic(3000, 500, 1000, seed=7)
    params = {"epochs": 3, "batch_size": 64, "learning_rate": 1e-3, "seed": 0, "verbose": 0}
    result = train_model(dataset, "basic_cnn", params, tmp_path / "run")
    metrics, _ = evaluate_model(result.model, dataset.test)
    print(f"held-out synthetic accuracy after 3 epochs: {metrics['accuracy']:.3f}; "
          f"train accuracy per epoch: {result.history['accuracy'].round(3).tolist()}")
    assert metrics["accuracy"] >= 0.8
    assert metrics["collapse_warning"] is None
    assert len(result.history) == 3


def test_records_history_best_checkpoint_and_config(tmp_path: Path, tiny_data: data.FerDataset) -> None:
    params = {"epochs": 2, "batch_size": 32, "seed": 1, "verbose": 0, "label_smoothing": 0.1,
              "class_weights": "balanced", "lr_schedule": "cosine", "warmup_epochs": 0.5}
    result = train_model(tiny_data, "basic_cnn", params, tmp_path / "run", model_options=TINY_CNN)
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert len(history) == 2
    assert {"epoch", "loss", "accuracy", "top2_accuracy", "val_loss", "val_accuracy", "epoch_seconds",
            "train_images_per_second", "learning_rate"} <= set(history.columns)
    # throughput counts training time only: the validation pass is part of the epoch, not of training
    train_seconds = len(tiny_data.train) / history["train_images_per_second"]
    assert (train_seconds < history["epoch_seconds"]).all()
    assert (tmp_path / "run" / "best.keras").is_file() and (tmp_path / "run" / "train_config.json").is_file()
    assert not (tmp_path / "run" / "best.weights.h5").exists()
    assert not (tmp_path / "run" / "backup").exists()  # removed once training finished
    assert result.best_value == pytest.approx(history["val_accuracy"].max())
    reloaded = keras.saving.load_model(tmp_path / "run" / "best.keras")
    assert reloaded.output_shape == (None, 7)
    with pytest.raises(FileExistsError, match="already holds a finished training run"):
        train_model(tiny_data, "basic_cnn", params, tmp_path / "run", model_options=TINY_CNN)


class StopAfter(keras.callbacks.Callback):
    """Simulates a run killed after a number of completed epochs."""

    def __init__(self, epochs: int) -> None:
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if epoch + 1 == self.epochs:
            raise KeyboardInterrupt(f"killed after epoch {epoch + 1}")


def test_killed_run_resumes_from_its_last_checkpoint(tmp_path: Path, tiny_data: data.FerDataset) -> None:
    params = {"epochs": 3, "batch_size": 32, "seed": 2, "verbose": 0}
    with pytest.raises(KeyboardInterrupt):
        train_model(tiny_data, "basic_cnn", params, tmp_path / "run", model_options=TINY_CNN,
                    extra_callbacks=[StopAfter(2)])
    assert (tmp_path / "run" / "backup").exists()
    assert len(pd.read_csv(tmp_path / "run" / "history.csv")) == 2
    result = train_model(tiny_data, "basic_cnn", params, tmp_path / "run", model_options=TINY_CNN)
    assert result.resumed_from_epoch == 2
    assert result.history["epoch"].tolist() == [0, 1, 2]  # only the third epoch was trained again
    assert not (tmp_path / "run" / "backup").exists()


def test_class_weights() -> None:
    labels = np.array([0, 0, 0, 1])
    weights = train.class_weight_vector(labels, "balanced")
    assert weights[0] == pytest.approx(4 / (2 * 3)) and weights[1] == pytest.approx(2.0) and weights[5] == 1.0
    assert train.class_weight_vector(labels, None) is None
    assert train.class_weight_vector(labels, [1, 2, 3, 4, 5, 6, 7]).tolist() == [1, 2, 3, 4, 5, 6, 7]


def test_schedules_and_optimizers_build() -> None:
    for schedule in ("constant", "cosine", "step"):
        for optimizer in ("adam", "adamw", "sgd"):
            config = TrainConfig(epochs=4, lr_schedule=schedule, optimizer=optimizer, warmup_epochs=1,
                                 weight_decay=1e-4)
            assert isinstance(train.make_optimizer(config, steps_per_epoch=10), keras.optimizers.Optimizer)
    cosine = train.make_optimizer(TrainConfig(epochs=4, lr_schedule="cosine", warmup_epochs=1), 10)
    schedule = cosine._learning_rate
    assert float(schedule(0)) == pytest.approx(0.0) and float(schedule(10)) == pytest.approx(1e-3)
    assert float(schedule(40)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"epochs": -1}, "epochs must be an integer >= 1, got -1"),
        ({"epochs": 2.5}, "epochs must be an integer >= 1, got 2.5"),
        ({"batch_size": "64"}, "batch_size must be an integer >= 1, got '64'"),
        ({"learning_rate": 0}, r"learning_rate must be a number in \(0.0, inf\]"),
        ({"optimizer": "rmsprop"}, "optimizer must be one of adam, adamw, sgd"),
        ({"lr_schedule": "linear"}, "lr_schedule must be one of constant, cosine, step"),
        ({"label_smoothing": 1.0}, r"label_smoothing must be a number in \[0.0, 1.0\)"),
        ({"class_weights": [1, 2]}, "class_weights must be null, 'balanced' or a list of 7 positive numbers"),
        ({"reduce_lr_on_plateau": True, "lr_schedule": "cosine"}, "reduce_lr_on_plateau needs lr_schedule"),
        ({"warmup_epochs": 5, "epochs": 5}, r"warmup_epochs \(5\) must be below epochs \(5\)"),
        ({"mixed_precision": "yes"}, "mixed_precision must be true or false"),
        ({"monitor": "accuracy"}, "monitor must be one of val_accuracy, val_loss"),
    ],
)
def test_bad_training_parameters_fail_before_training(values: dict, message: str) -> None:
    with pytest.raises(TrainConfigError, match=message):
        TrainConfig.from_mapping(values)
