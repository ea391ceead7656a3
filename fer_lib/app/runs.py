"""Run folders: one per run under ``outputs/``, never overwritten, each holding its params, manifest and artefacts.

Layout of ``outputs/<YYYYmmdd-HHMMSS>-<name>/``::

    params.yaml                 the resolved parameters
    manifest.json               versions, backend, device, git commit, data fingerprint, timings, status
    notebooks/                  the executed notebooks
    figures/                    data exploration and comparison figures
    models/<model>/             history.csv, best.keras, metrics.json, predictions_*.npz, figures
    seeds/seed-<s>/models/<model>/  the same per model and seed, for a run with several seeds (instead of models/)
    report.html                 the compare notebook as HTML
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

PARAMS_FILE = "params.yaml"
METRICS_FILE = "metrics.json"  # per model: fer_lib.app.study.run_model's summary
MANIFEST_FILE = "manifest.json"
SUMMARY_FILE = "summary.json"  # the compare step's statistics (fer_lib.analysis.report.run_statistics)
HISTORY_FILE = "history.csv"  # per model: one row per epoch (fer_lib.core.train writes it)
PROGRESS_FILE = "progress.json"  # per model: the last finished training epoch (fer_lib.core.train writes it)


def project_root(start: str | Path | None = None) -> Path:
    """The folder holding pyproject.toml above ``start`` (default: the working directory), else ``start`` itself."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "fer_lib").is_dir():
            return folder
    return here


def default_outputs_dir() -> Path:
    return project_root() / "outputs"


def slug(name: str) -> str:
    """``name`` as a folder-name part: letters, digits, ``_.-=`` kept, anything else one dash."""
    text = re.sub(r"[^A-Za-z0-9_.=-]+", "-", name.strip()).strip("-.")
    return text or "run"


def new_run_dir(name: str, *, outputs_dir: str | Path | None = None, params: Mapping[str, Any] | None = None,
                now: _dt.datetime | None = None) -> Path:
    """Create a fresh ``<timestamp>-<name>`` folder (suffixed -2, -3, ... if taken); write params.yaml if given."""
    folder = fresh_folder(outputs_dir, f"{(now or _dt.datetime.now()).strftime('%Y%m%d-%H%M%S')}-{slug(name)}")
    if params is not None:
        write_params(folder, params)
    return folder


def fresh_folder(outputs_dir: str | Path | None, stem: str) -> Path:
    """Create ``<outputs>/<stem>``, or ``<stem>-2``, ``-3``, ... when taken: never an existing folder."""
    outputs = Path(outputs_dir) if outputs_dir is not None else default_outputs_dir()
    outputs.mkdir(parents=True, exist_ok=True)
    candidate, counter = outputs / stem, 1
    while True:
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            counter += 1
            candidate = outputs / f"{stem}-{counter}"


def write_params(run_dir: str | Path, params: Mapping[str, Any]) -> Path:
    path = Path(run_dir) / PARAMS_FILE
    path.write_text(yaml.safe_dump(dict(params), sort_keys=True))
    return path


def read_params(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / PARAMS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"'{run_dir}' is not a run folder: it has no {PARAMS_FILE}")
    return yaml.safe_load(path.read_text()) or {}


MODELS_DIR = "models"
SEEDS_DIR = "seeds"  # a run with several seeds: seeds/seed-<seed>/models/<model>/, one sub-folder per seed
BEST_MODEL_FILE = "best.keras"  # per model: the best epoch's model, without optimizer state (fer_lib.core.train saves it)


def seed_dir(run_dir: str | Path, seed: int) -> Path:
    """The folder of one seed of a several-seed run (it holds ``models/`` like a single-seed run folder does)."""
    return Path(run_dir) / SEEDS_DIR / f"seed-{int(seed)}"


def model_dir(run_dir: str | Path, model: str, seed: int | None = None) -> Path:
    """Where one model's records go: ``models/<model>/``, or ``seeds/seed-<seed>/models/<model>/`` for one seed of
    a several-seed run."""
    root = Path(run_dir) if seed is None else seed_dir(run_dir, seed)
    return root / MODELS_DIR / model


def run_seeds(run_dir: str | Path) -> list[int]:
    """The seeds of a several-seed run that have a folder, in increasing order; [] for a single-seed run."""
    folder = Path(run_dir) / SEEDS_DIR
    if not folder.is_dir():
        return []
    found = [p.name.removeprefix("seed-") for p in folder.iterdir() if p.is_dir() and p.name.startswith("seed-")]
    return sorted(int(text) for text in found if text.lstrip("-").isdigit())


def run_models(run_dir: str | Path, seed: int | None = None) -> list[str]:
    """The models of a run (of one seed, for a several-seed run) that finished evaluation (have metrics.json), in
    name order. A several-seed run asked without ``seed``: the models finished for every one of its seeds."""
    if seed is None and run_seeds(run_dir):
        per_seed = [set(run_models(run_dir, s)) for s in run_seeds(run_dir)]
        return sorted(set.intersection(*per_seed))
    models = model_dir(run_dir, "_", seed).parent
    return sorted(p.name for p in models.iterdir() if (p / METRICS_FILE).is_file()) if models.is_dir() else []


def trained_model_files(run_dir: str | Path) -> dict[str, list[Path]]:
    """Each trained model's saved best model (``best.keras``): one file per seed, seeds in increasing order."""
    seeds: list[int | None] = list(run_seeds(run_dir)) or [None]
    files: dict[str, list[Path]] = {}
    for seed in seeds:
        for model in run_models(run_dir, seed):
            path = model_dir(run_dir, model, seed) / BEST_MODEL_FILE
            if path.is_file():
                files.setdefault(model, []).append(path)
    return files


def latest_run(outputs_dir: str | Path | None = None, *, require_models: bool = True) -> Path:
    """The newest run folder (by name, i.e. timestamp); with ``require_models``, the newest with a finished model."""
    outputs = Path(outputs_dir) if outputs_dir is not None else default_outputs_dir()
    runs = sorted((p for p in outputs.glob("*") if (p / PARAMS_FILE).is_file()), key=lambda p: p.name, reverse=True)
    for run in runs:
        if not require_models or run_models(run):
            return run
    raise FileNotFoundError(f"no run folder{' with a trained model' if require_models else ''} under '{outputs}': "
                            f"run `fer-study run` or the 02_train notebook first")


# --------------------------------------------------------------------------------------------------------------------
# Manifests and listing runs (used by `fer-study run` / `fer-study list`; no Keras import here, so listing is fast)
# --------------------------------------------------------------------------------------------------------------------

NOTEBOOKS_DIR = "notebooks"
FIGURES_DIR = "figures"
REPORT_FILE = "report.html"
STATUSES: tuple[str, ...] = ("running", "complete", "failed", "interrupted", "stopped")


def notebooks_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / NOTEBOOKS_DIR


def figures_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / FIGURES_DIR


def write_json_atomically(path: str | Path, data: Mapping[str, Any], *, default: Any = str) -> Path:
    """Write a JSON file that other processes read while it changes (manifest, sweep record, progress): written
    beside it and renamed, so a reader never sees half a file. ``default`` converts what json cannot (str)."""
    path = Path(path)
    text = json.dumps(dict(data), indent=2, default=default) + "\n"
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".json.tmp", delete=False) as handle:
        handle.write(text)
    os.replace(handle.name, path)
    return path


def write_manifest(run_dir: str | Path, manifest: Mapping[str, Any]) -> Path:
    """Write manifest.json atomically (a reader never sees half a file, even while the run is going on)."""
    return write_json_atomically(Path(run_dir) / MANIFEST_FILE, manifest)


def read_manifest(run_dir: str | Path) -> dict[str, Any]:
    """The run's manifest.json, or an empty dict when it has none (e.g. a run made by the 02_train notebook alone)."""
    path = Path(run_dir) / MANIFEST_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError:
        return {"status": "unreadable manifest"}


def update_manifest(run_dir: str | Path, **changes: Any) -> dict[str, Any]:
    """Read, change the given top-level keys, and write back; returns the new manifest."""
    manifest = read_manifest(run_dir)
    manifest.update(changes)
    write_manifest(run_dir, manifest)
    return manifest


def is_run_dir(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and ((path / PARAMS_FILE).is_file() or (path / MANIFEST_FILE).is_file())


def list_runs(outputs_dir: str | Path | None = None) -> list[Path]:
    """Every run folder under ``outputs_dir`` (default ``outputs/``), oldest first (names start with a timestamp)."""
    outputs = Path(outputs_dir) if outputs_dir is not None else default_outputs_dir()
    if not outputs.is_dir():
        return []
    return sorted((p for p in outputs.iterdir() if is_run_dir(p)), key=lambda p: p.name)


def model_headline(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The few numbers a table of runs shows for one model's metrics.json."""
    test = metrics.get("test") or {}
    row: dict[str, Any] = {
        "model": metrics.get("model"),
        "test_accuracy": test.get("accuracy"),
        "test_macro_f1": test.get("macro_f1"),
        "majority_baseline": test.get("majority_class_accuracy"),
        "collapsed": bool(test.get("collapse_warning")) if test else None,
        "epochs": metrics.get("epochs_run"),
    }
    if "test_tta" in metrics:
        row["test_accuracy_tta"] = (metrics["test_tta"] or {}).get("accuracy")
    return row


def _mean_headline(headlines: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One headline for a model trained on several seeds: numbers averaged, collapsed only if every seed was."""
    if len(headlines) == 1:
        return {**headlines[0], "seeds": 1}
    merged: dict[str, Any] = {**headlines[0], "seeds": len(headlines)}
    for key in ("test_accuracy", "test_macro_f1", "majority_baseline", "test_accuracy_tta", "epochs"):
        values = [h.get(key) for h in headlines]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            merged[key] = sum(values) / len(values)
    merged["collapsed"] = all(bool(h.get("collapsed")) for h in headlines)
    return merged


def run_summary(run_dir: str | Path) -> dict[str, Any]:
    """One run at a glance: id, status, whether its data was synthetic, and each finished model's headline."""
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    try:
        params = read_params(run_dir)
    except (FileNotFoundError, yaml.YAMLError):
        params = {}
    models: list[dict[str, Any]] = []
    seeds: list[int | None] = list(run_seeds(run_dir)) or [None]
    for name in run_models(run_dir):
        try:
            per_seed = [json.loads((model_dir(run_dir, name, seed) / METRICS_FILE).read_text()) for seed in seeds]
        except (OSError, ValueError):
            models.append({"model": name, "error": "unreadable metrics.json"})
            continue
        headline = _mean_headline([model_headline(metrics) for metrics in per_seed])
        models.append({**headline, "model": name, "synthetic": per_seed[0].get("synthetic")})
    data = manifest.get("data") or {}
    synthetic = data.get("synthetic")
    if synthetic is None and models:
        synthetic = any(bool(m.get("synthetic")) for m in models)
    if synthetic is None and params:
        synthetic = bool(params.get("synthetic")) or None
    status = manifest.get("status") or ("complete" if models else "unknown")
    if status == "running" and _process_gone(manifest):
        status = "stopped"  # the runner died without recording it (killed hard, machine restarted)
    return {"id": run_dir.name, "path": str(run_dir), "status": status, "synthetic": synthetic,
            "name": params.get("name"), "started": manifest.get("started"), "models": models}


def _process_gone(manifest: Mapping[str, Any]) -> bool:
    """True when the manifest's runner process ran on this machine and no longer exists."""
    pid = manifest.get("pid")
    if not isinstance(pid, int) or manifest.get("host") != platform.node():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


# --------------------------------------------------------------------------------------------------------------------
# The run listing (`fer-study list`, the runner's closing summary)
# --------------------------------------------------------------------------------------------------------------------

LIST_COLUMNS = ("run", "status", "data", "model", "seeds", "test_acc", "macro_f1", "collapsed")


def list_rows(outputs_dir: str | Path | None) -> list[dict[str, str]]:
    """One row per model of each run (one row for a run without a finished model), as display strings."""
    rows = []
    for run_dir in list_runs(outputs_dir):
        summary = run_summary(run_dir)
        data = {True: "SYNTHETIC", False: "real"}.get(summary["synthetic"], "?")
        base = {"run": summary["id"], "status": summary["status"], "data": data}
        if not summary["models"]:
            rows.append({**base, "model": "-", "seeds": "-", "test_acc": "-", "macro_f1": "-", "collapsed": "-"})
        for model in summary["models"]:
            collapsed = model.get("collapsed")
            rows.append({**base, "model": str(model["model"]), "seeds": str(model.get("seeds", 1)),
                         "test_acc": _fmt(model.get("test_accuracy")),
                         "macro_f1": _fmt(model.get("test_macro_f1")),
                         "collapsed": {True: "COLLAPSED", False: "no"}.get(collapsed, "?")})
    return rows


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def format_table(rows: Sequence[Mapping[str, str]], columns: Sequence[str] = LIST_COLUMNS) -> str:
    widths = {c: max([len(c), *(len(row[c]) for row in rows)]) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns).rstrip(),
             "  ".join("-" * widths[c] for c in columns)]
    lines += ["  ".join(row[c].ljust(widths[c]) for c in columns).rstrip() for row in rows]
    return "\n".join(lines)
