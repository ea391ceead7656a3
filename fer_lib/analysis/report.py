"""The compare notebook's tables and sentences: every conclusion computed from the run's numbers, never typed.
Inputs are a run's plain records (metrics.json, histories, stats.run_statistics); outputs are pandas tables or text."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from fer_lib.analysis.results import RunResults
from fer_lib.analysis.stats import SEED_METRICS, verdict
from fer_lib.core.evaluate import ensemble_probabilities, evaluate_predictions

SPLIT_KEYS: tuple[str, ...] = ("val", "test", "test_tta", "test_tta10")
TIE = 0.005  # differences below this are called a tie


def metrics_table(summary: Mapping[str, Any]) -> pd.DataFrame:
    """One row per evaluated split: accuracy beside the majority-class baseline, F1, warnings."""
    rows = []
    for key in [k for k in SPLIT_KEYS if k in summary]:
        m = summary[key]
        rows.append({"split": key, "n": m["n"], "accuracy": m["accuracy"],
                     "majority_baseline": m["majority_class_accuracy"],
                     "above_baseline": m["accuracy"] - m["majority_class_accuracy"],
                     "macro_f1": m["macro_f1"], "weighted_f1": m["weighted_f1"], "top2_accuracy": m["top2_accuracy"],
                     "collapse_warning": m["collapse_warning"] or ""})
    return pd.DataFrame(rows).set_index("split")


def per_class_table(metrics: Mapping[str, Any]) -> pd.DataFrame:
    """Precision, recall, F1, support and predicted share per class of one split's metrics."""
    table = pd.DataFrame.from_dict(metrics["per_class"], orient="index").rename_axis("class")
    return table[["precision", "recall", "f1", "support", "predicted_share"]]


def compare_table(summaries: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """One row per model: test accuracy with and without TTA, macro-F1, the majority baseline, collapse."""
    rows = []
    for model, s in summaries.items():
        test = s["test"]
        row = {"model": model, "test_accuracy": test["accuracy"],
               "test_accuracy_tta": s["test_tta"]["accuracy"] if "test_tta" in s else math.nan,
               "test_accuracy_tta10": s["test_tta10"]["accuracy"] if "test_tta10" in s else math.nan,
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
    Index (model, curve: train / val); columns ``epoch N``, ``last`` and ``last_epoch``."""
    rows = []
    for model, history in histories.items():
        by_epoch = history.set_index("epoch")
        last = int(by_epoch.index.max()) if len(by_epoch) else 0
        for curve, column in (("train", "accuracy"), ("val", "val_accuracy")):
            if column not in by_epoch:
                continue
            row: dict[str, Any] = {"model": model, "curve": curve}
            for epoch in epochs:
                label = "last" if epoch == "last" else f"epoch {epoch}"
                at = last if epoch == "last" else int(epoch)
                row[label] = float(by_epoch[column].get(at, math.nan)) if last else math.nan
            row["last_epoch"] = last
            rows.append(row)
    if not rows:
        return pd.DataFrame(columns=["model", "curve"]).set_index(["model", "curve"])
    return pd.DataFrame(rows).set_index(["model", "curve"])


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
    model; ``summaries``: {model: metrics.json}. (The paper's claims are judged in fer_lib.analysis.claims.)"""
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
        if warning := test.get("collapse_warning"):
            lines.append(f"{model} is not a real result on test: {warning}.")
        else:
            lines.append(f"{model} did not collapse: test accuracy {test['accuracy']:.3f} beats the majority-class "
                         f"baseline {test['majority_class_accuracy']:.3f} (always '{test['majority_class']}') by "
                         f"{test['accuracy'] - test['majority_class_accuracy']:.3f}.")
    for model, s in summaries.items():
        for key, views in (("test_tta", "Horizontal-flip"), ("test_tta10", "Ten-view")):
            if key in s:
                gain = s[key]["accuracy"] - s["test"]["accuracy"]
                lines.append(f"{views} TTA changes {model}'s test accuracy by {gain:+.3f} "
                             f"({s['test']['accuracy']:.3f} → {s[key]['accuracy']:.3f}).")
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


def ensemble_table(ensembles: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per ensemble summary: accuracy and macro-F1 beside the majority-class baseline."""
    return pd.DataFrame([{"split": e["split"], "models": " + ".join(e["models"]), "accuracy": e["accuracy"],
                          "macro_f1": e["macro_f1"], "majority_baseline": e["majority_class_accuracy"],
                          "collapsed": e["collapse_warning"] is not None} for e in ensembles]).set_index("split")


NOTICE_COLOURS = {"info": ("#08306b", "#eef5fc"), "warning": ("#7a4b00", "#fff4e0"), "error": ("#8b0000", "#fdecec")}


def notice_html(text: str, kind: str = "info") -> str:
    """An HTML notice for the notebooks' views; ``kind`` is info, warning or error (colour). ``text`` is HTML."""
    fg, bg = NOTICE_COLOURS[kind]
    return (f'<div class="fer-notice fer-notice-{kind}" style="color:{fg};background:{bg};padding:4px 8px;'
            f'border-radius:4px;margin:2px 0">{text}</div>')


def synthetic_notice_markdown(how: str, synthetic: bool) -> str:
    """A loud banner for synthetic data, or a plain line naming the data source."""
    if synthetic:
        return notice_html(f"<b style='font-size:130%'>⚠ SYNTHETIC DATA — not FER2013</b><br>{html.escape(how)}",
                           "error")
    return f"**Data:** {how}"


def ensemble_summary(results: RunResults, statistics: Mapping[str, Any], split: str = "test") -> dict[str, Any] | None:
    """Metrics of the averaged probabilities of the first seed's models on ``split``: from the predictions, or (a
    copy of the run without them, as in results/) from its statistics; None with fewer than two models' predictions."""
    predictions = results.first.predictions(split)
    if len(predictions) < 2:
        saved = ((statistics.get("per_seed") or {}).get(str(results.first.seed)) or {}).get("ensemble", {})
        return {"split": split, **saved[split]} if saved.get(split) else None
    probabilities = ensemble_probabilities([p["probabilities"] for p in predictions.values()])
    metrics = evaluate_predictions(next(iter(predictions.values()))["labels"], probabilities)
    return {"split": split, "models": list(predictions), **metrics}


# --- The statistics (fer_lib.analysis.stats.run_statistics) as tables and sentences -----------------------------------
def interval_table(summary: Mapping[str, Any]) -> pd.DataFrame:
    """Accuracy with its 95% interval per seed, split and model (and the ensemble), beside the majority baseline."""
    columns = ["seed", "split", "model", "accuracy", "95% low", "95% high", "majority baseline", "n"]
    rows = [(int(seed), split, name, value["accuracy"], value["low"], value["high"], entry["majority_baseline"],
             entry["n"]) for seed, statistics in summary["per_seed"].items()
            for split, entry in statistics["splits"].items() for name, value in entry["accuracy"].items()]
    return pd.DataFrame(rows, columns=columns).set_index(["seed", "split", "model"])


def comparison_table(summary: Mapping[str, Any]) -> pd.DataFrame:
    """Per seed, split and pair: the accuracy difference (first minus second), its interval, McNemar's counts and p."""
    columns = ["seed", "split", "a", "b", "difference", "95% low", "95% high", "a right, b wrong",
               "a wrong, b right", "McNemar p", "a beats b"]
    rows = [(int(seed), split, c["a"], c["b"], c["difference"], c["low"], c["high"], c["mcnemar"]["a_right_b_wrong"],
             c["mcnemar"]["a_wrong_b_right"], c["mcnemar"]["p_value"], c["verdict_a_beats_b"])
            for seed, statistics in summary["per_seed"].items()
            for split, entry in statistics["splits"].items() for c in entry["comparisons"]]
    return pd.DataFrame(rows, columns=columns).set_index(["seed", "split", "a", "b"])


def seed_table(summary: Mapping[str, Any]) -> pd.DataFrame:
    """Mean ± std over seeds per model (and the ensemble): test accuracy, with TTA, macro-F1, and the seed count."""
    rows = [{"model": model, "seeds": len(entry["seeds"]),
             **{f"{name} {stat}": (entry.get(name) or {}).get(stat)
                for name, _, _ in SEED_METRICS for stat in ("mean", "std")}}
            for model, entry in summary["over_seeds"]["models"].items()]
    return pd.DataFrame(rows).set_index("model")


def seed_comparison_table(summary: Mapping[str, Any]) -> pd.DataFrame:
    """Per pair, over seeds: mean difference of test accuracy, its t-interval, the paired t-test's p and verdict."""
    columns = ["a", "b", "seeds", "mean difference", "95% low", "95% high", "paired t-test p", "a beats b", "note"]
    rows = [(c["a"], c["b"], c["n"], c["mean_difference"], c["low"], c["high"], c["p_value"], c["verdict_a_beats_b"],
             c["note"] or "") for c in summary["over_seeds"]["comparisons"]]
    return pd.DataFrame(rows, columns=columns).set_index(["a", "b"])


def statistics_sentences(summary: Mapping[str, Any]) -> list[str]:
    """Per seed and pair on test: who is ahead, by how much, McNemar's p, the verdict (first over seeds if several)."""
    several = len(summary["per_seed"]) > 1
    lines = [_seed_sentence(c) for c in summary["over_seeds"]["comparisons"]] if several else []
    for seed, statistics in summary["per_seed"].items():
        for c in (statistics["splits"].get("test") or {}).get("comparisons", []):
            counts, sign = c["mcnemar"], 1 if c["difference"] >= 0 else -1
            better, worse = (c["a"], c["b"])[::sign]
            gap, low, high = sign * c["difference"], *sorted((sign * c["low"], sign * c["high"]))
            only_better, only_worse = (counts["a_right_b_wrong"], counts["a_wrong_b_right"])[::sign]
            claim = verdict(gap, low, high, counts["p_value"])
            lines.append(f"{f'Seed {seed}: ' if several else ''}{better} vs {worse} on test: {better} is ahead by "
                         f"{gap:.3f} (95% interval {low:+.3f} to {high:+.3f}); McNemar's exact test p = "
                         f"{counts['p_value']:.2g} ({only_better} images only {better} gets right, {only_worse} only "
                         f"{worse}): \"{better} is better\" is {claim}.")
    return lines


def _seed_sentence(c: Mapping[str, Any]) -> str:
    """A pair compared over seeds, in words: mean difference, its t-interval, the paired t-test and the verdict."""
    test = c["note"] if c["p_value"] is None else (f"95% t-interval {c['low']:+.3f} to {c['high']:+.3f}, "
                                                  f"paired t-test p = {c['p_value']:.2g}")
    return (f"{c['a']} vs {c['b']} over {c['n']} seeds: mean test accuracy {c['mean_a']:.3f} vs {c['mean_b']:.3f}, "
            f"difference {c['mean_difference']:+.3f} ({test}): \"{c['a']} is better\" is {c['verdict_a_beats_b']}.")


def curves_table(histories: Mapping[str, pd.DataFrame], seed: int = 0) -> pd.DataFrame:
    """Training curves of one seed's models in one long table, what plots.plot_curves draws."""
    frames = []
    for model, history in histories.items():
        curves = [c for c in ("accuracy", "val_accuracy", "loss", "val_loss") if c in history]
        long = history.melt(id_vars="epoch", value_vars=curves, var_name="curve", value_name="value")
        frames.append(long.assign(model=model, seed=seed))
    columns = ["model", "seed", "epoch", "split", "metric", "value"]
    if not frames:
        return pd.DataFrame(columns=columns)
    table = pd.concat(frames, ignore_index=True)
    table["split"] = table["curve"].str.startswith("val_").map({True: "val", False: "train"})
    table["metric"] = table["curve"].str.removeprefix("val_")
    return table[columns]


def training_curves(results: RunResults) -> pd.DataFrame:
    """Every seed's training curves in one long table: the figures draw each model's mean ± 1 std over seeds."""
    return pd.concat([curves_table(r.histories, seed) for seed, r in results.by_seed.items()], ignore_index=True)
