"""The paper's two claims (CNN vs ResNet50V2 on FER2013), each judged from the run's numbers by a written rule.
Claim 1 (early, the CNN near 0.5 while ResNet50V2 stays at the 'happy' baseline) from validation accuracy at epochs
1-5 per seed; claim 2 (ResNet50V2 surpasses the CNN with more epochs) from the final test difference and its p-value."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from fer_lib.core.evaluate import COLLAPSE_MARGIN
from fer_lib.analysis.results import RunResults
from fer_lib.analysis.stats import verdict

CNN, RESNET = "basic_cnn", "resnet50v2"
PAPER_EARLY_ACCURACY: dict[str, float] = {CNN: 0.5, RESNET: 0.25}  # the paper's early accuracies (0.25: 'happy')
PAPER_TOLERANCE = 0.1  # "about 0.5" means at least 0.5 - this
EARLY_EPOCHS = 5  # "early" = the first this many epochs (fewer if the run is shorter)
CLAIM_EARLY = "early epochs: the CNN reaches about 0.5 while ResNet50V2 stays at about 0.25 (the majority baseline)"
CLAIM_FINAL = "with more epochs, ResNet50V2 surpasses the CNN"


def _agreement(verdicts: list[str]) -> str:
    """Seeds that all agree give their verdict; seeds that disagree make the claim inconclusive."""
    return verdicts[0] if len(set(verdicts)) == 1 else "inconclusive"


def early_epochs_table(results: RunResults, epochs: int = EARLY_EPOCHS) -> pd.DataFrame:
    """Per seed and model: validation accuracy at epochs 1..``epochs`` beside the validation majority baseline."""
    rows = []
    for seed, seed_results in results.by_seed.items():
        for model, history in seed_results.histories.items():
            row: dict[str, Any] = {"seed": seed, "model": model,
                                   "majority baseline": seed_results.summaries[model]["val"]["majority_class_accuracy"]}
            for epoch in range(1, epochs + 1):
                values = history.loc[history["epoch"] == epoch, "val_accuracy"]
                row[f"epoch {epoch}"] = float(values.iloc[0]) if len(values) else None
            rows.append(row)
    columns = ["seed", "model", "majority baseline", *(f"epoch {e}" for e in range(1, epochs + 1))]
    return pd.DataFrame(rows, columns=columns).set_index(["seed", "model"])


def early_epochs_claim(results: RunResults, epochs: int = EARLY_EPOCHS) -> dict[str, Any]:
    """Claim 1, per seed: the CNN's best validation accuracy in epochs 1-5 is at least 0.5 - PAPER_TOLERANCE ("about
    0.5" or better), and ResNet50V2's never rises more than COLLAPSE_MARGIN above the majority baseline ("stays at
    about 0.25"). Supported when every seed shows both, not supported when no seed does, else inconclusive."""
    table = early_epochs_table(results, epochs)
    models = set(table.index.get_level_values("model"))
    if not {CNN, RESNET} <= models:
        return {"claim": CLAIM_EARLY, "verdict": None, "seeds": [],
                "note": f"not checked: the run needs both {CNN} and {RESNET} with training histories"}
    per_seed, seen_epochs = [], epochs
    for seed in dict.fromkeys(table.index.get_level_values("seed")):
        cnn, resnet = table.loc[(seed, CNN)], table.loc[(seed, RESNET)]
        cnn_values = cnn.drop("majority baseline").dropna()
        resnet_values = resnet.drop("majority baseline").dropna()
        seen_epochs = min(seen_epochs, len(cnn_values), len(resnet_values))
        cnn_best, resnet_best = float(cnn_values.max()), float(resnet_values.max())
        cnn_ok = cnn_best >= PAPER_EARLY_ACCURACY[CNN] - PAPER_TOLERANCE
        resnet_ok = resnet_best <= float(resnet["majority baseline"]) + COLLAPSE_MARGIN
        per_seed.append({"seed": seed, "cnn_best": cnn_best, "resnet_best": resnet_best,
                         "resnet_baseline": float(resnet["majority baseline"]), "cnn_about_half": bool(cnn_ok),
                         "resnet_at_baseline": bool(resnet_ok),
                         "verdict": "supported" if cnn_ok and resnet_ok else "not supported"})
    note = None if seen_epochs >= epochs else f"only epochs 1-{seen_epochs} were run"
    return {"claim": CLAIM_EARLY, "verdict": _agreement([s["verdict"] for s in per_seed]), "seeds": per_seed,
            "note": note}


def final_claim(statistics: Mapping[str, Any]) -> dict[str, Any]:
    """Claim 2: ResNet50V2 minus the CNN on test at the end, per seed with its paired-bootstrap interval and
    McNemar's p-value (stats.verdict); several seeds must agree, and their paired t-test is reported."""
    per_seed = []
    for seed, entry in statistics["per_seed"].items():
        for c in entry.get("splits", {}).get("test", {}).get("comparisons", []):
            if {c["a"], c["b"]} != {CNN, RESNET}:
                continue
            sign = 1.0 if c["a"] == RESNET else -1.0  # stored as a - b; the claim is about resnet - cnn
            low, high = sorted((sign * c["low"], sign * c["high"]))
            difference, p_value = sign * c["difference"], c["mcnemar"]["p_value"]
            per_seed.append({"seed": int(seed), "difference": difference, "low": low, "high": high, "p_value": p_value,
                             "verdict": verdict(difference, low, high, p_value)})
    if not per_seed:
        return {"claim": CLAIM_FINAL, "verdict": None, "seeds": [], "over_seeds": None,
                "note": f"not checked: the run needs test predictions of both {CNN} and {RESNET}"}
    over = next((c for c in (statistics.get("over_seeds") or {}).get("comparisons", [])
                 if {c["a"], c["b"]} == {CNN, RESNET}), None)
    return {"claim": CLAIM_FINAL, "verdict": _agreement([s["verdict"] for s in per_seed]), "seeds": per_seed,
            "over_seeds": over, "note": None}


def paper_claims(results: RunResults, statistics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Both claims, each with its numbers and verdict (``statistics``: stats.run_statistics of ``results``)."""
    return [early_epochs_claim(results), final_claim(statistics)]


def claims_sentences(claims: list[Mapping[str, Any]], *, synthetic: bool = False) -> list[str]:
    """One sentence per claim: the verdict, and the numbers it rests on."""
    lines = []
    for claim in claims:
        head = f"Paper's claim \"{claim['claim']}\""
        if claim["verdict"] is None:
            lines.append(f"{head}: {claim['note']}.")
            continue
        if claim["claim"] == CLAIM_EARLY:
            numbers = [f"{CNN} best {s['cnn_best']:.3f}, {RESNET} best {s['resnet_best']:.3f} (baseline "
                       f"{s['resnet_baseline']:.3f})" for s in claim["seeds"]]
        else:
            numbers = [f"{RESNET} - {CNN} = {s['difference']:+.3f} (95% interval {s['low']:+.3f} to {s['high']:+.3f}, "
                       f"McNemar p = {s['p_value']:.2g})" for s in claim["seeds"]]
        if len(claim["seeds"]) > 1:
            numbers = [f"seed {s['seed']}: {text}" for s, text in zip(claim["seeds"], numbers)]
        over = claim.get("over_seeds")
        if over and over.get("p_value") is not None:  # the early claim has no over_seeds
            sign = 1.0 if over["a"] == RESNET else -1.0
            numbers.append(f"over seeds, paired t-test p = {over['p_value']:.2g}, "
                           f"mean {sign * over['mean_difference']:+.3f}")
        note = f"; {claim['note']}" if claim.get("note") else ""
        lines.append(f"{head} is **{claim['verdict']}** ({'; '.join(numbers)}{note}).")
    if synthetic and lines:
        lines.append("These verdicts are on SYNTHETIC data: they test the pipeline, not the paper.")
    return lines
