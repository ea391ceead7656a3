"""fer-study estimate: a params file's training time from a benchmark record, by arithmetic (no data, no Keras)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fer_lib.app import cli, estimate
from fer_lib.app.params import resolve_params

REPO_ROOT = Path(__file__).resolve().parent.parent
H200 = REPO_ROOT / "benchmarks" / "results" / "2026-11-28-jax-NVIDIA-H200.json"


def toy_bench(tmp_path: Path) -> Path:
    rows = [{"model": "basic_cnn", "batch_size": 100, "mixed_precision": False, "train_images_per_second": 1000.0,
             "inference_images_per_second": 5000.0, "compile_seconds_estimate": 10.0, "model_options": {}},
            {"model": "resnet50v2", "batch_size": 100, "mixed_precision": False, "train_images_per_second": 500.0,
             "inference_images_per_second": 2000.0, "compile_seconds_estimate": 20.0,
             "model_options": {"input_size": 48}}]
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"device": "toy", "settings": {"n_train": 1050, "n_val": 100, "n_test": 200},
                                "throughput": rows}))
    return path


def test_the_arithmetic_per_model_and_seed(tmp_path: Path) -> None:
    bench = estimate.read_bench(toy_bench(tmp_path))
    params = resolve_params({"epochs": 4, "batch_size": 100, "seeds": [0, 1], "tta_crop": 40,
                             "model_options": {"resnet50v2": {"input_size": 96}}})
    result = estimate.estimate(params, bench)
    cnn, resnet = result["models"]
    assert cnn["images_per_epoch"] == 1000  # full batches only
    assert cnn["train_seconds"] == pytest.approx(2 * 4 * 1000 / 1000.0)
    assert cnn["evaluation_seconds"] == pytest.approx(2 * (100 * 5 + 200 * 13) / 5000.0)  # val per epoch, 13 views
    assert cnn["compile_seconds"] == pytest.approx(20.0)
    assert resnet["train_seconds"] == pytest.approx(2 * 4 * 1000 / 500.0 * 4)  # 96x96: 4x the pixels
    assert any("96x96" in note for note in resnet["notes"])
    assert result["total_seconds"] == pytest.approx(sum(m["total_seconds"] for m in (cnn, resnet)))


def test_strong_yaml_trains_both_models_within_six_minutes_on_the_h200() -> None:
    """The acceptance command: at most 6 minutes of training for both models."""
    done = subprocess.run([sys.executable, "-m", "fer_lib.app.cli", "estimate", "--params", "params/strong.yaml",
                           "--bench", str(H200)], capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr
    minutes = float(re.search(r"training of all models: ([\d.]+) min", done.stdout).group(1))
    assert 4.0 <= minutes <= 6.0, done.stdout
    short = subprocess.run([sys.executable, "-m", "fer_lib.app.cli", "estimate", "--params", "params/strong.yaml",
                            "params/strong-short.yaml", "--bench", str(H200)], capture_output=True, text=True,
                           timeout=60, cwd=REPO_ROOT)
    half = float(re.search(r"training of all models: ([\d.]+) min", short.stdout).group(1))
    assert half == pytest.approx(minutes / 2, abs=0.1)


@pytest.mark.parametrize(("args", "message"), [
    (["--bench", "missing.json"], "is not a benchmark record"),
    (["-p", "models=[basic_cnn]", "-p", "epochs=0"], "parameter epochs must be an integer >= 1, got 0"),
])
def test_bad_input_is_one_line(args: list[str], message: str, capsys: pytest.CaptureFixture[str],
                               tmp_path: Path) -> None:
    bench = ["--bench", str(toy_bench(tmp_path))] if "--bench" not in args else []
    code = cli.main(["estimate", "--params", str(REPO_ROOT / "params" / "paper.yaml"), *bench, *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err


def test_a_model_the_benchmark_lacks_is_named(tmp_path: Path) -> None:
    path = tmp_path / "one.json"
    path.write_text(json.dumps({"device": "x", "settings": {"n_train": 1, "n_val": 1, "n_test": 1},
                                "throughput": [{"model": "basic_cnn"}]}))
    with pytest.raises(estimate.EstimateError, match="has no record of resnet50v2"):
        estimate.estimate(resolve_params({"models": ["resnet50v2"]}), estimate.read_bench(path))
