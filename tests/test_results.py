"""The README results table: every number comes from a run folder (models and the ensemble), never typed in."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fer_lib import report, runs
from fer_lib.evaluate import evaluate_predictions, load_json, load_predictions

try:
    from fixtures_runs import copy_run_without_predictions, make_finished_run
except ImportError:  # pragma: no cover - when tests/ is imported as a package
    from tests.fixtures_runs import copy_run_without_predictions, make_finished_run

TWO_TINY_MODELS = {"name": "results-test", "models": ["basic_cnn", "resnet50v2"], "tta": True,
                   "model_options": {"basic_cnn": {"filters": [8, 16], "dense_units": [16]}},
                   "synthetic_train": 70, "synthetic_val": 35, "synthetic_test": 70}


@pytest.fixture(scope="module")
def two_model_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_finished_run(tmp_path_factory.mktemp("outputs"), TWO_TINY_MODELS)


@pytest.mark.slow
def test_rows_come_from_the_run_folder(two_model_run: Path) -> None:
    rows = report.results_rows(two_model_run)
    assert [row["model"] for row in rows] == ["basic_cnn", "resnet50v2", "basic_cnn + resnet50v2 (ensemble)"]
    for row in rows[:2]:
        metrics = load_json(runs.model_dir(two_model_run, row["model"]) / "metrics.json")
        assert row["run"] == two_model_run.name and row["data"] == "SYNTHETIC"
        assert row["test_accuracy"] == metrics["test"]["accuracy"]
        assert row["test_accuracy_tta"] == metrics["test_tta"]["accuracy"]
        assert row["collapsed"] == (metrics["test"]["collapse_warning"] is not None)
    # the ensemble row is the accuracy of the averaged probabilities, recomputed here independently
    saved = [load_predictions(runs.model_dir(two_model_run, m) / "predictions_test.npz")
             for m in ("basic_cnn", "resnet50v2")]
    averaged = (saved[0]["probabilities"] + saved[1]["probabilities"]) / 2
    expected = evaluate_predictions(saved[0]["labels"], averaged)["accuracy"]
    assert rows[2]["test_accuracy"] == pytest.approx(expected)
    table = report.results_markdown(rows)
    assert table.count("\n") == 4 and f"`{two_model_run.name}`" in table


@pytest.mark.slow
def test_cli_updates_only_the_marked_block(two_model_run: Path, tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nbefore\n{report.RESULTS_START}\nold table\n{report.RESULTS_END}\nafter\n")
    done = subprocess.run([sys.executable, "-m", "fer_lib.cli", "results", str(two_model_run), "--update-readme",
                           str(readme)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    text = readme.read_text()
    assert "old table" not in text and text.startswith("# Title\n\nbefore\n") and text.endswith("after\n")
    assert text.count("| basic_cnn |") == 1


def test_missing_markers_and_non_run_folders_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="the results markers are missing"):
        report.replace_results_block("no markers here", "| table |")
    done = subprocess.run([sys.executable, "-m", "fer_lib.cli", "results", str(tmp_path)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2 and "is not a run folder" in done.stderr


@pytest.mark.slow
def test_run_statistics_intervals_mcnemar_and_the_summary_file(two_model_run: Path, tmp_path: Path) -> None:
    import numpy as np

    from fer_lib.evaluate import ensemble_probabilities

    results = report.load_run_results(two_model_run)
    summary = report.run_statistics(results, resamples=1000)
    test = summary["splits"]["test"]
    saved = {m: load_predictions(runs.model_dir(two_model_run, m) / "predictions_test.npz")
             for m in ("basic_cnn", "resnet50v2")}
    labels = saved["basic_cnn"]["labels"]
    right = {m: saved[m]["probabilities"].argmax(1) == labels for m in saved}
    assert set(test["accuracy"]) == {"basic_cnn", "resnet50v2", "ensemble"}
    for model in saved:
        interval = test["accuracy"][model]
        assert interval["accuracy"] == pytest.approx(right[model].mean())
        assert interval["low"] <= interval["accuracy"] <= interval["high"]
    pair = next(c for c in test["comparisons"] if (c["a"], c["b"]) == ("basic_cnn", "resnet50v2"))
    assert pair["mcnemar"]["a_right_b_wrong"] == int(np.sum(right["basic_cnn"] & ~right["resnet50v2"]))
    assert pair["mcnemar"]["a_wrong_b_right"] == int(np.sum(~right["basic_cnn"] & right["resnet50v2"]))
    assert pair["verdict_a_beats_b"] in ("supported", "not supported", "inconclusive")
    averaged = ensemble_probabilities([saved[m]["probabilities"] for m in saved])
    assert summary["ensemble"]["test"]["accuracy"] == pytest.approx(float(np.mean(averaged.argmax(1) == labels)))
    assert len(report.statistics_sentences(summary)) == 3
    assert list(report.comparison_table(summary).columns)[-1] == "a beats b"

    # a copy of the run without predictions (as committed in results/) still has its ensemble row, from summary.json
    copy = copy_run_without_predictions(two_model_run, tmp_path / "copy")
    report.write_summary(copy, summary)
    rows = report.results_rows(copy)
    assert rows[-1]["model"].endswith("(ensemble)")
    assert rows[-1]["test_accuracy"] == pytest.approx(summary["ensemble"]["test"]["accuracy"])
