"""A finished run as the notebooks, reports and views read it: every seed's metrics and histories, no Keras.
:class:`RunResults` always holds ``by_seed`` (one seed too), so nothing downstream has a second code path."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fer_lib.core import records
from fer_lib.core.evaluate import load_predictions


@dataclasses.dataclass(frozen=True)
class SeedResults:
    """One seed of a run: per finished model its metrics.json and its history (epochs from 1)."""

    seed: int
    folder: Path  # the folder holding models/<model>/
    summaries: dict[str, dict[str, Any]]
    histories: dict[str, pd.DataFrame]

    def model_dir(self, model: str) -> Path:
        return records.model_dir(self.folder, model)

    def predictions(self, split: str) -> dict[str, dict[str, np.ndarray]]:
        """The models' saved predictions on ``split``, checked to be on the same images (never a wrong comparison)."""
        files = {model: self.model_dir(model) / records.predictions_file(split) for model in self.summaries}
        found = {model: load_predictions(path) for model, path in files.items() if path.is_file()}
        first = next(iter(found), None)
        for model, stored in found.items():
            if not np.array_equal(stored["ids"], found[first]["ids"]):
                raise ValueError(f"{files[model]} covers other images than {files[first]}: the models' predictions "
                                 f"on {split} cannot be compared or ensembled")
        return found


@dataclasses.dataclass(frozen=True)
class RunResults:
    """A run folder's params and, per seed, its finished models' records."""

    run_dir: Path
    params: dict[str, Any]
    by_seed: dict[int, SeedResults]

    @property
    def seeds(self) -> list[int]:
        return list(self.by_seed)

    @property
    def first(self) -> SeedResults:
        """The first seed: the one whose single-model figures the compare notebook shows."""
        return next(iter(self.by_seed.values()))

    @property
    def models(self) -> list[str]:
        """The models finished for every seed, in the params' order."""
        return list(self.first.summaries)

    @property
    def synthetic(self) -> bool:
        """True when any model of the run was trained on synthetic data (or params asked for it)."""
        return bool(self.params.get("synthetic")) or any(summary.get("synthetic") for seed in self.by_seed.values()
                                                          for summary in seed.summaries.values())

    @property
    def data_source(self) -> str:
        return "; ".join(sorted({str(s.get("data_source")) for s in self.first.summaries.values()}))


def load_run_results(run_dir: str | Path | None = None) -> RunResults:
    """Params, metrics and histories of every finished model of every seed of a run (``None``: the newest run)."""
    run_dir = records.resolve_run_dir(run_dir)
    params = records.read_params(run_dir)
    models = records.run_models(run_dir)
    if not models:
        raise FileNotFoundError(f"run folder '{run_dir}' has no trained model (no models/<model>/"
                                f"{records.METRICS_FILE}); run the 02_train notebook or `fer-study run` first")
    listed = params.get("models", [])
    ordered = [m for m in listed if m in models] + [m for m in models if m not in listed]
    by_seed = {}
    for seed, folder in records.seed_folders(run_dir).items():
        folders = {model: records.model_dir(folder, model) for model in ordered}
        summaries = {m: records.read_json(f / records.METRICS_FILE) for m, f in folders.items()}
        histories = {m: records.read_history(f / records.HISTORY_FILE) for m, f in folders.items()
                     if (f / records.HISTORY_FILE).is_file()}
        by_seed[seed] = SeedResults(seed, folder, summaries, histories)
    return RunResults(run_dir=Path(run_dir), params=params, by_seed=by_seed)


SUMMARY_FORMAT = 2  # summary.json: {"format", "seeds", "per_seed": {seed: ...}, "over_seeds", "paper_claims"}


def write_summary(run_dir: str | Path, statistics: Mapping[str, Any], paper_claims: Sequence[Any]) -> Path:
    """The compare step's summary.json: the run's statistics (stats.run_statistics) and the paper's claims checked."""
    return records.write_json(Path(run_dir) / records.SUMMARY_FILE, {**statistics, "paper_claims": list(paper_claims)})


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    """The run's summary.json ({} when it has none); one of fer-study 0.1 (no ``per_seed``) in today's shape."""
    path = Path(run_dir) / records.SUMMARY_FILE
    if not path.is_file():
        return {}
    summary = records.read_json(path)
    if "per_seed" not in summary:
        seed = next(iter(records.seed_folders(run_dir)))
        claims = summary.pop("paper_claims", [])
        summary = {"format": SUMMARY_FORMAT, "seeds": [seed], "per_seed": {str(seed): summary}, "over_seeds": None,
                   "paper_claims": claims}
    return summary
