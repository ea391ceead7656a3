"""fer_lib.core.train: one call trains from a TrainConfig, keeps its records, resumes a killed run, checks params."""

from __future__ import annotations

import io
import json
import logging
import re
import zipfile
from pathlib import Path

import h5py
import keras
import numpy as np
import pandas as pd
import pytest

from fer_lib.core import data, train
from fer_lib.core.evaluate import evaluate_model, evaluation_batch_size
from fer_lib.core.config import AugmentConfig, BasicCnnOptions, ParamsError, TrainConfig
from fer_lib.core.train import train_model

TINY_CNN = BasicCnnOptions(filters=(8, 16), dense_units=(16,), convs_per_block=1)
EVERY_PART = {"optimizer": "sgd", "learning_rate": 0.01, "weight_decay": 1e-3, "decay_kernels_only": True,
              "clip_norm": 1.0, "ema": True, "ema_momentum": 0.9, "mixup_alpha": 0.2, "cutmix_alpha": 1.0,
              "reduce_lr_on_plateau": True, "plateau_factor": 0.75, "plateau_patience": 1, "bn_momentum": 0.8,
              "label_smoothing": 0.1, "early_stopping_patience": 2}
"""Every part of the strong protocol's recipe on at once (with EVERY_AUGMENTATION): the loop's properties hold."""
EVERY_AUGMENTATION = AugmentConfig(rotation=10.0, width_shift=0.2, height_shift=0.2, horizontal_flip=True,
                                   crop_scale=(0.8, 1.0), crop_aspect=(0.75, 4 / 3), erasing=0.5)


@pytest.fixture(scope="module")
def tiny_data() -> data.FerDataset:
    return data.load_synthetic(210, 70, 70, seed=0)


def test_basic_cnn_learns_synthetic_faces_within_three_epochs(tmp_path: Path) -> None:
    """A basic CNN (three narrow blocks) reaches >= 0.8 on held-out synthetic faces in 3 CPU epochs.

    The paper's full-width CNN (7M parameters) learns the same faces as well, but takes minutes of a 2-core CPU;
    the narrow one proves the point (the loop, the augmentation and BatchNorm's short-run statistics work together
    to learn) in seconds.
    """
    dataset = data.load_synthetic(900, 200, 300, seed=7)
    params = TrainConfig(epochs=3, batch_size=32, learning_rate=2e-3, seed=0, verbose=0)
    result = train_model(dataset, "basic_cnn", params, tmp_path / "run",
                         model_options=BasicCnnOptions(filters=(16, 32, 64), dense_units=(64,)))
    metrics, _ = evaluate_model(result.model, dataset.test)
    print(f"held-out synthetic accuracy after 3 epochs: {metrics['accuracy']:.3f}; "
          f"train accuracy per epoch: {result.history['accuracy'].round(3).tolist()}")
    assert metrics["accuracy"] >= 0.8
    assert metrics["collapse_warning"] is None
    assert len(result.history) == 3


def test_records_history_best_checkpoint_and_config(tmp_path: Path, tiny_data: data.FerDataset) -> None:
    params = TrainConfig(epochs=2, batch_size=32, seed=1, verbose=0, label_smoothing=0.1, class_weights="balanced",
                         lr_schedule="cosine", warmup_epochs=0.5)
    result = train_model(tiny_data, "basic_cnn", params, tmp_path / "run", model_options=TINY_CNN)
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert len(history) == 2
    assert {"epoch", "loss", "accuracy", "top2_accuracy", "val_loss", "val_accuracy", "epoch_seconds",
            "train_images_per_second", "learning_rate"} <= set(history.columns)
    # throughput counts training time only (full batches): the validation pass is part of the epoch, not of training
    train_seconds = (len(tiny_data.train) // 32 * 32) / history["train_images_per_second"]
    assert (train_seconds < history["epoch_seconds"]).all()
    assert (tmp_path / "run" / "best.keras").is_file() and (tmp_path / "run" / "train_config.json").is_file()
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
    params = TrainConfig(epochs=3, batch_size=32, seed=2, verbose=0, backup_every_seconds=0)
    with pytest.raises(KeyboardInterrupt):
        train_model(tiny_data, "basic_cnn", params, tmp_path / "run", model_options=TINY_CNN,
                    extra_callbacks=[StopAfter(2)])
    assert (tmp_path / "run" / "backup").exists()
    assert len(pd.read_csv(tmp_path / "run" / "history.csv")) == 2
    result = train_model(tiny_data, "basic_cnn", params, tmp_path / "run", model_options=TINY_CNN)
    assert result.resumed_from_epoch == 2
    assert result.history["epoch"].tolist() == [1, 2, 3]  # only the third epoch was trained again
    assert not (tmp_path / "run" / "backup").exists()


def test_backup_every_n_epochs_and_epochs_after_it_are_trained_again_once(tmp_path: Path,
                                                                            tiny_data: data.FerDataset) -> None:
    """Killed after epoch 3 with a backup every 2 epochs: the resume restarts at epoch 3, recorded once."""
    params = TrainConfig(epochs=4, batch_size=32, seed=2, verbose=0, backup_every_epochs=2, backup_every_seconds=3600)
    with pytest.raises(KeyboardInterrupt):
        train_model(tiny_data, "basic_cnn", params, tmp_path / "run", model_options=TINY_CNN,
                    extra_callbacks=[StopAfter(3)])
    assert len(pd.read_csv(tmp_path / "run" / "history.csv")) == 3  # epoch 3 was recorded, but not backed up
    assert json.loads((tmp_path / "run" / "backup" / "training_metadata.json").read_text())["epoch"] == 2
    result = train_model(tiny_data, "basic_cnn", params, tmp_path / "run", model_options=TINY_CNN)
    assert result.resumed_from_epoch == 2
    assert result.history["epoch"].tolist() == [1, 2, 3, 4]
    assert 1 <= result.best_epoch <= 4


def test_a_killed_run_before_its_first_backup_starts_over(tmp_path: Path, tiny_data: data.FerDataset) -> None:
    params = TrainConfig(epochs=2, batch_size=32, seed=2, verbose=0, backup_every_seconds=3600)
    with pytest.raises(KeyboardInterrupt):
        train_model(tiny_data, "basic_cnn", params, tmp_path / "run", model_options=TINY_CNN,
                    extra_callbacks=[StopAfter(1)])
    result = train_model(tiny_data, "basic_cnn", params, tmp_path / "run", model_options=TINY_CNN)
    assert result.resumed_from_epoch == 0 and result.history["epoch"].tolist() == [1, 2]


# The backend tests again with keras.distribution's DataParallel over 2 devices (make test-distribution)
DISTRIBUTIONS = ["none", pytest.param("data_parallel", marks=pytest.mark.distribution)]


@pytest.mark.backend
@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_train_model_keeps_asynchronous_step_dispatch(tmp_path: Path, tiny_data: data.FerDataset,
                                                      monkeypatch: pytest.MonkeyPatch, distribution: str) -> None:
    """No callback of train_model makes Keras wait for the device after every batch."""
    seen: list[tuple[list[str], bool]] = []
    original = keras.callbacks.CallbackList._configure_async_dispatch

    def recording(self: keras.callbacks.CallbackList, callbacks: list) -> None:
        original(self, callbacks)
        seen.append(([type(c).__name__ for c in callbacks or []], self._async_train))

    monkeypatch.setattr(keras.callbacks.CallbackList, "_configure_async_dispatch", recording)
    config = TrainConfig(epochs=1, batch_size=32, verbose=0, **EVERY_PART, distribution=distribution)
    result = train_model(tiny_data, "basic_cnn", config, tmp_path / "run", model_options=TINY_CNN,
                         augmentation=EVERY_AUGMENTATION)
    assert train.device_count(result.distribution) == (1 if distribution == "none" else 2)
    fit_lists = [(names, flag) for names, flag in seen if "PeriodicBackup" in names]
    assert len(fit_lists) == 1, seen
    # Keras dispatches asynchronously on the backends that are thread-safe (JAX; not TensorFlow's eager loop)
    backend_allows = keras.src.backend.IS_THREAD_SAFE
    assert fit_lists[0][1] is backend_allows, f"asynchronous dispatch switched off by one of {fit_lists[0][0]}"
    if backend_allows:  # the check can fail: Keras's own ModelCheckpoint (a batch-level callback) switches it off
        checkpoint = keras.callbacks.ModelCheckpoint(str(tmp_path / "x.weights.h5"), save_weights_only=True)
        assert keras.callbacks.CallbackList([checkpoint])._async_train is False


@pytest.mark.backend
@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_one_compile_of_each_step_for_ragged_data_sizes(tmp_path: Path, distribution: str) -> None:
    """333 training and 71 validation images with batch 32, every part of the recipe on, ten-view TTA: one train-step
    and one predict-step compile (JAX), the final evaluation included (inside the training's distribution scope, as
    fer_lib.app.study evaluates)."""
    if keras.backend.backend() != "jax":
        pytest.skip("counts XLA compiles, which JAX logs (KERAS_BACKEND=jax)")
    import jax

    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    handler, logger = Collect(level=logging.DEBUG), logging.getLogger("jax")
    dataset = data.load_synthetic(333, 71, 70, seed=3)
    logger.addHandler(handler)
    previous_level = logger.level
    logger.setLevel(logging.DEBUG)
    jax.config.update("jax_log_compiles", True)
    try:
        result = train_model(dataset, "basic_cnn", TrainConfig(epochs=2, batch_size=32, verbose=0, **EVERY_PART,
                                                               distribution=distribution),
                             tmp_path / "run", model_options=TINY_CNN, augmentation=EVERY_AUGMENTATION)
        batch = evaluation_batch_size(32, dataset, devices=train.device_count(result.distribution))
        with train.distribution_scope(result.distribution):
            evaluate_model(result.model, dataset.test, batch_size=batch)
            evaluate_model(result.model, dataset.test, tta=True, tta_crop=40, batch_size=batch)
    finally:
        jax.config.update("jax_log_compiles", False)
        logger.removeHandler(handler)
        logger.setLevel(previous_level)
    compiles = [m.split(" with ")[0] for m in messages if m.startswith("Compiling ")]
    assert compiles.count("Compiling jit(train_step)") == 1, compiles
    assert compiles.count("Compiling jit(predict_step)") == 1, compiles


def test_full_batches_a_fresh_seeded_shuffle_each_epoch(tiny_data: data.FerDataset) -> None:
    batches = train.TrainBatches(tiny_data.train, 32, seed=5)
    assert len(batches) == len(tiny_data.train) // 32
    first = np.concatenate([batches[i][1].argmax(1) for i in range(len(batches))])
    shapes = {batches[i][0].shape for i in range(len(batches))}
    assert shapes == {(32, 48, 48, 1)}
    order_0 = batches._order.copy()
    batches.on_epoch_begin()
    batches.on_epoch_end()
    assert not np.array_equal(order_0, batches._order)
    again = train.TrainBatches(tiny_data.train, 32, seed=5, first_epoch=1)  # a resumed run draws the same batches
    assert np.array_equal(again._order, batches._order)
    assert first.shape == (len(batches) * 32,)
    with pytest.raises(ParamsError, match=r"batch_size must be at most the training split's 210 images, got 512"):
        TrainConfig(batch_size=512).check_training_split(len(tiny_data.train))


def test_remaining_epochs_as_arrays_are_the_batches_the_sequence_yields(tiny_data: data.FerDataset) -> None:
    """fit fed the arrays (TensorFlow) trains on exactly the batches the PyDataset yields, resumed runs included."""
    weights = np.linspace(0.5, 2.0, train.NUM_CLASSES)
    for first_epoch in (0, 1):
        batches = train.TrainBatches(tiny_data.train, 32, seed=5, first_epoch=first_epoch, class_weights=weights)
        images, targets, sample_weights = batches.remaining_epochs(4)
        walked = []
        batches.on_epoch_end()  # as Keras's fit does once before the first epoch: no epoch has begun, nothing moves
        for _ in range(first_epoch, 4):
            batches.on_epoch_begin()
            walked.extend(batches[i] for i in range(len(batches)))
            batches.on_epoch_end()
        assert images.shape == (len(walked) * 32, 48, 48, 1) and images.dtype == tiny_data.train.images.dtype
        assert np.array_equal(images, np.concatenate([b[0] for b in walked]))
        assert np.array_equal(targets, np.concatenate([b[1] for b in walked]))
        assert np.array_equal(sample_weights, np.concatenate([b[2] for b in walked]))
    fresh = train.TrainBatches(tiny_data.train, 32, seed=5, first_epoch=3)
    assert fresh.remaining_epochs_nbytes(4) == len(fresh) * 32 * 48 * 48
    assert fresh.remaining_epochs_nbytes(3) == 0 and len(fresh.remaining_epochs(3)[0]) == 0


def test_array_and_pydataset_feeds_train_the_same_model(tmp_path: Path, tiny_data: data.FerDataset,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two epochs fed each way from the same seed: the same losses (only the feed differs, not the batches)."""
    config = TrainConfig(epochs=2, batch_size=32, seed=4, verbose=0)
    feeds = []
    original = train.fit_inputs

    def recording(batches: train.TrainBatches, epochs: int) -> dict:
        inputs = original(batches, epochs)
        feeds.append("TrainBatches" if isinstance(inputs["x"], train.TrainBatches) else "arrays")
        return inputs

    monkeypatch.setattr(train, "fit_inputs", recording)
    arrays = train_model(tiny_data, "basic_cnn", config, tmp_path / "arrays", model_options=TINY_CNN)
    monkeypatch.setattr(train, "ARRAY_FEED_LIMIT_BYTES", 0)
    sequence = train_model(tiny_data, "basic_cnn", config, tmp_path / "sequence", model_options=TINY_CNN)
    expected_first = "arrays" if keras.backend.backend() == "tensorflow" else "TrainBatches"
    assert feeds == [expected_first, "TrainBatches"]
    for column in ("loss", "accuracy", "val_loss"):
        np.testing.assert_allclose(arrays.history[column], sequence.history[column], rtol=1e-4, err_msg=column)


def test_best_keras_holds_the_weights_only(tmp_path: Path, tiny_data: data.FerDataset) -> None:
    """best.keras is an uncompiled model: no optimizer variables, and its weights file is about the parameters' size."""
    options = BasicCnnOptions(filters=(8, 16), dense_units=(256,), convs_per_block=1)
    result = train_model(tiny_data, "basic_cnn", TrainConfig(epochs=1, batch_size=32, verbose=0, optimizer="adam"),
                         tmp_path / "run", model_options=options)
    with zipfile.ZipFile(tmp_path / "run" / "best.keras") as archive:
        weights = archive.read("model.weights.h5")
    with h5py.File(io.BytesIO(weights), "r") as stored:
        names: list[str] = []
        stored.visit(names.append)
    assert not [n for n in names if "optimizer" in n], [n for n in names if "optimizer" in n][:5]
    parameter_bytes = result.model.count_params() * 4
    assert parameter_bytes <= len(weights) <= 1.15 * parameter_bytes + 200_000, (len(weights), parameter_bytes)
    reloaded = keras.saving.load_model(tmp_path / "run" / "best.keras")
    assert getattr(reloaded, "optimizer", None) is None  # saved uncompiled
    probe = tiny_data.test.images[:8]
    assert np.allclose(reloaded.predict(probe, verbose=0), result.model.predict(probe, verbose=0), atol=1e-5)


def test_a_diverging_run_stops_at_the_first_bad_epoch_and_says_what_to_try(tmp_path: Path,
                                                                           tiny_data: data.FerDataset) -> None:
    """The smoke study's CNN with learning_rate 1e9 (the reported case): a NaN loss within 3 epochs, named."""
    with pytest.raises(train.TrainingDiverged, match=r"basic_cnn diverged in epoch (\d) of 3: the training loss is "
                                                     r"(nan|inf).*lower learning_rate \(it is 1e\+09") as caught:
        train_model(tiny_data, "basic_cnn", TrainConfig(epochs=3, batch_size=32, verbose=0, learning_rate=1e9),
                    tmp_path / "run", model_options=BasicCnnOptions(filters=(16, 32), dense_units=(64,)))
    epoch = int(re.search(r"epoch (\d)", str(caught.value)).group(1))
    history = tmp_path / "run" / "history.csv"
    # CSVLogger writes its header with the first row: a divergence in epoch 1 leaves the file empty
    recorded = len(pd.read_csv(history)) if history.exists() and history.stat().st_size else 0
    assert recorded == epoch - 1  # the diverged epoch is not recorded as a result


def test_progress_file_after_every_epoch(tmp_path: Path, tiny_data: data.FerDataset) -> None:
    train_model(tiny_data, "basic_cnn", TrainConfig(epochs=2, batch_size=32, verbose=0), tmp_path / "run",
                model_options=TINY_CNN)
    record = json.loads((tmp_path / "run" / "progress.json").read_text())
    assert record["model"] == "basic_cnn" and record["epoch"] == 2 and record["epochs"] == 2
    assert record["seconds_left"] == 0 and record["images_per_second"] > 0
    assert 0 <= record["val_accuracy"] <= 1


def test_train_model_takes_typed_configs_only(tmp_path: Path, tiny_data: data.FerDataset) -> None:
    """A params mapping is converted once, where it comes in; train_model refuses one and says how to convert it."""
    with pytest.raises(TypeError, match=r"train_model's params must be a TrainConfig, got dict; build it from a "
                                        r"mapping with TrainConfig\.from_mapping"):
        train_model(tiny_data, "basic_cnn", {"epochs": 1, "batch_size": 32}, tmp_path / "run", model_options=TINY_CNN)
    with pytest.raises(TypeError, match=r"train_model's augmentation must be an AugmentConfig or None, got dict; "
                                        r"build it from a mapping with AugmentConfig\.from_mapping"):
        train_model(tiny_data, "basic_cnn", TrainConfig(epochs=1, batch_size=32), tmp_path / "run",
                    model_options=TINY_CNN, augmentation={"rotation": 10.0})
    assert not (tmp_path / "run").exists()  # refused before anything was written


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
        ({"learning_rate": 0}, r"learning_rate must be a number in \(0, inf\]"),
        ({"optimizer": "rmsprop"}, "optimizer must be one of adam, adamw, sgd"),
        ({"lr_schedule": "linear"}, "lr_schedule must be one of constant, cosine, step"),
        ({"label_smoothing": 1.0}, r"label_smoothing must be a number in \[0, 1\)"),
        ({"class_weights": [1, 2]}, "class_weights must be null, 'balanced' or a list of 7 positive numbers"),
        ({"reduce_lr_on_plateau": True, "lr_schedule": "cosine"}, "reduce_lr_on_plateau needs lr_schedule"),
        ({"warmup_epochs": 5, "epochs": 5}, r"warmup_epochs must be below epochs \(5\), got 5"),
        ({"mixed_precision": "yes"}, "mixed_precision must be true or false"),
        ({"monitor": "accuracy"}, "monitor must be one of val_accuracy, val_loss"),
    ],
)
def test_bad_training_parameters_fail_before_training(values: dict, message: str) -> None:
    with pytest.raises(ParamsError, match=message):
        TrainConfig.from_mapping(values)


# --------------------------------------------------------------------------------------------------------------------
# The recipe's parts (the strong protocol), each on a toy
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.backend
def test_the_plateau_schedule_lowers_the_rate_by_factor_after_patience_flat_epochs(tmp_path: Path,
                                                                                   tiny_data: data.FerDataset) -> None:
    """With a learning rate too small to change anything, every epoch is flat: the rate is multiplied by the factor
    after each ``patience`` epochs without improvement (the logged rate is the one the epoch trained with)."""
    config = TrainConfig(epochs=6, batch_size=32, verbose=0, learning_rate=1e-7, reduce_lr_on_plateau=True,
                         plateau_factor=0.5, plateau_patience=2, monitor="val_loss")
    result = train_model(tiny_data, "basic_cnn", config, tmp_path / "run", model_options=TINY_CNN)
    rates = result.history["learning_rate"].to_numpy()
    np.testing.assert_allclose(rates / 1e-7, [1, 1, 1, 0.5, 0.5, 0.25], rtol=1e-5)


@pytest.mark.backend
def test_the_saved_model_holds_the_moving_average_of_the_weights(tmp_path: Path,
                                                                 tiny_data: data.FerDataset) -> None:
    """ema: validation, selection and best.keras use the average; training (and its backup) the raw weights."""
    seen: dict[str, list[np.ndarray]] = {}

    class AtTheEnd(keras.callbacks.Callback):  # after train_model's epoch-end callbacks (Keras's fit replaces the
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:  # weights by the average at its end)
            optimizer = self.model.optimizer
            seen["raw"] = [keras.ops.convert_to_numpy(v) for v in optimizer._trainable_variables]
            seen["average"] = [keras.ops.convert_to_numpy(v) for v in optimizer._model_variables_moving_average]

    config = TrainConfig(epochs=1, batch_size=32, verbose=0, ema=True, ema_momentum=0.5)
    result = train_model(tiny_data, "basic_cnn", config, tmp_path / "run", model_options=TINY_CNN,
                         extra_callbacks=[AtTheEnd()])
    saved = [keras.ops.convert_to_numpy(v) for v in
             train.load_inference_model(tmp_path / "run" / "best.keras").trainable_variables]
    assert all(np.allclose(s, a) for s, a in zip(saved, seen["average"])), "best.keras holds the average"
    assert not all(np.allclose(s, r) for s, r in zip(saved, seen["raw"])), "... which differs from the raw weights"
    history = result.history
    assert history["val_accuracy"].iloc[0] == pytest.approx(result.best_value)


@pytest.mark.backend
def test_the_moving_average_warms_up_instead_of_holding_the_first_weights() -> None:
    """Keras's fixed momentum keeps 0.999**100 = 90% of the first weights after 100 steps; the warmed-up one
    (min(0.999, (1 + n) / (10 + n))) follows the recent ones: a weight that rises by 1 a step is averaged near 80."""
    weight = keras.Variable(0.0)
    optimizer = train.make_optimizer(TrainConfig(optimizer="sgd", learning_rate=1.0, momentum=0.0, ema=True,
                                                 ema_momentum=0.999), 100)
    optimizer.build([weight])
    for _ in range(100):
        optimizer.apply([keras.ops.convert_to_tensor(-1.0)], [weight])
    average = float(keras.ops.convert_to_numpy(optimizer._model_variables_moving_average[0]))
    assert float(keras.ops.convert_to_numpy(weight)) == pytest.approx(100.0)
    assert 70 < average < 95


def test_weight_decay_on_kernels_only_and_clipping_and_bn_momentum(tiny_data: data.FerDataset) -> None:
    model = train.build_model("basic_cnn", TINY_CNN, bn_momentum=0.8)
    assert {layer.momentum for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)} == {0.8}
    config = TrainConfig(optimizer="sgd", weight_decay=1e-3, decay_kernels_only=True, clip_norm=2.0)
    optimizer = train.make_optimizer(config, 10)
    train.kernels_only(optimizer, model)
    decayed = {v.path: optimizer._use_weight_decay(v) for v in model.trainable_variables}
    assert decayed and all(flag == (len(v.shape) >= 2) for v, flag in zip(model.trainable_variables,
                                                                          decayed.values()))
    assert any(decayed.values()) and not all(decayed.values())
    assert optimizer.global_clipnorm == 2.0


def test_mixup_and_cutmix_targets_sum_to_one_and_follow_the_pixels() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (16, 48, 48, 1), dtype=np.uint8)
    targets = train.one_hot(np.arange(16) % 7)
    for mixing in ([("mixup", 0.4)], [("cutmix", 1.0)]):
        mixed, soft = train.mix_batch(images, targets, np.random.default_rng(1), mixing, 1.0)
        assert mixed.shape == images.shape and mixed.dtype == np.uint8
        np.testing.assert_allclose(soft.sum(axis=1), 1.0, rtol=1e-6)
        assert (soft.max(axis=1) < 1).any(), "the targets are mixed"
    # cutmix: the weight of an image's own class is the share of its pixels that stayed
    mixed, soft = train.mix_batch(images, targets, np.random.default_rng(2), [("cutmix", 1.0)], 1.0)
    kept = (mixed == images).mean(axis=(1, 2, 3))
    own = soft[np.arange(16), np.arange(16) % 7]
    assert np.all(own >= kept.min() - 0.05)  # a pasted pixel may equal the original by chance
    unchanged, same = train.mix_batch(images, targets, np.random.default_rng(3), [("mixup", 0.4)], 0.0)
    assert unchanged is images and same is targets  # probability 0: no batch is mixed


def test_mixed_batches_are_seeded_per_epoch_and_batch_and_the_two_feeds_agree(tiny_data: data.FerDataset) -> None:
    batches = train.TrainBatches(tiny_data.train, 32, seed=4, mixup_alpha=0.3, cutmix_alpha=1.0)
    again = train.TrainBatches(tiny_data.train, 32, seed=4, mixup_alpha=0.3, cutmix_alpha=1.0)
    first = batches[1]
    assert all(np.array_equal(a, b) for a, b in zip(first, again[1]))
    images, targets = batches.remaining_epochs(2)
    assert np.array_equal(images[32:64], first[0]) and np.allclose(targets[32:64], first[1])
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, rtol=1e-6)
