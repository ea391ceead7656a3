"""Run folders: one per run under ``outputs/``, never overwritten; their manifests, and the listing of runs.

The layout inside a run folder is fer_lib.core.records'. No Keras here: listing runs is instant.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import platform
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from fer_lib.core import records

NOTEBOOKS_DIR = "notebooks"  # the executed notebooks
FIGURES_DIR = "figures"
LOGS_DIR = "logs"  # each notebook kernel's own output (TensorFlow's start-up lines, warnings): nothing for the terminal
REPORT_FILE = "report.html"


def slug(name: str) -> str:
    """``name`` as a folder-name part: letters, digits, ``_.-=`` kept, anything else one dash."""
    return re.sub(r"[^A-Za-z0-9_.=-]+", "-", name.strip()).strip("-.") or "run"


def job_folder(kind: str, name: str, definition: Mapping[str, Any]) -> str:
    """``<kind>-<name>-<digest of definition>``: a sweep's or search's folder, found (and resumed) by its rerun."""
    digest = hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()[:10]
    return f"{kind}-{slug(name)}-{digest}"


def timestamp(now: _dt.datetime | None = None) -> str:
    return (now or _dt.datetime.now()).strftime("%Y%m%d-%H%M%S")


def unique_path(folder: str | Path, stem: str, suffix: str = "", *, taken: set[str] | None = None,
                create: bool = False) -> Path:
    """``<folder>/<stem><suffix>``, or ``<stem>-2<suffix>``, ``-3``, ... when that exists (or is in ``taken``): never
    an existing one. ``create`` makes it as a folder on the spot (so two processes cannot both get it)."""
    counter = 0
    while True:
        counter += 1
        candidate = Path(folder) / f"{stem}{'' if counter == 1 else f'-{counter}'}{suffix}"
        if candidate.name in (taken or set()):
            continue
        if not create and not candidate.exists():
            return candidate
        if create:
            with contextlib.suppress(FileExistsError):
                candidate.mkdir(parents=True)
                return candidate


def check_writable(out: str | Path | None, what: str = "--out") -> None:
    """Refuse up front, not after the data were checked, an output location that cannot be created: an existing
    file, or one below a file or an unwritable folder."""
    if out is None:
        return
    path = Path(out).expanduser().absolute()
    if path.exists() and not path.is_dir():
        raise ValueError(f"{what} '{out}' exists and is not a folder")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise ValueError(f"{what} '{out}' cannot be created: '{existing}' is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{what} '{out}' cannot be created: '{existing}' is not writable")


def new_run_dir(name: str, *, outputs_dir: str | Path | None = None, params: Mapping[str, Any] | None = None,
                now: _dt.datetime | None = None) -> Path:
    """Create a fresh ``<timestamp>-<name>`` folder (suffixed -2, -3, ... if taken); write params.yaml if given."""
    folder = unique_path(outputs_dir or records.default_outputs_dir(), f"{timestamp(now)}-{slug(name)}", create=True)
    if params is not None:
        records.write_params(folder, params)
    return folder


def write_manifest(run_dir: str | Path, manifest: Mapping[str, Any]) -> Path:
    return records.write_json(Path(run_dir) / records.MANIFEST_FILE, manifest)


def read_manifest(run_dir: str | Path) -> dict[str, Any]:
    """The run's manifest.json, or an empty dict when it has none (e.g. a run made by the 02_train notebook alone)."""
    path = Path(run_dir) / records.MANIFEST_FILE
    if not path.is_file():
        return {}
    try:
        return records.read_json(path)
    except ValueError:
        return {"status": "unreadable manifest"}


# --- One run at a glance, and the listing (`fer-study list`, the runner's closing summary) ------------------------
def model_headline(metrics_per_seed: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The few numbers a table of runs shows for one model: means over its seeds, collapsed only if every seed was."""
    def mean(values: list[Any]) -> float | None:
        numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        return sum(numbers) / len(numbers) if numbers and len(numbers) == len(values) else None

    tests = [m.get("test") or {} for m in metrics_per_seed]
    return {"model": metrics_per_seed[0].get("model"), "seeds": len(metrics_per_seed),
            "synthetic": metrics_per_seed[0].get("synthetic"),
            "test_accuracy": mean([t.get("accuracy") for t in tests]),
            "test_macro_f1": mean([t.get("macro_f1") for t in tests]),
            "collapsed": all(bool(t.get("collapse_warning")) for t in tests) if all(tests) else None}


def run_summary(run_dir: str | Path) -> dict[str, Any]:
    """One run at a glance: id, status, whether its data was synthetic, and each finished model's headline."""
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    try:
        params = records.read_params(run_dir)
    except (FileNotFoundError, yaml.YAMLError):
        params = {}
    folders = records.seed_folders(run_dir).values()
    models: list[dict[str, Any]] = []
    for name in records.run_models(run_dir):
        try:
            per_seed = [records.read_json(records.model_dir(folder, name) / records.METRICS_FILE) for folder in folders]
        except (OSError, ValueError):
            models.append({"model": name, "error": "unreadable metrics.json"})
            continue
        models.append(model_headline(per_seed))
    synthetic = (manifest.get("data") or {}).get("synthetic")
    if synthetic is None and models:
        synthetic = any(bool(m.get("synthetic")) for m in models)
    if synthetic is None and params:
        synthetic = bool(params.get("synthetic")) or None
    status = manifest.get("status") or ("complete" if models else "unknown")
    pid = manifest.get("pid")
    if status == "running" and isinstance(pid, int) and manifest.get("host") == platform.node() \
            and not process_alive(pid):
        status = "stopped"  # its runner, on this machine, died without recording it (killed hard, machine restarted)
    return {"id": run_dir.name, "path": str(run_dir), "status": status, "synthetic": synthetic,
            "name": params.get("name"), "started": manifest.get("started"), "models": models}


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (a killed one not yet reaped, a zombie, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc (macOS): os.kill said it exists
    return state not in ("Z", "X")


LIST_COLUMNS = ("run", "status", "data", "model", "seeds", "test_acc", "macro_f1", "collapsed")


def list_rows(outputs_dir: str | Path | None) -> list[dict[str, str]]:
    """One row per model of each run (one row for a run without a finished model), as display strings."""
    rows = []
    for run_dir in records.list_runs(outputs_dir):
        summary = run_summary(run_dir)
        data = {True: "SYNTHETIC", False: "real"}.get(summary["synthetic"], "?")
        base = {"run": summary["id"], "status": summary["status"], "data": data}
        if not summary["models"]:
            rows.append({**base, "model": "-", "seeds": "-", "test_acc": "-", "macro_f1": "-", "collapsed": "-"})
        for model in summary["models"]:
            rows.append({**base, "model": str(model["model"]), "seeds": str(model.get("seeds", 1)),
                         "test_acc": _fmt(model.get("test_accuracy")), "macro_f1": _fmt(model.get("test_macro_f1")),
                         "collapsed": {True: "COLLAPSED", False: "no"}.get(model.get("collapsed"), "?")})
    return rows


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def format_table(rows: Sequence[Mapping[str, str]], columns: Sequence[str] = LIST_COLUMNS) -> str:
    widths = {c: max([len(c), *(len(row[c]) for row in rows)]) for c in columns}
    header, underline = {c: c for c in columns}, {c: "-" * widths[c] for c in columns}
    return "\n".join("  ".join(row[c].ljust(widths[c]) for c in columns).rstrip() for row in [header, underline, *rows])
