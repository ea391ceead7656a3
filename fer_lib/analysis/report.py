"""Pure summaries of a run for the notebooks: load a run's results, tabulate them, and word the conclusions.

Nothing here plots or trains; every function takes the plain records a run folder holds (``metrics.json`` as
written by :func:`fer_lib.app.study.run_model`, ``history.csv`` as written by :func:`fer_lib.core.train.train_model`) and
returns tables (pandas) or sentences, so the compare notebook's conclusions are computed from the numbers.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from fer_lib.app import runs
from fer_lib.core.evaluate import load_json

SPLIT_KEYS: tuple[str, ...] = ("val", "test", "test_tta")

TIE = 0.005  # differences below this are called a tie
EPOCH_LABEL = "epoch {}"


@dataclasses.dataclass
class RunResults:
    """What a run folder holds for comparison: its params and, per finished model, metrics and history."""

    run_dir: Path
    params: dict[str, Any]
    summaries: dict[str, dict[str, Any]]  # per model; in a run with several seeds, those of ``seed``
    histories: dict[str, pd.DataFrame]
    seed: int | None = None  # the seed ``summaries`` and ``histories`` come from (None: a single-seed run)
    by_seed: dict[int, RunResults] = dataclasses.field(default_factory=dict)  # several seeds: each seed's results

    @property
    def models(self) -> list[str]:
        return list(self.summaries)

    @property
    def seeds(self) -> list[int]:
        """The run's seeds (several-seed runs), in increasing order; [] for a single-seed run."""
        return list(self.by_seed)

    def each_seed(self) -> dict[int | None, RunResults]:
        """{seed: its results}: every seed of a several-seed run, or {None: self} for a single-seed run."""
        return dict(self.by_seed) if self.by_seed else {self.seed: self}

    def model_dir(self, model: str) -> Path:
        """The folder of ``model``'s records (of this seed, in a several-seed run)."""
        return runs.model_dir(self.run_dir, model, self.seed)

    @property
    def synthetic(self) -> bool:
        """True when any model of the run was trained on synthetic data (or params asked for it)."""
        return bool(self.params.get("synthetic")) or any(s.get("synthetic") for s in self.summaries.values())

    @property
    def data_source(self) -> str:
        sources = sorted({str(s.get("data_source")) for s in self.summaries.values()})
        return "; ".join(sources)


def resolve_run_dir(run_dir: str | Path | None) -> Path:
    """``None``: the newest run with a trained model; a relative path: from the working directory, else the project."""
    if run_dir is None or str(run_dir) == "":
        return runs.latest_run()
    path = Path(run_dir).expanduser()
    if not path.is_absolute() and not path.exists():
        candidate = runs.project_root() / path
        if candidate.exists():
            return candidate
    if not path.is_dir():
        raise FileNotFoundError(f"run folder '{run_dir}' does not exist")
    return path


def load_history(path: str | Path) -> pd.DataFrame:
    """A ``history.csv`` with a 1-based ``epoch`` column (Keras's CSVLogger counts from 0)."""
    history = pd.read_csv(path)
    if "epoch" in history:
        history["epoch"] = history["epoch"].astype(int) + 1
    else:
        history.insert(0, "epoch", range(1, len(history) + 1))
    return history


def epochs_of(history: pd.DataFrame) -> pd.Series:
    """1-based epoch numbers of a history (a raw CSVLogger file counts from 0; :func:`load_history` from 1)."""
    if "epoch" not in history:
        return pd.Series(range(1, len(history) + 1), index=history.index, name="epoch")
    epochs = history["epoch"].astype(int)
    return epochs + 1 if len(epochs) and epochs.min() == 0 else epochs


def load_model_results(model_dir: str | Path) -> tuple[dict[str, Any], pd.DataFrame | None]:
    """One model folder's ``metrics.json`` and its history (None when it has no history.csv)."""
    model_dir = Path(model_dir)
    summary = load_json(model_dir / runs.METRICS_FILE)
    history_file = model_dir / runs.HISTORY_FILE
    return summary, load_history(history_file) if history_file.is_file() else None


def load_run_results(run_dir: str | Path | None = None, *, seed: int | None = None) -> RunResults:
    """Params, metrics and histories of every finished model of a run (``None``: the newest run).

    A run with several seeds: the results of ``seed`` (default: its first seed), with every seed's in ``by_seed``.
    """
    run_dir = resolve_run_dir(run_dir)
    seeds = runs.run_seeds(run_dir)
    if seeds and seed is None:
        by_seed = {s: load_run_results(run_dir, seed=s) for s in seeds if runs.run_models(run_dir, s)}
        if not by_seed:
            raise FileNotFoundError(f"run folder '{run_dir}' has no trained model in any of its seed folders "
                                    f"({runs.SEEDS_DIR}/seed-<seed>/models/<model>/{runs.METRICS_FILE})")
        first = next(iter(by_seed.values()))
        return dataclasses.replace(first, by_seed=by_seed)
    if seed is not None and seed not in seeds:
        raise FileNotFoundError(f"run folder '{run_dir}' has no seed {seed} (seeds: {seeds or 'none'})")
    models = runs.run_models(run_dir, seed)
    if not models:
        raise FileNotFoundError(f"run folder '{run_dir}' has no trained model (no "
                                f"models/<model>/{runs.METRICS_FILE}); run the 02_train notebook or `fer-study run` "
                                f"first")
    params = runs.read_params(run_dir)
    ordered = [m for m in params.get("models", []) if m in models] + [m for m in models
                                                                      if m not in params.get("models", [])]
    summaries: dict[str, dict[str, Any]] = {}
    histories: dict[str, pd.DataFrame] = {}
    for model in ordered:
        summary, history = load_model_results(runs.model_dir(run_dir, model, seed))
        summaries[model] = summary
        if history is not None:
            histories[model] = history
    return RunResults(run_dir=Path(run_dir), params=params, summaries=summaries, histories=histories, seed=seed)


# --------------------------------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------------------------------


def metrics_table(summary: Mapping[str, Any]) -> pd.DataFrame:
    """One row per evaluated split (val, test, test_tta): accuracy beside the majority-class baseline, F1, warnings."""
    rows = []
    for key in SPLIT_KEYS:
        if key not in summary:
            continue
        m = summary[key]
        rows.append({"split": key, "n": m["n"], "accuracy": m["accuracy"],
                     "majority_baseline": m["majority_class_accuracy"],
                     "above_baseline": m["accuracy"] - m["majority_class_accuracy"],
                     "macro_f1": m["macro_f1"], "weighted_f1": m["weighted_f1"], "top2_accuracy": m["top2_accuracy"],
                     "collapse_warning": m["collapse_warning"] or ""})
    return pd.DataFrame(rows).set_index("split")


def per_class_table(metrics: Mapping[str, Any]) -> pd.DataFrame:
    """Precision, recall, F1, support and predicted share per class of one split's metrics."""
    table = pd.DataFrame.from_dict(metrics["per_class"], orient="index")
    table.index.name = "class"
    return table[["precision", "recall", "f1", "support", "predicted_share"]]


def compare_table(summaries: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """One row per model: test accuracy with and without TTA, macro-F1, the majority baseline, collapse."""
    rows = []
    for model, s in summaries.items():
        test = s["test"]
        row = {"model": model, "test_accuracy": test["accuracy"],
               "test_accuracy_tta": s["test_tta"]["accuracy"] if "test_tta" in s else math.nan,
               "majority_baseline": test["majority_class_accuracy"], "test_macro_f1": test["macro_f1"],
               "val_accuracy": s["val"]["accuracy"] if "val" in s else math.nan,
               "epochs": s.get("epochs_run"), "best_epoch": s.get("best_epoch"),
               "params": s.get("params"), "train_seconds": s.get("train_seconds"),
               "collapsed": test["collapse_warning"] is not None}
        row["tta_gain"] = row["test_accuracy_tta"] - row["test_accuracy"]
        rows.append(row)
    return pd.DataFrame(rows).set_index("model")


def accuracy_at_epochs(histories: Mapping[str, pd.DataFrame],
                       epochs: Sequence[int | str] = (1, 5, 10, "last")) -> pd.DataFrame:
    """Train and val accuracy of each model at the given (1-based) epochs and ``"last"``; NaN past a run's end.

    Index: (model, curve) with curve ``train`` / ``val``; columns ``epoch N`` and ``last``, plus ``last_epoch``.
    """
    rows = []
    for model, history in histories.items():
        by_epoch = history.set_index(epochs_of(history).to_numpy())
        last = int(by_epoch.index.max()) if len(by_epoch) else 0
        for curve, column in (("train", "accuracy"), ("val", "val_accuracy")):
            if column not in by_epoch:
                continue
            row: dict[str, Any] = {"model": model, "curve": curve}
            for epoch in epochs:
                label = "last" if epoch == "last" else EPOCH_LABEL.format(epoch)
                at = last if epoch == "last" else int(epoch)
                row[label] = float(by_epoch[column].get(at, math.nan)) if last else math.nan
            row["last_epoch"] = last
            rows.append(row)
    if not rows:
        return pd.DataFrame(columns=["model", "curve"]).set_index(["model", "curve"])
    return pd.DataFrame(rows).set_index(["model", "curve"])


# --------------------------------------------------------------------------------------------------------------------
# Conclusions
# --------------------------------------------------------------------------------------------------------------------


def _compare(summaries: Mapping[str, Mapping[str, Any]], key: str, label: str) -> str:
    values = {model: float(s["test"][key]) for model, s in summaries.items()}
    ranked = sorted(values, key=values.get, reverse=True)
    best, runner_up = ranked[0], ranked[1]
    gap = values[best] - values[runner_up]
    if gap < TIE:
        return (f"On test {label}, {best} and {runner_up} tie: {values[best]:.3f} vs {values[runner_up]:.3f} "
                f"(difference {gap:.3f}).")
    others = "; ".join(f"{m} {values[m]:.3f}" for m in ranked[1:])
    return f"On test {label}, {best} is better: {values[best]:.3f} vs {others} (by {gap:.3f})."


def conclusions(summaries: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Sentences computed from the numbers: winner on test accuracy and macro-F1, collapse, TTA, hardest class per
    model. ``summaries``: {model: metrics.json}. The paper's claims are judged in fer_lib.analysis.claims, the statistics of
    each comparison in :func:`run_statistics`."""
    if not summaries:
        return ["No trained model in this run: nothing to conclude."]
    lines: list[str] = []
    if any(s.get("synthetic") for s in summaries.values()):
        lines.append("**SYNTHETIC DATA**: every number below comes from generated cartoon faces, not FER2013; it "
                     "checks the pipeline and says nothing about real facial expression recognition.")
    collapsed = [model for model, s in summaries.items() if s["test"].get("collapse_warning")]
    if len(summaries) >= 2:
        if len(collapsed) == len(summaries):
            lines.append("No winner: every model collapsed (no better than always predicting the majority class), "
                         "so the differences below are noise.")
        for key, label in (("accuracy", "accuracy"), ("macro_f1", "macro-F1")):
            sentence = _compare(summaries, key, label)
            best = max(summaries, key=lambda m: summaries[m]["test"][key])
            if best in collapsed and len(collapsed) < len(summaries):
                sentence += f" But {best} collapsed (see below), so this is not a real win."
            lines.append(sentence)
    else:
        (model, s), = summaries.items()
        lines.append(f"Only {model} was trained in this run: test accuracy {s['test']['accuracy']:.3f}, macro-F1 "
                     f"{s['test']['macro_f1']:.3f}; there is no second model to compare with.")
    for model, s in summaries.items():
        test = s["test"]
        warning = test.get("collapse_warning")
        if warning:
            lines.append(f"{model} is not a real result on test: {warning}.")
        else:
            lines.append(f"{model} did not collapse: test accuracy {test['accuracy']:.3f} beats the majority-class "
                         f"baseline {test['majority_class_accuracy']:.3f} (always '{test['majority_class']}') by "
                         f"{test['accuracy'] - test['majority_class_accuracy']:.3f}.")
    for model, s in summaries.items():
        if "test_tta" in s:
            gain = s["test_tta"]["accuracy"] - s["test"]["accuracy"]
            lines.append(f"Horizontal-flip TTA changes {model}'s test accuracy by {gain:+.3f} "
                         f"({s['test']['accuracy']:.3f} → {s['test_tta']['accuracy']:.3f}).")
    for model, s in summaries.items():
        f1 = {name: values["f1"] for name, values in s["test"]["per_class"].items() if values["support"] > 0}
        if f1:
            low, high = min(f1.values()), max(f1.values())
            hardest = [name for name, value in f1.items() if value == low]
            easiest = [name for name, value in f1.items() if value == high]
            lines.append(f"Hardest class{'es' if len(hardest) > 1 else ''} for {model}: {', '.join(hardest)} "
                         f"(test F1 {low:.3f}); easiest: {', '.join(easiest)} (F1 {high:.3f}).")
    return lines


def as_markdown(lines: Sequence[str], title: str | None = "Conclusions") -> str:
    """A markdown bullet list (with an optional heading) for ``IPython.display.Markdown``."""
    body = "\n".join(f"- {line}" for line in lines)
    return f"### {title}\n\n{body}" if title else body


def synthetic_notice_markdown(how: str, synthetic: bool) -> str:
    """A loud markdown banner for synthetic data, or a plain line naming the data source."""
    if synthetic:
        return (f"<div style='border:3px solid #c00;padding:8px;background:#fee'><b style='color:#c00;font-size:130%'>"
                f"⚠ SYNTHETIC DATA — not FER2013</b><br>{how}</div>")
    return f"**Data:** {how}"


def ensemble_summary(results: RunResults, split: str = "test") -> dict[str, Any] | None:
    """Metrics of the averaged probabilities of all the run's models on ``split`` (``test`` or ``test_tta``).

    None when fewer than two models have predictions for that split. The models' predictions must cover the same
    images in the same order (they do within one run); a mismatch is an error rather than a silently wrong number.
    """
    from fer_lib.core.evaluate import ensemble_probabilities, evaluate_predictions

    predictions = _split_predictions(results, split)
    if len(predictions) < 2:  # a copy of the run without predictions (results/): the compare step's summary.json
        ensemble = saved_statistics(results).get("ensemble", {}).get(split)
        return {"split": split, **ensemble} if ensemble else None
    probabilities = ensemble_probabilities([p["probabilities"] for p in predictions.values()])
    metrics = evaluate_predictions(next(iter(predictions.values()))["labels"], probabilities)
    return {"split": split, "models": list(predictions), **metrics}


STATISTICS_SPLITS: tuple[str, ...] = ("test", "test_tta")
ENSEMBLE = "ensemble"


def _split_predictions(results: RunResults, split: str) -> dict[str, dict[str, Any]]:
    """The models' saved predictions on ``split`` (all on the same images, checked), by model."""
    import numpy as np

    from fer_lib.core.evaluate import load_predictions

    files = {model: results.model_dir(model) / f"predictions_{split}.npz" for model in results.models}
    predictions = {model: load_predictions(path) for model, path in files.items() if path.is_file()}
    first_model = next(iter(predictions), None)
    for model, stored in predictions.items():
        if not np.array_equal(stored["ids"], predictions[first_model]["ids"]):
            raise ValueError(f"{files[model]} covers other images than {files[first_model]}: the models' "
                             f"predictions on {split} cannot be compared or ensembled")
    return predictions


def saved_statistics(results: RunResults) -> dict[str, Any]:
    """The run's summary.json as :func:`run_statistics` wrote it, for ``results``'s seed ({} when there is none)."""
    saved = results.run_dir / runs.SUMMARY_FILE
    summary = load_json(saved) if saved.is_file() else {}
    if results.seed is not None:
        return summary.get("per_seed", {}).get(str(results.seed), {})
    return summary


def run_statistics(results: RunResults, *, seed: int = 0, resamples: int = 2000) -> dict[str, Any]:
    """The numbers behind every comparison of a run, from its saved predictions on test (and test with TTA).

    Per model and for the ensemble (averaged probabilities, two models or more): the accuracy with a 95% bootstrap
    interval over the test images; for each pair: the accuracy difference with its paired-bootstrap interval,
    McNemar's exact test on the same images, and a verdict on "the first beats the second" (fer_lib.analysis.stats). The
    ensemble's metrics are kept too, so the README table can be regenerated from a run folder without predictions.

    A run with several seeds: these statistics per seed (``per_seed``), and over seeds (``over_seeds``): each model's
    (and the ensemble's) mean and standard deviation of test accuracy, accuracy with TTA and macro-F1, and a paired
    comparison of each pair over seeds (:func:`seed_statistics`). ``seed`` seeds the bootstrap, not training.
    """
    if results.by_seed:
        per_seed = {str(s): run_statistics(r, seed=seed, resamples=resamples) for s, r in results.by_seed.items()}
        return {"seeds": results.seeds, "per_seed": per_seed,
                "over_seeds": seed_statistics(results, per_seed)}
    from fer_lib.analysis import stats
    from fer_lib.core.data import majority_class_accuracy
    from fer_lib.core.evaluate import ensemble_probabilities, evaluate_predictions

    summary: dict[str, Any] = {"seed": seed, "resamples": resamples, "confidence": 0.95, "splits": {},
                               "ensemble": {}}
    for split in STATISTICS_SPLITS:
        predictions = _split_predictions(results, split)
        if not predictions:
            continue
        labels = next(iter(predictions.values()))["labels"]
        predicted = {model: stored["probabilities"].argmax(axis=1) for model, stored in predictions.items()}
        if len(predictions) >= 2:
            averaged = ensemble_probabilities([stored["probabilities"] for stored in predictions.values()])
            predicted[ENSEMBLE] = averaged.argmax(axis=1)
            metrics = evaluate_predictions(labels, averaged)
            summary["ensemble"][split] = {"models": list(predictions), **{
                key: metrics[key] for key in ("n", "accuracy", "macro_f1", "weighted_f1", "top2_accuracy",
                                              "majority_class_accuracy", "majority_class", "collapse_warning")}}
        entry: dict[str, Any] = {"n": int(len(labels)), "majority_baseline": majority_class_accuracy(labels),
                                 "accuracy": {}, "comparisons": []}
        for name, values in predicted.items():
            entry["accuracy"][name] = stats.bootstrap_accuracy_interval(labels, values, resamples=resamples,
                                                                        seed=seed)
        names = list(predicted)
        for index, a in enumerate(names):
            for b in names[index + 1:]:
                difference = stats.bootstrap_difference_interval(labels, predicted[a], predicted[b],
                                                                 resamples=resamples, seed=seed)
                mcnemar = stats.mcnemar_exact(labels, predicted[a], predicted[b])
                entry["comparisons"].append({
                    "a": a, "b": b, "difference": difference["difference"], "low": difference["low"],
                    "high": difference["high"], "mcnemar": mcnemar,
                    "verdict_a_beats_b": stats.verdict(difference["difference"], difference["low"],
                                                       difference["high"], mcnemar["p_value"])})
        summary["splits"][split] = entry
    return summary


SEED_METRICS: tuple[tuple[str, str, str], ...] = (("test_accuracy", "test", "accuracy"),
                                                   ("test_accuracy_tta", "test_tta", "accuracy"),
                                                   ("macro_f1", "test", "macro_f1"))
"""The per-seed numbers summarised over seeds: (name, split of metrics.json, key)."""


def seed_values(results: RunResults, per_seed: Mapping[str, Mapping[str, Any]] | None = None) -> pd.DataFrame:
    """One row per seed and model (and the ensemble, from the per-seed statistics when given): the numbers of
    :data:`SEED_METRICS`. The long table behind the mean ± std over seeds."""
    rows = []
    for seed, seed_results in results.each_seed().items():
        for model, summary in seed_results.summaries.items():
            row: dict[str, Any] = {"model": model, "seed": seed}
            for name, split, key in SEED_METRICS:
                row[name] = (summary.get(split) or {}).get(key)
            rows.append(row)
        ensemble = ((per_seed or {}).get(str(seed)) or {}).get("ensemble", {})
        if ensemble.get("test"):
            rows.append({"model": ENSEMBLE, "seed": seed, "test_accuracy": ensemble["test"]["accuracy"],
                         "test_accuracy_tta": (ensemble.get("test_tta") or {}).get("accuracy"),
                         "macro_f1": ensemble["test"]["macro_f1"]})
    return pd.DataFrame(rows, columns=["model", "seed", *(name for name, _, _ in SEED_METRICS)])


def seed_statistics(results: RunResults, per_seed: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Over the seeds of a run: per model (and the ensemble) mean, std and values of :data:`SEED_METRICS`, and for
    each pair a paired comparison of test accuracy over seeds (fer_lib.analysis.stats.paired_seed_comparison) with its
    verdict on "the first beats the second"."""
    from fer_lib.analysis import stats
    values = seed_values(results, per_seed)
    models: dict[str, Any] = {}
    for model, rows in values.groupby("model", sort=False):
        rows = rows.sort_values("seed")
        models[model] = {"seeds": [int(s) for s in rows["seed"]]}
        for name, _, _ in SEED_METRICS:
            column = rows[name].dropna()
            if len(column):
                interval = stats.mean_interval(column.to_numpy(float))
                models[model][name] = {**stats.mean_std(column.to_numpy(float)), "low": interval["low"],
                                       "high": interval["high"], "values": column.tolist()}
            else:
                models[model][name] = None
    names, comparisons = list(models), []
    for index, a in enumerate(names):
        for b in names[index + 1:]:
            paired = values.pivot(index="seed", columns="model", values="test_accuracy")[[a, b]].dropna()
            if len(paired) == 0:
                continue
            result = stats.paired_seed_comparison(paired[a].to_numpy(float), paired[b].to_numpy(float))
            comparisons.append({"a": a, "b": b, "metric": "test_accuracy", **result,
                                "verdict_a_beats_b": stats.verdict(result["mean_difference"], result["low"],
                                                                   result["high"], result["p_value"])})
    return {"models": models, "comparisons": comparisons}


def seed_table(summary: Mapping[str, Any]) -> pd.DataFrame:
    """Mean ± std over seeds per model (and the ensemble): test accuracy, with TTA, macro-F1, and the seed count."""
    rows = []
    for model, entry in summary["over_seeds"]["models"].items():
        row: dict[str, Any] = {"model": model, "seeds": len(entry["seeds"])}
        for name, _, _ in SEED_METRICS:
            value = entry.get(name)
            row[f"{name} mean"] = value["mean"] if value else None
            row[f"{name} std"] = value["std"] if value else None
        rows.append(row)
    return pd.DataFrame(rows).set_index("model")


def seed_comparison_table(summary: Mapping[str, Any]) -> pd.DataFrame:
    """Per pair, over seeds: mean difference of test accuracy (first minus second), its t-interval, the paired
    t-test's p-value and the verdict."""
    rows = [{"a": c["a"], "b": c["b"], "seeds": c["n"], "mean difference": c["mean_difference"],
             "95% low": c["low"], "95% high": c["high"], "paired t-test p": c["p_value"],
             "a beats b": c["verdict_a_beats_b"], "note": c["note"] or ""}
            for c in summary["over_seeds"]["comparisons"]]
    columns = ["a", "b", "seeds", "mean difference", "95% low", "95% high", "paired t-test p", "a beats b", "note"]
    return pd.DataFrame(rows, columns=columns).set_index(["a", "b"])


def seed_histories(results: RunResults) -> pd.DataFrame:
    """Every seed's training curves in one long table (model, seed, epoch, curve, value), for mean curves with a
    band over seeds."""
    frames = []
    for seed, seed_results in results.each_seed().items():
        for model, history in seed_results.histories.items():
            curves = [c for c in ("accuracy", "val_accuracy", "loss", "val_loss") if c in history]
            long = history.melt(id_vars="epoch", value_vars=curves, var_name="curve", value_name="value")
            frames.append(long.assign(model=model, seed=seed))
    columns = ["model", "seed", "epoch", "curve", "value"]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)


def write_summary(run_dir: str | Path, summary: Mapping[str, Any]) -> Path:
    """Save :func:`run_statistics` as the run's summary.json."""
    from fer_lib.core.evaluate import save_json

    return save_json(summary, Path(run_dir) / runs.SUMMARY_FILE)


def per_seed_statistics(summary: Mapping[str, Any]) -> dict[Any, Mapping[str, Any]]:
    """{seed: that seed's statistics} of a several-seed summary; {None: summary} of a single-seed one."""
    return {int(s): entry for s, entry in summary["per_seed"].items()} if "per_seed" in summary else {None: summary}


def interval_table(summary: Mapping[str, Any]) -> pd.DataFrame:
    """Accuracy with its 95% interval, per split and model (and the ensemble), beside the majority baseline; per
    seed too in a run with several seeds."""
    rows = [{"seed": seed, "split": split, "model": name, "accuracy": value["accuracy"], "95% low": value["low"],
             "95% high": value["high"], "majority baseline": entry["majority_baseline"], "n": entry["n"]}
            for seed, statistics in per_seed_statistics(summary).items()
            for split, entry in statistics["splits"].items() for name, value in entry["accuracy"].items()]
    index = ["split", "model"] if "per_seed" not in summary else ["seed", "split", "model"]
    columns = ["seed", "split", "model", "accuracy", "95% low", "95% high", "majority baseline", "n"]
    return pd.DataFrame(rows, columns=columns).set_index(index).drop(columns=[c for c in ["seed"] if c not in index])


def comparison_table(summary: Mapping[str, Any]) -> pd.DataFrame:
    """Per split and pair: the accuracy difference (first minus second), its interval, McNemar's counts and p; per
    seed too in a run with several seeds."""
    rows = [{"seed": seed, "split": split, "a": c["a"], "b": c["b"], "difference": c["difference"],
             "95% low": c["low"], "95% high": c["high"], "a right, b wrong": c["mcnemar"]["a_right_b_wrong"],
             "a wrong, b right": c["mcnemar"]["a_wrong_b_right"], "McNemar p": c["mcnemar"]["p_value"],
             "a beats b": c["verdict_a_beats_b"]}
            for seed, statistics in per_seed_statistics(summary).items()
            for split, entry in statistics["splits"].items() for c in entry["comparisons"]]
    index = ["split", "a", "b"] if "per_seed" not in summary else ["seed", "split", "a", "b"]
    columns = ["seed", "split", "a", "b", "difference", "95% low", "95% high", "a right, b wrong",
               "a wrong, b right", "McNemar p", "a beats b"]
    return pd.DataFrame(rows, columns=columns).set_index(index).drop(columns=[c for c in ["seed"] if c not in index])


def statistics_sentences(summary: Mapping[str, Any]) -> list[str]:
    """One sentence per pair compared on test: who is ahead, by how much (interval), McNemar's p and the verdict.
    Several seeds: one sentence per pair over seeds (paired t-test), then each seed's."""
    if "per_seed" in summary:
        lines = [_seed_sentence(c) for c in summary["over_seeds"]["comparisons"]]
        for seed, statistics in per_seed_statistics(summary).items():
            lines += [f"Seed {seed}: {line}" for line in statistics_sentences(statistics)]
        return lines
    from fer_lib.analysis.stats import verdict

    entry = summary.get("splits", {}).get("test")
    lines = []
    for c in (entry or {}).get("comparisons", []):
        counts = c["mcnemar"]
        if c["difference"] >= 0:
            better, worse, gap, low, high = c["a"], c["b"], c["difference"], c["low"], c["high"]
            only_better, only_worse = counts["a_right_b_wrong"], counts["a_wrong_b_right"]
        else:
            better, worse, gap, low, high = c["b"], c["a"], -c["difference"], -c["high"], -c["low"]
            only_better, only_worse = counts["a_wrong_b_right"], counts["a_right_b_wrong"]
        claim = verdict(gap, low, high, counts["p_value"])
        lines.append(f"{better} vs {worse} on test: {better} is ahead by {gap:.3f} (95% interval {low:+.3f} to "
                     f"{high:+.3f}); McNemar's exact test p = {counts['p_value']:.2g} ({only_better} images only "
                     f"{better} gets right, {only_worse} only {worse}): \"{better} is better\" is {claim}.")
    return lines


def _seed_sentence(c: Mapping[str, Any]) -> str:
    """A pair compared over seeds, in words: mean difference, its t-interval, the paired t-test and the verdict."""
    head = (f"{c['a']} vs {c['b']} over {c['n']} seeds: mean test accuracy {c['mean_a']:.3f} vs {c['mean_b']:.3f}, "
            f"difference {c['mean_difference']:+.3f}")
    if c["p_value"] is None:
        return f"{head} ({c['note']}): \"{c['a']} is better\" is {c['verdict_a_beats_b']}."
    return (f"{head} (95% t-interval {c['low']:+.3f} to {c['high']:+.3f}, paired t-test p = {c['p_value']:.2g}): "
            f"\"{c['a']} is better\" is {c['verdict_a_beats_b']}.")


def ensemble_table(ensembles: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per ensemble summary: accuracy and macro-F1 beside the majority-class baseline."""
    return pd.DataFrame([{"split": e["split"], "models": " + ".join(e["models"]), "accuracy": e["accuracy"],
                          "macro_f1": e["macro_f1"], "majority_baseline": e["majority_class_accuracy"],
                          "collapsed": e["collapse_warning"] is not None} for e in ensembles]).set_index("split")


RESULTS_START = "<!-- results:start (generated by `fer-study results --update-readme`; do not edit by hand) -->"
RESULTS_END = "<!-- results:end -->"


def run_statistics_for_table(results: RunResults) -> dict[str, Any]:
    """The run's statistics for its results rows: summary.json when the compare step wrote it (a copy of the run
    without predictions has only that), else computed from the predictions."""
    saved = results.run_dir / runs.SUMMARY_FILE
    if saved.is_file():
        return load_json(saved)
    if any(results.model_dir(model).joinpath("predictions_test.npz").is_file() for model in results.models):
        return run_statistics(results)
    return {}


def results_rows(run_dir: str | Path) -> list[dict[str, Any]]:
    """One row per finished model of a run (and one for the ensemble), every number read from the run folder.

    ``low``/``high``: the 95% interval of test accuracy (bootstrap over test images; over seeds, the t-interval of
    the mean). A run with several seeds: means over seeds, with ``*_std`` beside them and ``seeds`` their count.
    """
    run_dir = Path(run_dir)
    results = load_run_results(run_dir)
    statistics = run_statistics_for_table(results)
    manifest = runs.read_manifest(run_dir)
    device = (manifest.get("device") or {}).get("summary", "unknown device")
    backend = manifest.get("backend", "unknown backend")
    data = "SYNTHETIC" if results.synthetic else "FER2013"
    subset = results.params.get("subset")
    if subset and not results.synthetic:
        data += f" (train subset {subset})"
    common = {"run": run_dir.name, "data": data, "device": f"{device}, {backend}"}
    if results.by_seed:
        return _seed_rows(results, statistics, common)
    intervals = statistics.get("splits", {}).get("test", {}).get("accuracy", {})
    rows = []
    for model, summary in results.summaries.items():
        rows.append({
            **common, "model": model,
            "test_accuracy": summary["test"]["accuracy"],
            "test_accuracy_tta": summary.get("test_tta", {}).get("accuracy"),
            "macro_f1": summary["test"]["macro_f1"],
            "majority_baseline": summary["test"]["majority_class_accuracy"],
            "low": intervals.get(model, {}).get("low"), "high": intervals.get(model, {}).get("high"),
            "epochs": f"{summary['epochs_run']} (best {summary['best_epoch']})",
            "train_minutes": summary["train_seconds"] / 60.0,
            "collapsed": summary["test"]["collapse_warning"] is not None,
            "seeds": 1,
        })
    plain, tta = ensemble_summary(results, "test"), ensemble_summary(results, "test_tta")
    if plain:
        rows.append({
            **common, "model": " + ".join(plain["models"]) + " (ensemble)",
            "test_accuracy": plain["accuracy"], "test_accuracy_tta": tta["accuracy"] if tta else None,
            "macro_f1": plain["macro_f1"], "majority_baseline": plain["majority_class_accuracy"],
            "low": intervals.get(ENSEMBLE, {}).get("low"), "high": intervals.get(ENSEMBLE, {}).get("high"),
            "epochs": "", "train_minutes": None, "collapsed": plain["collapse_warning"] is not None, "seeds": 1,
        })
    return rows


def _seed_rows(results: RunResults, statistics: Mapping[str, Any], common: Mapping[str, Any]
               ) -> list[dict[str, Any]]:
    """The results rows of a several-seed run: per model (and the ensemble) means over seeds, std and interval."""
    over = (statistics.get("over_seeds") or {}).get("models") or seed_statistics(results, {})["models"]
    rows = []
    for model, entry in over.items():
        def value(name: str, key: str) -> Any:
            return (entry.get(name) or {}).get(key)

        per_seed = [r.summaries[model] for r in results.by_seed.values() if model in r.summaries]
        collapsed = [s["test"]["collapse_warning"] is not None for s in per_seed]
        if model == ENSEMBLE:
            baseline = next(iter(results.summaries.values()))["test"]["majority_class_accuracy"]
            label, epochs, minutes = " + ".join(results.models) + " (ensemble)", "", None
            ensembles = [statistics["per_seed"][str(s)]["ensemble"]["test"] for s in entry["seeds"]]
            collapsed = [e["collapse_warning"] is not None for e in ensembles]
        else:
            baseline = per_seed[0]["test"]["majority_class_accuracy"]
            label = model
            epochs = ", ".join(dict.fromkeys(f"{s['epochs_run']} (best {s['best_epoch']})" for s in per_seed))
            minutes = sum(s["train_seconds"] for s in per_seed) / 60.0 / len(per_seed)
        rows.append({
            **common, "model": label, "seeds": len(entry["seeds"]),
            "test_accuracy": value("test_accuracy", "mean"), "test_accuracy_std": value("test_accuracy", "std"),
            "test_accuracy_tta": value("test_accuracy_tta", "mean"),
            "test_accuracy_tta_std": value("test_accuracy_tta", "std"),
            "macro_f1": value("macro_f1", "mean"), "macro_f1_std": value("macro_f1", "std"),
            "majority_baseline": baseline,
            "low": value("test_accuracy", "low"), "high": value("test_accuracy", "high"),
            "epochs": epochs, "train_minutes": minutes,
            "collapsed": all(collapsed) if collapsed else False,
        })
    return rows


def headline_table(run_dir: str | Path) -> pd.DataFrame:
    """The report's first table: per model and for the ensemble, test accuracy with its 95% interval (and with flip
    TTA), macro-F1, the majority-class baseline, collapsed or not, epochs and training minutes (the README table's
    rows for one run); means and std over seeds for a run with several seeds."""
    rows = results_rows(run_dir)
    several = any(row.get("seeds", 1) > 1 for row in rows)
    columns = {"test_accuracy": "test accuracy" + (" (mean)" if several else ""),
               **({"test_accuracy_std": "± std"} if several else {}),
               "low": "95% low", "high": "95% high", "test_accuracy_tta": "with flip TTA", "macro_f1": "macro-F1",
               "majority_baseline": "majority baseline", "collapsed": "collapsed", "epochs": "epochs",
               "train_minutes": "training minutes", **({"seeds": "seeds"} if several else {})}
    return pd.DataFrame(rows, columns=["model", *columns]).set_index("model").rename(columns=columns)


def results_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """A markdown table of :func:`results_rows` rows (test = the provided PublicTest split). Runs with several
    seeds show mean ± std over seeds; the interval column is the 95% interval of test accuracy."""
    def number(value: Any, digits: int = 3) -> str:
        return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"

    def spread(row: Mapping[str, Any], key: str) -> str:
        std = row.get(f"{key}_std")
        return number(row[key]) + (f" ± {std:.3f}" if std is not None and row.get("seeds", 1) > 1 else "")

    def interval(row: Mapping[str, Any]) -> str:
        return f"{row['low']:.3f}–{row['high']:.3f}" if row.get("low") is not None else ""

    header = ("| run | model | data | seeds | test acc | 95% interval | test acc (flip TTA) | macro-F1 | "
              "majority baseline | epochs | train min | device | collapsed |")
    lines = [header, "|" + "---|" * 13]
    for row in rows:
        lines.append(
            f"| `{row['run']}` | {row['model']} | {row['data']} | {row.get('seeds', 1)} | "
            f"{spread(row, 'test_accuracy')} | {interval(row)} | {spread(row, 'test_accuracy_tta')} | "
            f"{spread(row, 'macro_f1')} | {number(row['majority_baseline'])} | {row['epochs']} | "
            f"{number(row['train_minutes'], 1)} | {row['device']} | {'**yes**' if row['collapsed'] else 'no'} |")
    return "\n".join(lines)


def flat_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested params as ``{"augmentation.rotation": 10, ...}`` (the names a ``-p``/``--grid`` key uses)."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, Mapping) and value:
            flat.update(flat_params(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


NOT_COMPARED = ("name", "data", "seed")  # differ between any two runs without saying anything about the study


def varying_keys(params: Sequence[Mapping[str, Any]]) -> list[str]:
    """The (flattened) parameters whose values differ between runs, in the defaults' order."""
    flats = [flat_params(p) for p in params]
    keys = list(dict.fromkeys(key for flat in flats for key in flat))
    return [key for key in keys if key not in NOT_COMPARED
            and len({repr(flat.get(key)) for flat in flats}) > 1]


def comparison_rows(run_dirs: Sequence[str | Path], keys: Sequence[str] | None = None) -> pd.DataFrame:
    """Runs side by side against the keys that tell them apart (a sweep's grid keys; default: every parameter
    whose value differs between the runs): one row per run and model (and ensemble), the results table's numbers."""
    params = [runs.read_params(run_dir) for run_dir in run_dirs]
    keys = list(keys) if keys is not None else varying_keys(params)
    rows = []
    for run_dir, run_params in zip(run_dirs, params):
        flat = flat_params(run_params)
        for row in results_rows(run_dir):  # a result named like a key (epochs) yields to the parameter
            rows.append({**{key: flat.get(key) for key in keys},
                         **{(f"{name} (run)" if name in keys else name): value for name, value in row.items()}})
    columns = [*keys, "run", "model", "data", "seeds", "test_accuracy", "test_accuracy_std", "low", "high",
               "test_accuracy_tta", "macro_f1", "majority_baseline", "collapsed"]
    table = pd.DataFrame(rows)
    return table.reindex(columns=[c for c in columns if c in table or c == "test_accuracy_std"])


def replace_results_block(text: str, table: str) -> str:
    """``text`` with the block between the results markers replaced by ``table`` (markers must be present)."""
    if RESULTS_START not in text or RESULTS_END not in text:
        raise ValueError(f"the results markers are missing; add the lines\n{RESULTS_START}\n{RESULTS_END}")
    head, rest = text.split(RESULTS_START, 1)
    _, tail = rest.split(RESULTS_END, 1)
    return f"{head}{RESULTS_START}\n{table}\n{RESULTS_END}{tail}"
