"""Pure summaries of a run for the notebooks: load a run's results, tabulate them, and word the conclusions.

Nothing here plots or trains; every function takes the plain records a run folder holds (``metrics.json`` as
written by :func:`fer_lib.study.run_model`, ``history.csv`` as written by :func:`fer_lib.train.train_model`) and
returns tables (pandas) or sentences, so the compare notebook's conclusions are computed from the numbers.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from fer_lib import runs
from fer_lib.evaluate import COLLAPSE_MARGIN, load_json

SPLIT_KEYS: tuple[str, ...] = ("val", "test", "test_tta")

PAPER_EARLY_ACCURACY: dict[str, float] = {"basic_cnn": 0.5, "resnet50v2": 0.25}
"""The paper's observation: early in training the CNN is near 0.5 accuracy, ResNet50V2 near 0.25 (= 'happy' share)."""
PAPER_TOLERANCE = 0.1  # "about 0.5" means within this distance
EARLY_EPOCHS = 5  # "early" = the first this many epochs (fewer if the run is shorter)
TIE = 0.005  # differences below this are called a tie
EPOCH_LABEL = "epoch {}"


@dataclasses.dataclass
class RunResults:
    """What a run folder holds for comparison: its params and, per finished model, metrics and history."""

    run_dir: Path
    params: dict[str, Any]
    summaries: dict[str, dict[str, Any]]
    histories: dict[str, pd.DataFrame]

    @property
    def models(self) -> list[str]:
        return list(self.summaries)

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


def load_run_results(run_dir: str | Path | None = None) -> RunResults:
    """Params, metrics and histories of every finished model of a run (``None``: the newest run)."""
    run_dir = resolve_run_dir(run_dir)
    models = runs.run_models(run_dir)
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
        summary, history = load_model_results(runs.model_dir(run_dir, model))
        summaries[model] = summary
        if history is not None:
            histories[model] = history
    return RunResults(run_dir=Path(run_dir), params=params, summaries=summaries, histories=histories)


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


def _early_window(history: pd.DataFrame) -> tuple[int, float]:
    k = min(EARLY_EPOCHS, len(history))
    return k, float(history["val_accuracy"].iloc[:k].max())


def _paper_sentence(model: str, history: pd.DataFrame, summary: Mapping[str, Any]) -> str | None:
    if model not in PAPER_EARLY_ACCURACY or "val_accuracy" not in history or history.empty:
        return None
    expected = PAPER_EARLY_ACCURACY[model]
    k, reached = _early_window(history)
    baseline = float(summary["val"]["majority_class_accuracy"]) if "val" in summary else math.nan
    window = "epoch 1" if k == 1 else f"the first {k} epochs"
    head = f"Within {window}, {model} reached val accuracy {reached:.3f} (majority baseline {baseline:.3f})"
    if model == "resnet50v2":  # the paper's ResNet50V2 sat at the share of 'happy': a collapsed model
        if reached <= baseline + COLLAPSE_MARGIN:
            return (f"{head}: no better than the majority-class baseline, like the paper's ResNet50V2 "
                    f"(≈{expected:.2f}, a collapsed model).")
        return (f"{head}: it escaped the majority-class baseline, unlike the paper's ResNet50V2, which stayed at "
                f"≈{expected:.2f} (the share of 'happy').")
    if abs(reached - expected) <= PAPER_TOLERANCE:
        return f"{head}: close to the paper's ≈{expected:.1f} for the CNN."
    direction = "above" if reached > expected else "below"
    return f"{head}: {direction} the paper's ≈{expected:.1f} for the CNN."


def conclusions(summaries: Mapping[str, Mapping[str, Any]],
                histories: Mapping[str, pd.DataFrame] | None = None) -> list[str]:
    """Sentences computed from the numbers: winner on test accuracy and macro-F1, collapse, TTA, the paper's
    early-epoch observation (needs ``histories``), hardest class per model. ``summaries``: {model: metrics.json}."""
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
    paper = [sentence for model, s in summaries.items() if histories and model in histories
             for sentence in [_paper_sentence(model, histories[model], s)] if sentence]
    if paper:
        if any(s.get("synthetic") for s in summaries.values()):
            paper.append("The paper's numbers are on FER2013, so on synthetic data this comparison only exercises "
                         "the pipeline.")
        lines.append("Paper's observation (CNN ≈0.5 early, ResNet50V2 ≈0.25 = the share of 'happy'): "
                     + " ".join(paper))
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
    import numpy as np

    from fer_lib.evaluate import ensemble_probabilities, evaluate_predictions, load_predictions

    files = [runs.model_dir(results.run_dir, model) / f"predictions_{split}.npz" for model in results.models]
    files = [file for file in files if file.is_file()]
    if len(files) < 2:  # a copy of the run without predictions (results/): the compare step's summary.json
        saved = results.run_dir / runs.SUMMARY_FILE
        ensemble = load_json(saved).get("ensemble", {}).get(split) if saved.is_file() else None
        return {"split": split, **ensemble} if ensemble else None
    predictions = [load_predictions(file) for file in files]
    for file, other in zip(files[1:], predictions[1:]):
        if not np.array_equal(other["ids"], predictions[0]["ids"]):
            raise ValueError(f"{file} covers other images than {files[0]}: cannot ensemble them")
    probabilities = ensemble_probabilities([p["probabilities"] for p in predictions])
    metrics = evaluate_predictions(predictions[0]["labels"], probabilities)
    return {"split": split, "models": [file.parent.name for file in files], **metrics}


STATISTICS_SPLITS: tuple[str, ...] = ("test", "test_tta")
ENSEMBLE = "ensemble"


def _split_predictions(results: RunResults, split: str) -> dict[str, dict[str, Any]]:
    """The models' saved predictions on ``split`` (all on the same images, checked), by model."""
    import numpy as np

    from fer_lib.evaluate import load_predictions

    files = {model: runs.model_dir(results.run_dir, model) / f"predictions_{split}.npz" for model in results.models}
    predictions = {model: load_predictions(path) for model, path in files.items() if path.is_file()}
    first = next(iter(predictions.values()), None)
    for model, stored in predictions.items():
        if not np.array_equal(stored["ids"], first["ids"]):
            raise ValueError(f"{files[model]} covers other images than the run's other predictions on {split}")
    return predictions


def run_statistics(results: RunResults, *, seed: int = 0, resamples: int = 2000) -> dict[str, Any]:
    """The numbers behind every comparison of a run, from its saved predictions on test (and test with TTA).

    Per model and for the ensemble (averaged probabilities, two models or more): the accuracy with a 95% bootstrap
    interval over the test images; for each pair: the accuracy difference with its paired-bootstrap interval,
    McNemar's exact test on the same images, and a verdict on "the first beats the second" (fer_lib.stats). The
    ensemble's metrics are kept too, so the README table can be regenerated from a run folder without predictions.
    """
    from fer_lib import stats
    from fer_lib.data import majority_class_accuracy
    from fer_lib.evaluate import ensemble_probabilities, evaluate_predictions

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


def write_summary(run_dir: str | Path, summary: Mapping[str, Any]) -> Path:
    """Save :func:`run_statistics` as the run's summary.json."""
    from fer_lib.evaluate import save_json

    return save_json(summary, Path(run_dir) / runs.SUMMARY_FILE)


def interval_table(summary: Mapping[str, Any]) -> pd.DataFrame:
    """Accuracy with its 95% interval, per split and model (and the ensemble), beside the majority baseline."""
    rows = [{"split": split, "model": name, "accuracy": value["accuracy"], "95% low": value["low"],
             "95% high": value["high"], "majority baseline": entry["majority_baseline"], "n": entry["n"]}
            for split, entry in summary["splits"].items() for name, value in entry["accuracy"].items()]
    columns = ["split", "model", "accuracy", "95% low", "95% high", "majority baseline", "n"]
    return pd.DataFrame(rows, columns=columns).set_index(["split", "model"])


def comparison_table(summary: Mapping[str, Any]) -> pd.DataFrame:
    """Per split and pair: the accuracy difference (first minus second), its interval, McNemar's counts and p."""
    rows = [{"split": split, "a": c["a"], "b": c["b"], "difference": c["difference"], "95% low": c["low"],
             "95% high": c["high"], "a right, b wrong": c["mcnemar"]["a_right_b_wrong"],
             "a wrong, b right": c["mcnemar"]["a_wrong_b_right"], "McNemar p": c["mcnemar"]["p_value"],
             "a beats b": c["verdict_a_beats_b"]}
            for split, entry in summary["splits"].items() for c in entry["comparisons"]]
    columns = ["split", "a", "b", "difference", "95% low", "95% high", "a right, b wrong", "a wrong, b right",
               "McNemar p", "a beats b"]
    return pd.DataFrame(rows, columns=columns).set_index(["split", "a", "b"])


def statistics_sentences(summary: Mapping[str, Any]) -> list[str]:
    """One sentence per pair compared on test: who is ahead, by how much (interval), McNemar's p and the verdict."""
    from fer_lib.stats import verdict

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


def ensemble_table(ensembles: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per ensemble summary: accuracy and macro-F1 beside the majority-class baseline."""
    return pd.DataFrame([{"split": e["split"], "models": " + ".join(e["models"]), "accuracy": e["accuracy"],
                          "macro_f1": e["macro_f1"], "majority_baseline": e["majority_class_accuracy"],
                          "collapsed": e["collapse_warning"] is not None} for e in ensembles]).set_index("split")


RESULTS_START = "<!-- results:start (generated by `fer-study results --update-readme`; do not edit by hand) -->"
RESULTS_END = "<!-- results:end -->"


def results_rows(run_dir: str | Path) -> list[dict[str, Any]]:
    """One row per finished model of a run (and one for the ensemble), every number read from the run folder."""
    run_dir = Path(run_dir)
    results = load_run_results(run_dir)
    manifest = runs.read_manifest(run_dir)
    device = (manifest.get("device") or {}).get("summary", "unknown device")
    backend = manifest.get("backend", "unknown backend")
    data = "SYNTHETIC" if results.synthetic else "FER2013"
    subset = results.params.get("subset")
    if subset and not results.synthetic:
        data += f" (train subset {subset})"
    rows = []
    for model, summary in results.summaries.items():
        rows.append({
            "run": run_dir.name, "model": model, "data": data,
            "test_accuracy": summary["test"]["accuracy"],
            "test_accuracy_tta": summary.get("test_tta", {}).get("accuracy"),
            "macro_f1": summary["test"]["macro_f1"],
            "majority_baseline": summary["test"]["majority_class_accuracy"],
            "epochs": f"{summary['epochs_run']} (best {summary['best_epoch']})",
            "train_minutes": summary["train_seconds"] / 60.0,
            "device": f"{device}, {backend}",
            "collapsed": summary["test"]["collapse_warning"] is not None,
        })
    plain, tta = ensemble_summary(results, "test"), ensemble_summary(results, "test_tta")
    if plain:
        rows.append({
            "run": run_dir.name, "model": " + ".join(plain["models"]) + " (ensemble)", "data": data,
            "test_accuracy": plain["accuracy"], "test_accuracy_tta": tta["accuracy"] if tta else None,
            "macro_f1": plain["macro_f1"], "majority_baseline": plain["majority_class_accuracy"],
            "epochs": "", "train_minutes": None, "device": f"{device}, {backend}",
            "collapsed": plain["collapse_warning"] is not None,
        })
    return rows


def headline_table(run_dir: str | Path) -> pd.DataFrame:
    """The report's first table: per model and for the ensemble, test accuracy (and with flip TTA), macro-F1, the
    majority-class baseline, collapsed or not, epochs and training minutes (the README table's rows for one run)."""
    columns = {"test_accuracy": "test accuracy", "test_accuracy_tta": "with flip TTA", "macro_f1": "macro-F1",
               "majority_baseline": "majority baseline", "collapsed": "collapsed", "epochs": "epochs",
               "train_minutes": "training minutes"}
    rows = results_rows(run_dir)
    return pd.DataFrame(rows, columns=["model", *columns]).set_index("model").rename(columns=columns)


def results_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """A markdown table of :func:`results_rows` rows (test = the provided PublicTest split)."""
    def number(value: Any, digits: int = 3) -> str:
        return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"

    header = ("| run | model | data | test acc | test acc (flip TTA) | macro-F1 | majority baseline | epochs | "
              "train min | device | collapsed |")
    lines = [header, "|" + "---|" * 11]
    for row in rows:
        lines.append(
            f"| `{row['run']}` | {row['model']} | {row['data']} | {number(row['test_accuracy'])} | "
            f"{number(row['test_accuracy_tta'])} | {number(row['macro_f1'])} | {number(row['majority_baseline'])} | "
            f"{row['epochs']} | {number(row['train_minutes'], 1)} | {row['device']} | "
            f"{'**yes**' if row['collapsed'] else 'no'} |")
    return "\n".join(lines)


def replace_results_block(text: str, table: str) -> str:
    """``text`` with the block between the results markers replaced by ``table`` (markers must be present)."""
    if RESULTS_START not in text or RESULTS_END not in text:
        raise ValueError(f"the results markers are missing; add the lines\n{RESULTS_START}\n{RESULTS_END}")
    head, rest = text.split(RESULTS_START, 1)
    _, tail = rest.split(RESULTS_END, 1)
    return f"{head}{RESULTS_START}\n{table}\n{RESULTS_END}{tail}"
