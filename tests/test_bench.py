"""fer_lib.app.bench times the study's own training loop (train_model) and writes a self-describing JSON record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fer_lib.app import bench
from fer_lib.core import data, train
TINY = {"basic_cnn": {"filters": [8], "dense_units": [8], "convs_per_block": 1}}


@pytest.mark.slow
def test_benchmark_runs_the_study_loop_for_enough_timed_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dataset = data.load_synthetic(100, 30, 40, seed=1)
    calls: list[str] = []
    real_train_model = train.train_model
    monkeypatch.setattr(bench, "train_model", lambda *a, **k: (calls.append(a[1]), real_train_model(*a, **k))[1])
    params = {"name": "tiny", "models": ["basic_cnn"], "model_options": TINY, "augmentation": {}, "epochs": 30,
              "batch_size": 16, "learning_rate": 1e-3, "lr_schedule": "cosine", "warmup_epochs": 1}
    path = bench.run_benchmark(dataset, params, out_dir=tmp_path, min_timed_steps=10, tag="tiny")
    record = json.loads(path.read_text())
    assert calls == ["basic_cnn"]  # the study's own loop, once per model
    assert path.name.endswith("-tiny.json") and record["backend"] in path.name
    (row,) = record["throughput"]
    assert row["steps_per_epoch"] == 100 // 16 and row["timed_steps"] >= 10
    assert row["epochs_measured"] == 1 + 2  # 6 steps per epoch: two timed epochs after the first
    assert row["train_images_per_second"] > 0 and row["inference_images_per_second"] > 0
    assert row["compile_seconds_estimate"] >= 0 and row["first_epoch_train_seconds"] > row["steady_epoch_train_seconds"]
    assert record["settings"]["n_val"] == 30 and record["settings"]["n_test"] == 40
