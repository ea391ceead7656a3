"""The README results table: every number comes from a run folder (models and the ensemble), never typed in."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fer_lib.analysis import report, stats
from fer_lib.analysis.results import load_run_results, read_summary
from fer_lib.app import runs, tables
from fer_lib.core import records
from fer_lib.core.evaluate import evaluate_predictions, load_predictions

try:
    from fixtures_runs import copy_run_without_predictions, make_crafted_seed_run
except ImportError:  # pragma: no cover - when tests/ is imported as a package
    from tests.fixtures_runs import copy_run_without_predictions, make_crafted_seed_run

@pytest.fixture(scope="module")
def two_model_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of one seed with two models whose records are chosen, not trained (the statistics only read them)."""
    return make_crafted_seed_run(tmp_path_factory.mktemp("outputs"), (0,), name="results-test")


def test_rows_come_from_the_run_folder(two_model_run: Path) -> None:
    rows = tables.results_rows(two_model_run)
    assert [row["model"] for row in rows] == ["basic_cnn", "resnet50v2", "basic_cnn + resnet50v2 (ensemble)"]
    for row in rows[:2]:
        metrics = records.read_json(records.model_dir(two_model_run, row["model"]) / "metrics.json")
        assert row["run"] == two_model_run.name and row["data"] == "SYNTHETIC"
        assert row["test_accuracy"] == metrics["test"]["accuracy"]
        assert row["test_accuracy_tta"] == metrics["test_tta"]["accuracy"]
        assert row["collapsed"] == (metrics["test"]["collapse_warning"] is not None)
    # the ensemble row is the accuracy of the averaged probabilities, recomputed here independently
    saved = [load_predictions(records.model_dir(two_model_run, m) / "predictions_test.npz")
             for m in ("basic_cnn", "resnet50v2")]
    averaged = (saved[0]["probabilities"] + saved[1]["probabilities"]) / 2
    expected = evaluate_predictions(saved[0]["labels"], averaged)["accuracy"]
    assert rows[2]["test_accuracy"] == pytest.approx(expected)
    table = tables.results_markdown(rows)
    assert table.count("\n") == 4 and f"`{two_model_run.name}`" in table


def test_cli_updates_only_the_marked_block(two_model_run: Path, tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nbefore\n{tables.RESULTS_START}\nold table\n{tables.RESULTS_END}\nafter\n")
    done = subprocess.run([sys.executable, "-m", "fer_lib.app.cli", "results", str(two_model_run), "--update-readme",
                           str(readme)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    text = readme.read_text()
    assert "old table" not in text and text.startswith("# Title\n\nbefore\n") and text.endswith("after\n")
    assert text.count("| basic_cnn |") == 1


def test_missing_markers_and_non_run_folders_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="the results markers are missing"):
        tables.replace_results_block("no markers here", "| table |")
    done = subprocess.run([sys.executable, "-m", "fer_lib.app.cli", "results", str(tmp_path)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2 and "is not a run folder" in done.stderr


def test_run_statistics_intervals_mcnemar_and_the_summary_file(two_model_run: Path, tmp_path: Path) -> None:
    import numpy as np

    from fer_lib.core.evaluate import ensemble_probabilities

    results = load_run_results(two_model_run)
    summary = stats.run_statistics(results, resamples=1000)
    assert summary["seeds"] == [0] and summary["over_seeds"]["comparisons"][0]["p_value"] is None  # one seed: no test
    seed = summary["per_seed"]["0"]
    test = seed["splits"]["test"]
    saved = {m: load_predictions(records.model_dir(two_model_run, m) / "predictions_test.npz")
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
    assert seed["ensemble"]["test"]["accuracy"] == pytest.approx(float(np.mean(averaged.argmax(1) == labels)))
    assert len(report.statistics_sentences(summary)) == 3
    assert list(report.comparison_table(summary).columns)[-1] == "a beats b"

    # a copy of the run without predictions (as committed in results/) still has its ensemble row, from summary.json
    copy = copy_run_without_predictions(two_model_run, tmp_path / "copy")
    records.write_json(copy / records.SUMMARY_FILE, summary)
    rows = tables.results_rows(copy)
    assert rows[-1]["model"].endswith("(ensemble)")
    assert rows[-1]["test_accuracy"] == pytest.approx(seed["ensemble"]["test"]["accuracy"])


def test_a_summary_of_fer_study_0_1_is_read_as_a_run_of_one_seed(tmp_path: Path) -> None:
    """summary.json of a single-seed run before the one shape (results/ of 2026-11-28) reads in today's shape."""
    (tmp_path / records.PARAMS_FILE).write_text("seed: 4\n")
    records.write_json(tmp_path / records.SUMMARY_FILE, {"splits": {"test": {}}, "ensemble": {}, "paper_claims": [1]})
    summary = read_summary(tmp_path)
    assert summary["seeds"] == [4] and summary["per_seed"]["4"]["splits"] == {"test": {}}
    assert summary["paper_claims"] == [1]


@pytest.fixture(scope="module")
def seed_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_crafted_seed_run(tmp_path_factory.mktemp("seeds"), (0, 1, 2))


def test_several_seeds_mean_std_paired_test_and_per_seed_mcnemar(seed_run: Path) -> None:
    """Over seeds: mean and std (ddof=1) per model and for the ensemble, the paired t-test of scipy, and per seed
    the intervals and McNemar counts of that seed's predictions."""
    import numpy as np
    from scipy import stats as scipy_stats

    results = load_run_results(seed_run)
    assert results.seeds == [0, 1, 2] and results.first.seed == 0 and results.models == ["basic_cnn", "resnet50v2"]
    summary = stats.run_statistics(results, resamples=1000)
    assert summary["seeds"] == [0, 1, 2] and set(summary["per_seed"]) == {"0", "1", "2"}

    right = {(seed, m): None for seed in (0, 1, 2) for m in ("basic_cnn", "resnet50v2")}
    for seed, model in right:
        saved = load_predictions(records.model_dir(seed_run, model, seed) / "predictions_test.npz")
        right[seed, model] = saved["probabilities"].argmax(1) == saved["labels"]
    accuracies = {m: [float(right[s, m].mean()) for s in (0, 1, 2)] for m in ("basic_cnn", "resnet50v2")}
    over = summary["over_seeds"]
    for model, values in accuracies.items():
        entry = over["models"][model]["test_accuracy"]
        assert entry["values"] == pytest.approx(values)
        assert entry["mean"] == pytest.approx(np.mean(values)) and entry["std"] == pytest.approx(np.std(values, ddof=1))
        assert entry["low"] < entry["mean"] < entry["high"]
    assert over["models"]["ensemble"]["test_accuracy"]["n"] == 3
    pair = next(c for c in over["comparisons"] if (c["a"], c["b"]) == ("basic_cnn", "resnet50v2"))
    reference = scipy_stats.ttest_rel(accuracies["basic_cnn"], accuracies["resnet50v2"])
    assert pair["p_value"] == pytest.approx(reference.pvalue)
    assert pair["verdict_a_beats_b"] == "supported"  # 0.7 vs 0.45 by construction
    for seed in (0, 1, 2):
        comparison = next(c for c in summary["per_seed"][str(seed)]["splits"]["test"]["comparisons"]
                          if (c["a"], c["b"]) == ("basic_cnn", "resnet50v2"))
        assert comparison["mcnemar"]["a_right_b_wrong"] == int(np.sum(right[seed, "basic_cnn"]
                                                                      & ~right[seed, "resnet50v2"]))
        assert comparison["mcnemar"]["a_wrong_b_right"] == int(np.sum(~right[seed, "basic_cnn"]
                                                                      & right[seed, "resnet50v2"]))

    table = report.seed_table(summary)
    assert table.loc["basic_cnn", "seeds"] == 3
    assert table.loc["resnet50v2", "test_accuracy mean"] == pytest.approx(np.mean(accuracies["resnet50v2"]))
    assert report.interval_table(summary).index.names == ["seed", "split", "model"]
    lines = report.statistics_sentences(summary)
    assert lines[0].startswith("basic_cnn vs resnet50v2 over 3 seeds") and "paired t-test p = " in lines[0]
    assert sum(line.startswith("Seed 1: ") for line in lines) == 3
    curves = report.training_curves(results)
    assert set(curves["seed"]) == {0, 1, 2} and len(curves) == 3 * 2 * 5 * 4
    assert set(curves["split"]) == {"train", "val"} and set(curves["metric"]) == {"loss", "accuracy"}


def test_several_seeds_in_the_results_table_listing_and_claims(seed_run: Path, tmp_path: Path) -> None:
    from fer_lib.analysis import claims
    results = load_run_results(seed_run)
    summary = stats.run_statistics(results, resamples=1000)
    checked = claims.paper_claims(results, summary)
    early, final = checked
    assert [s["seed"] for s in early["seeds"]] == [0, 1, 2]
    assert early["verdict"] == "not supported"  # the crafted ResNet50V2 climbs far above the baseline
    assert final["verdict"] == "not supported" and all(s["difference"] < 0 for s in final["seeds"])
    sentences = claims.claims_sentences(checked, synthetic=True)
    assert "**not supported**" in sentences[1] and "paired t-test p = " in sentences[1]
    assert claims.early_epochs_table(results).shape == (6, 6)

    records.write_json(seed_run / records.SUMMARY_FILE, {**summary, "paper_claims": checked})
    rows = tables.results_rows(seed_run)
    assert [row["seeds"] for row in rows] == [3, 3, 3] and rows[-1]["model"].endswith("(ensemble)")
    table = tables.results_markdown(rows)
    mean, std = summary["over_seeds"]["models"]["basic_cnn"]["test_accuracy"]["mean"], \
        summary["over_seeds"]["models"]["basic_cnn"]["test_accuracy"]["std"]
    assert f"| 3 | {mean:.3f} ± {std:.3f} |" in table and "| 95% interval |" in table
    assert "± std" in tables.headline_table(seed_run).columns
    listed = runs.format_table(runs.list_rows(seed_run.parent))
    assert "seeds" in listed.splitlines()[0] and "  3  " in listed


def test_a_model_dir_names_its_seed_and_the_seeds_are_found(tmp_path: Path) -> None:
    assert records.model_dir(tmp_path, "basic_cnn") == tmp_path / "models" / "basic_cnn"
    assert records.model_dir(tmp_path, "basic_cnn", 3) == tmp_path / "seeds" / "seed-3" / "models" / "basic_cnn"
    for seed in (10, 2):
        records.model_dir(tmp_path, "basic_cnn", seed).mkdir(parents=True)
    (tmp_path / "seeds" / "notes").mkdir()
    assert list(records.seed_folders(tmp_path)) == [2, 10]
    (tmp_path / records.PARAMS_FILE).write_text("seed: 7\n")
    assert records.seed_folders(tmp_path / "seeds" / "seed-2") == {0: tmp_path / "seeds" / "seed-2"}
    single = tmp_path / "single"
    single.mkdir()
    (single / records.PARAMS_FILE).write_text("seed: 7\n")
    assert records.seed_folders(single) == {7: single}  # a run of one seed is a run of that seed
