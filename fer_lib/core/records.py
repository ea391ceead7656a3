"""What a run folder holds on disk (its layout: docs/CONTRACTS.md): file names, where each model's records go,
and the one JSON writer. Readers never care whether a run has one seed: :func:`seed_folders` gives every seed's folder.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

PARAMS_FILE = "params.yaml"
MANIFEST_FILE = "manifest.json"
SUMMARY_FILE = "summary.json"  # the compare step's statistics (fer_lib.analysis.stats.run_statistics)
MODELS_DIR = "models"
SEEDS_DIR = "seeds"
HISTORY_FILE = "history.csv"
PROGRESS_FILE = "progress.json"  # the last finished training epoch, for the runner's progress line
BEST_MODEL_FILE = "best.keras"  # the best epoch's model without optimizer state; its presence means "trained"
TRAINING_FILE = "training.json"  # when training ends: best epoch and value, monitor, seconds, resumed from
TRAIN_CONFIG_FILE = "train_config.json"
METRICS_FILE = "metrics.json"  # after evaluation (fer_lib.app.study.run_model)
PREDICTION_SPLITS: tuple[str, ...] = ("val", "test", "test_tta", "test_tta10")  # test_tta10: ten views


def predictions_file(split: str) -> str:
    return f"predictions_{split}.npz"


def model_dir(run_dir: str | Path, model: str, seed: int | None = None) -> Path:
    """Where one model's records go: ``models/<model>/``, or ``seeds/seed-<s>/models/<model>/`` (``seed`` given)."""
    root = Path(run_dir) if seed is None else Path(run_dir) / SEEDS_DIR / f"seed-{int(seed)}"
    return root / MODELS_DIR / model


def read_params(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / PARAMS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"'{run_dir}' is not a run folder: it has no {PARAMS_FILE}")
    return yaml.safe_load(path.read_text()) or {}


def write_params(run_dir: str | Path, params: Mapping[str, Any]) -> Path:
    path = Path(run_dir) / PARAMS_FILE
    path.write_text(yaml.safe_dump(dict(params), sort_keys=True))
    return path


def seed_folders(run_dir: str | Path) -> dict[int, Path]:
    """Each seed's folder holding its models/, seeds in increasing order; one seed: ``{params' seed or 0: run_dir}``."""
    run_dir = Path(run_dir)
    folder = run_dir / SEEDS_DIR
    found = sorted(int(p.name.removeprefix("seed-")) for p in folder.glob("seed-*")
                   if p.is_dir() and p.name.removeprefix("seed-").isdigit())
    if found:
        return {seed: folder / f"seed-{seed}" for seed in found}
    try:
        seed = int(read_params(run_dir).get("seed", 0) or 0)
    except (FileNotFoundError, yaml.YAMLError, TypeError, ValueError):
        seed = 0
    return {seed: run_dir}


def finished_models(seed_folder: str | Path) -> list[str]:
    """The models of one seed's folder that finished evaluation (have metrics.json), in name order."""
    models = Path(seed_folder) / MODELS_DIR
    return sorted(p.name for p in models.iterdir() if (p / METRICS_FILE).is_file()) if models.is_dir() else []


def run_models(run_dir: str | Path) -> list[str]:
    """The models finished for every seed of a run, in name order."""
    per_seed = [set(finished_models(folder)) for folder in seed_folders(run_dir).values()]
    return sorted(set.intersection(*per_seed)) if per_seed else []


# --- Where runs are --------------------------------------------------------------------------------------------------
def project_root(start: str | Path | None = None) -> Path:
    """The folder holding pyproject.toml above ``start`` (default: the working directory), else ``start`` itself."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "fer_lib").is_dir():
            return folder
    return here


def project_path(path: str | Path, folder: str = "") -> Path:
    """``path`` as given when absolute or existing, else in the project's ``folder``: so a notebook (in notebooks/)
    and a user (in the checkout) both name ``outputs/<run>`` the same."""
    given = Path(path).expanduser()
    if given.is_absolute() or given.exists():
        return given
    for candidate in (project_root() / folder / given.name, project_root() / given):
        if candidate.exists():
            return candidate
    return given


def default_outputs_dir() -> Path:
    return project_root() / "outputs"


def is_run_dir(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and ((path / PARAMS_FILE).is_file() or (path / MANIFEST_FILE).is_file())


def list_runs(outputs_dir: str | Path | None = None, *, with_models: bool = False) -> list[Path]:
    """Run folders under ``outputs_dir`` (default outputs/), oldest first; ``with_models``: with a finished model."""
    outputs = Path(outputs_dir) if outputs_dir is not None else default_outputs_dir()
    if not outputs.is_dir():
        return []
    found = sorted((p for p in outputs.iterdir() if is_run_dir(p)), key=lambda p: p.name)
    return [p for p in found if run_models(p)] if with_models else found


def latest_run(outputs_dir: str | Path | None = None) -> Path:
    """The newest run folder with a finished model."""
    found = list_runs(outputs_dir, with_models=True)
    if not found:
        raise FileNotFoundError(f"no run folder with a trained model under '{outputs_dir or default_outputs_dir()}': "
                                f"run `fer-study run` or the 02_train notebook first")
    return found[-1]


def resolve_run_dir(run_dir: str | Path | None) -> Path:
    """``None``: the newest run with a trained model; a relative path: from the working directory, else the project."""
    if run_dir is None or str(run_dir) == "":
        return latest_run()
    path = project_path(run_dir, "outputs")
    if not path.is_dir():
        raise FileNotFoundError(f"run folder '{run_dir}' does not exist")
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.generic, np.ndarray)):  # a numpy scalar's tolist() is its item()
        return value.tolist()
    if isinstance(value, (Path, _dt.datetime)):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def write_json(path: str | Path, data: Mapping[str, Any]) -> Path:
    """Write JSON atomically (beside it, then renamed: the runner reads manifests and progress while they change);
    numpy numbers and paths become JSON numbers and text."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(dict(data), indent=2, default=_json_default) + "\n"
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".json.tmp", delete=False) as handle:
        handle.write(text)
    os.replace(handle.name, path)
    return path


def read_json(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def read_history(path: str | Path) -> pd.DataFrame:
    """A ``history.csv``, ``epoch`` numbered from 1; one of fer-study 0.1 (Keras's numbering from 0, which a current
    file never has) is renumbered here, the one place that knows."""
    history = pd.read_csv(path)
    if len(history) and int(history["epoch"].iloc[0]) == 0:
        history["epoch"] = history["epoch"].astype(int) + 1
    return history


def now() -> str:
    """The local time with its offset, to the second: the time stamp of every record."""
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def trained_model_files(run_dir: str | Path) -> dict[str, list[Path]]:
    """Each trained model's saved best model (``best.keras``): one file per seed, seeds in increasing order."""
    files: dict[str, list[Path]] = {}
    for folder in seed_folders(run_dir).values():
        for model in finished_models(folder):
            path = model_dir(folder, model) / BEST_MODEL_FILE
            if path.is_file():
                files.setdefault(model, []).append(path)
    return files
