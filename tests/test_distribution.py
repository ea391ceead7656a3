"""Training over several devices with keras.distribution's DataParallel (JAX), and over several processes.

The tests marked ``distribution`` need JAX and 2 devices: ``make test-distribution`` runs them in a process of their
own on JAX's 2 CPU devices (KERAS_BACKEND=jax JAX_NUM_CPU_DEVICES=2). The rules (which devices a setting takes, the
batch's divisibility, how a process's share of a batch is cut) are checked everywhere, without a backend.

Tolerance of "the same loss curve": relative 1e-4 on the losses. The devices reduce float32 sums (the gradient's
all-reduce, BatchNorm's batch statistics, the loss's mean) in another order than one device does; over the 18
steps of these runs that moved the losses by at most 2e-5 (relative), while a wrong split (each device a separate
batch, BatchNorm on half a batch, images seen twice or not at all) moves them by 1e-2 and more.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from fer_lib.app import runner
from fer_lib.app.errors import UserError
from fer_lib.core import data, train
from fer_lib.core.config import BasicCnnOptions, ParamsError, TrainConfig, launch_from_environment
from fer_lib.core.evaluate import evaluate_model, evaluation_batch_size

TINY_CNN = BasicCnnOptions(filters=(8, 16), dense_units=(16,), convs_per_block=1)
RTOL = 1e-4  # see the module's docstring
SETTINGS = {"epochs": 3, "batch_size": 32, "seed": 3, "verbose": 0}
REPO_ROOT = Path(__file__).resolve().parent.parent


def tiny_dataset() -> data.FerDataset:
    return data.load_synthetic(210, 70, 70, seed=0)


def assert_same_curve(history: pd.DataFrame, reference: pd.DataFrame, n_val: int) -> None:
    assert history["epoch"].tolist() == reference["epoch"].tolist()
    for column in ("loss", "val_loss"):
        np.testing.assert_allclose(history[column], reference[column], rtol=RTOL, err_msg=column)
    for column in ("accuracy", "val_accuracy"):  # a near tie may flip one image
        np.testing.assert_allclose(history[column], reference[column], atol=1.5 / n_val, err_msg=column)


@pytest.fixture(scope="module")
def one_device(tmp_path_factory: pytest.TempPathFactory) -> train.TrainResult:
    """The reference: the tiny CNN trained on one device."""
    return train.train_model(tiny_dataset(), "basic_cnn", TrainConfig(**SETTINGS, distribution="none"),
                             tmp_path_factory.mktemp("one") / "run", model_options=TINY_CNN)


# -- the rules, on every backend -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("setting", "devices", "accelerators", "processes", "expected"), [
    ("auto", 2, 0, 1, 1),  # a CPU-only machine: off
    ("auto", 1, 1, 1, 1),  # one GPU: off
    ("auto", 4, 4, 1, 4),  # every GPU of the machine
    ("auto", 4, 4, 2, 4),  # every device of every process
    ("none", 4, 4, 1, 1),
    ("data_parallel", 2, 0, 1, 2),  # forced, even on CPU devices
    (2, 4, 4, 1, 2),  # the first two
])
def test_which_devices_a_setting_takes(setting: str | int, devices: int, accelerators: int, processes: int,
                                       expected: int) -> None:
    assert TrainConfig(distribution=setting).distribution_devices(devices, accelerators, processes) == expected


@pytest.mark.parametrize("setting", ["auto", "none", 1])
def test_other_backends_train_on_one_device(setting: str | int) -> None:
    assert TrainConfig(distribution=setting).distribution_devices(4, 4, backend="tensorflow") == 1


@pytest.mark.parametrize(("setting", "call", "message"), [
    ("data_parallel", {"backend": "tensorflow"}, r"parameter distribution must be auto or none on the tensorflow "
                                                 r"backend .*KERAS_BACKEND=jax\), got 'data_parallel'"),
    (3, {}, r"parameter distribution must be at most the 2 device\(s\) JAX sees here, got 3"),
    (2, {"processes": 2}, r"parameter distribution must be auto or data_parallel in a run of 2 processes .*got 2"),
    ("none", {"processes": 2}, r"must be auto or data_parallel in a run of 2 processes .*got 'none'"),
])
def test_a_setting_that_cannot_be_met_is_one_clear_error(setting: str | int, call: dict, message: str) -> None:
    with pytest.raises(ParamsError, match=message):
        TrainConfig(distribution=setting).distribution_devices(2, 2, **call)


@pytest.mark.parametrize("value", ["model_parallel", 0, -1, True, "2", None])
def test_distribution_values(value: object) -> None:
    with pytest.raises(ParamsError, match=r"parameter distribution must be auto, none, data_parallel or a number of "
                                          r"devices \(an integer >= 1\), got"):
        TrainConfig(distribution=value)


def test_the_batch_must_divide_by_the_devices() -> None:
    TrainConfig(batch_size=64, distribution="data_parallel").check_device_count(4)
    with pytest.raises(ParamsError, match=r"^parameter batch_size must be divisible by the 3 devices of distribution "
                                          r"data_parallel .*got 64; use e.g. -p batch_size=63$"):
        TrainConfig(batch_size=64, distribution="data_parallel").check_device_count(3)


def test_processes_come_from_the_launchers_variables() -> None:
    assert launch_from_environment({}) == (1, None)
    keras_variables = {"KERAS_DISTRIBUTION_NUM_PROCESSES": "2", "KERAS_DISTRIBUTION_PROCESS_ID": "1"}
    assert launch_from_environment(keras_variables) == (2, "keras")
    assert launch_from_environment({"SLURM_NTASKS": "8"}) == (1, None)  # an sbatch script, outside srun
    assert launch_from_environment({"SLURM_NTASKS": "8", "SLURM_STEP_NODELIST": "gpu[1-2]"}) == (8, "slurm")
    assert launch_from_environment({"OMPI_COMM_WORLD_SIZE": "4", "OMPI_MCA_orte_hnp_uri": "1.2@tcp://10.0.0.1:1"}
                                   ) == (4, "openmpi")


def test_the_processes_shares_make_up_the_batches_of_one_process() -> None:
    """Cut after the mixing (mixup mixes images across the whole global batch), with the class weights."""
    split, weights = tiny_dataset().train, np.linspace(0.5, 2.0, train.NUM_CLASSES)
    options = {"seed": 5, "first_epoch": 2, "mixup_alpha": 0.4, "class_weights": weights}
    whole = train.TrainBatches(split, 32, **options)
    shares = [train.TrainBatches(split, 32, **options, share=(p, 2)) for p in range(2)]
    assert len(shares[0]) == len(whole)
    for index in range(len(whole)):
        parts = [share[index] for share in shares]
        assert [part[0].shape[0] for part in parts] == [16, 16] and len(parts[0]) == 3
        for array, *halves in zip(whole[index], *parts):
            assert np.array_equal(array, np.concatenate(halves))


def test_prediction_batches_divide_by_the_devices() -> None:
    dataset = tiny_dataset()
    assert evaluation_batch_size(32, dataset) == 128 and evaluation_batch_size(32, dataset, devices=2) == 128
    assert evaluation_batch_size(192, devices=6) == 258  # 256 for one device, 43 images per device for six


# -- on JAX's 2 CPU devices (make test-distribution) -----------------------------------------------------------------

@pytest.mark.distribution
def test_two_devices_train_the_same_loss_curve_as_one(tmp_path: Path, one_device: train.TrainResult) -> None:
    dataset = tiny_dataset()
    result = train.train_model(dataset, "basic_cnn", TrainConfig(**SETTINGS, distribution="data_parallel"),
                               tmp_path / "run", model_options=TINY_CNN)
    assert_same_curve(result.history, one_device.history, len(dataset.val))
    assert result.best_epoch == one_device.best_epoch
    recorded = json.loads((tmp_path / "run" / "train_config.json").read_text())["distribution"]
    assert recorded == {"setting": "data_parallel", "kind": "DataParallel", "devices": 2, "processes": 1,
                        "mesh": {"shape": [2], "axis_names": ["batch"]}, "device_names": ["cpu:0", "cpu:1"],
                        "global_batch_size": 32, "per_device_batch_size": 16}
    variable = result.model.trainable_variables[0].value
    assert len(variable.sharding.device_set) == 2  # replicated over both devices, not on one
    # history.csv's images/s counts every device's images: the global batch times the steps
    images = len(dataset.train) // 32 * 32
    assert images / result.history["train_images_per_second"].iloc[-1] < result.history["epoch_seconds"].iloc[-1]
    with train.distribution_scope(result.distribution):
        metrics, probabilities = evaluate_model(result.model, dataset.test, batch_size=128)
    reference, _ = evaluate_model(one_device.model, dataset.test, batch_size=128)
    assert abs(metrics["accuracy"] - reference["accuracy"]) <= 1.5 / len(dataset.test)


@pytest.mark.distribution
def test_a_killed_distributed_run_resumes_with_its_best_weights(tmp_path: Path,
                                                                one_device: train.TrainResult) -> None:
    """Killed after epoch 1 (backed up), resumed on 2 devices: epoch 1 as on one device, the optimizer state and
    the best weights restored onto both devices, every epoch once."""
    class KillAfterFirstEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            raise KeyboardInterrupt("killed")

    dataset = tiny_dataset()
    config = TrainConfig(**SETTINGS, distribution="data_parallel", backup_every_seconds=0)
    with pytest.raises(KeyboardInterrupt):
        train.train_model(dataset, "basic_cnn", config, tmp_path / "run", model_options=TINY_CNN,
                          extra_callbacks=[KillAfterFirstEpoch()])
    result = train.train_model(dataset, "basic_cnn", config, tmp_path / "run", model_options=TINY_CNN)
    assert result.resumed_from_epoch == 1 and result.history["epoch"].tolist() == [1, 2, 3]
    assert_same_curve(result.history.iloc[:1], one_device.history.iloc[:1], len(dataset.val))
    assert not (tmp_path / "run" / "backup").exists()
    with train.distribution_scope(result.distribution):  # the weights returned are the best epoch's
        metrics, _ = evaluate_model(result.model, dataset.val, batch_size=128)
    assert metrics["accuracy"] == pytest.approx(result.best_value) and result.monitor == "val_accuracy"


WORKER = """
import json, sys
from pathlib import Path
from fer_lib.core import data, train
from fer_lib.core.config import BasicCnnOptions, TrainConfig
from fer_lib.core.evaluate import evaluate_model
dataset = data.load_synthetic(210, 70, 70, seed=0)
settings = json.loads(sys.argv[1])
result = train.train_model(dataset, "basic_cnn", TrainConfig(**settings, distribution="data_parallel"),
                           Path(sys.argv[2]), model_options=BasicCnnOptions(filters=(8, 16), dense_units=(16,),
                                                                            convs_per_block=1))
with train.distribution_scope(result.distribution):
    metrics, probabilities = evaluate_model(result.model, dataset.test, batch_size=128)
record = json.loads((Path(sys.argv[2]) / "train_config.json").read_text())["distribution"]
print("RESULT " + json.dumps({"history": result.history.to_dict("list"), "distribution": record,
                              "probabilities": probabilities.tolist()}))
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


@pytest.mark.distribution
@pytest.mark.slow
def test_two_processes_each_feeding_half_of_every_batch_train_as_one(tmp_path: Path,
                                                                     one_device: train.TrainResult) -> None:
    """Two processes of one device each, joined by keras.distribution.initialize through its environment
    variables (as two machines would be): each reads the same curve and every prediction; the curve is one
    device's."""
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": "1",
           "KERAS_DISTRIBUTION_JOB_ADDRESSES": f"localhost:{free_port()}", "KERAS_DISTRIBUTION_NUM_PROCESSES": "2"}
    env.pop("XLA_FLAGS", None)
    processes = [subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(SETTINGS), str(tmp_path / f"p{i}")],
                                  env={**env, "KERAS_DISTRIBUTION_PROCESS_ID": str(i)}, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, cwd=REPO_ROOT) for i in range(2)]
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=55)[0])
    finally:
        for process in processes:
            process.kill()
    results = []
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-3000:]
        results.append(json.loads(next(line for line in output.splitlines() if line.startswith("RESULT "))[7:]))
    for result in results:
        assert result["distribution"]["devices"] == 2 and result["distribution"]["processes"] == 2
        assert_same_curve(pd.DataFrame(result["history"]), one_device.history, 70)
    metrics = ("loss", "accuracy", "val_loss", "val_accuracy")  # the timings are each process's own
    assert [results[0]["history"][m] for m in metrics] == [results[1]["history"][m] for m in metrics]
    assert results[0]["probabilities"] == results[1]["probabilities"]  # every process reads every prediction
    reference, _ = evaluate_model(one_device.model, tiny_dataset().test, batch_size=128)
    predicted = np.asarray(results[0]["probabilities"]).argmax(axis=1)
    assert abs(float(np.mean(predicted == tiny_dataset().test.labels)) - reference["accuracy"]) <= 1.5 / 70


@pytest.mark.distribution
def test_the_manifest_names_the_devices_and_auto_stays_off_on_cpu(tmp_path: Path) -> None:
    plan = runner.prepare_run([REPO_ROOT / "params" / "smoke.yaml"], ["distribution=data_parallel"],
                              out=tmp_path / "out")
    context = runner.run_context(plan)  # what manifest.json holds, gathered before the run folder exists
    assert context["distribution"]["devices"] == 2 and context["distribution"]["kind"] == "DataParallel"
    assert context["distribution"]["device_names"] == ["cpu:0", "cpu:1"]
    assert context["distribution"]["mesh"] == {"shape": [2], "axis_names": ["batch"]}
    assert context["device"]["device_names"] == ["cpu:0", "cpu:1"]
    auto = runner.prepare_run([REPO_ROOT / "params" / "smoke.yaml"], [], out=tmp_path / "out")
    assert auto["distribution"]["devices"] == 1 and auto["distribution"]["kind"] is None  # CPU devices: off
    with pytest.raises(UserError, match=r"parameter distribution must be at most the 2 device\(s\) JAX sees here"):
        runner.prepare_run([REPO_ROOT / "params" / "smoke.yaml"], ["distribution=3"], out=tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.distribution
def test_a_batch_the_devices_cannot_split_is_exit_2_and_one_line_before_any_folder(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "fer_lib.app.cli", "run", "--params", "params/smoke.yaml", "-p",
                           "distribution=data_parallel", "-p", "batch_size=15", "--out", str(tmp_path / "out")],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert "parameter batch_size must be divisible by the 2 devices of distribution data_parallel" in done.stderr
    assert "got 15; use e.g. -p batch_size=16" in done.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
