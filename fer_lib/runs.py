"""Run folders: one per run under ``outputs/``, never overwritten, each holding its params, manifest and artefacts.

Layout of ``outputs/<YYYYmmdd-HHMMSS>-<name>/``::

    params.yaml                 the resolved parameters
    manifest.json               versions, backend, device, git commit, data fingerprint, timings, status
    notebooks/                  the executed notebooks
    figures/                    data exploration and comparison figures
    models/<model>/             history.csv, best.keras, metrics.json, predictions_*.npz, figures
    report.html                 the compare notebook as HTML
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

PARAMS_FILE = "params.yaml"
MANIFEST_FILE = "manifest.json"


def project_root(start: str | Path | None = None) -> Path:
    """The folder holding pyproject.toml above ``start`` (default: the working directory), else ``start`` itself."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "fer_lib").is_dir():
            return folder
    return here


def default_outputs_dir() -> Path:
    return project_root() / "outputs"


def _slug(name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name.strip()).strip("-.")
    return slug or "run"


def new_run_dir(name: str, *, outputs_dir: str | Path | None = None, params: Mapping[str, Any] | None = None,
                now: _dt.datetime | None = None) -> Path:
    """Create a fresh ``<timestamp>-<name>`` folder (suffixed -2, -3, ... if taken); write params.yaml if given."""
    outputs = Path(outputs_dir) if outputs_dir is not None else default_outputs_dir()
    outputs.mkdir(parents=True, exist_ok=True)
    stem = f"{(now or _dt.datetime.now()).strftime('%Y%m%d-%H%M%S')}-{_slug(name)}"
    candidate, counter = outputs / stem, 1
    while True:
        try:
            candidate.mkdir()
            break
        except FileExistsError:
            counter += 1
            candidate = outputs / f"{stem}-{counter}"
    if params is not None:
        write_params(candidate, params)
    return candidate


def write_params(run_dir: str | Path, params: Mapping[str, Any]) -> Path:
    path = Path(run_dir) / PARAMS_FILE
    path.write_text(yaml.safe_dump(dict(params), sort_keys=True))
    return path


def read_params(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / PARAMS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"'{run_dir}' is not a run folder: it has no {PARAMS_FILE}")
    return yaml.safe_load(path.read_text()) or {}


def model_dir(run_dir: str | Path, model: str) -> Path:
    return Path(run_dir) / "models" / model


def run_models(run_dir: str | Path) -> list[str]:
    """The models of a run that finished evaluation (have metrics.json), in name order."""
    models = Path(run_dir) / "models"
    return sorted(p.name for p in models.iterdir() if (p / "metrics.json").is_file()) if models.is_dir() else []


def latest_run(outputs_dir: str | Path | None = None, *, require_models: bool = True) -> Path:
    """The newest run folder (by name, i.e. timestamp); with ``require_models``, the newest with a finished model."""
    outputs = Path(outputs_dir) if outputs_dir is not None else default_outputs_dir()
    runs = sorted((p for p in outputs.glob("*") if (p / PARAMS_FILE).is_file()), key=lambda p: p.name, reverse=True)
    for run in runs:
        if not require_models or run_models(run):
            return run
    raise FileNotFoundError(f"no run folder{' with a trained model' if require_models else ''} under '{outputs}': "
                            f"run `fer-study run` or the 02_train notebook first")
