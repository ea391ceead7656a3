"""Sweeps: every combination of a grid of parameter values, each as its own run through the same runner.

``fer-study sweep --params FILE --grid KEY=V1,V2 [--grid KEY2=...]`` resolves and checks every point before anything
is written (an unknown key or a bad value is one line, exit 2, no folder), then creates a sweep folder
``<out>/<YYYYmmdd-HHMMSS>-sweep-<name>/`` whose ``sweep.json`` records the grid, the command and, per point, its
values, run folder and status, and runs the points one after the other (or side by side, one per device, with
``devices``). At the end the sweep folder gets ``comparison.csv`` and ``comparison.png``: the points' results
against the swept keys (fer_lib.app.tables.comparison_rows, fer_lib.analysis.plots.plot_sweep).
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from fer_lib.app import runs
from fer_lib.app.errors import EXIT_FAILED, EXIT_OK, PROG, UserError, one_line
from fer_lib.app.params import load_yaml
from fer_lib.core import records

SWEEP_FILE = "sweep.json"
COMPARISON_CSV = "comparison.csv"
COMPARISON_PLOT = "comparison.png"


def split_values(text: str) -> list[str]:
    """A grid's values, ``"a,[b, c],{d: e}"``, read as the YAML list ``[a, [b, c], {d: e}]``; each value back as
    its YAML text (what a ``-p key=value`` override takes)."""
    try:
        values = load_yaml(f"[{text}]")
    except yaml.YAMLError as error:
        raise UserError(f"--grid values {text!r} are not a YAML list ({one_line(str(error))})") from None
    return [yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("\n...").strip()
            if value is not None else "" for value in values]


def parse_grid(texts: Sequence[str]) -> dict[str, list[str]]:
    """``["KEY=V1,V2", ...]`` as {key: [value text, ...]} (values parsed later, as YAML, by the params code)."""
    grid: dict[str, list[str]] = {}
    for text in texts:
        key, sep, raw = text.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"--grid {text!r} must look like KEY=V1,V2 (e.g. --grid learning_rate=0.001,0.01)")
        values = split_values(raw)
        if any(not value for value in values):
            raise UserError(f"--grid {text!r} has an empty value; separate values with single commas")
        if key in grid:
            raise UserError(f"--grid names {key} twice; give all its values in one --grid {key}=V1,V2")
        if len(set(values)) != len(values):
            raise UserError(f"--grid {text!r} repeats a value")
        grid[key] = values
    if not grid:
        raise UserError("a sweep needs at least one --grid KEY=V1,V2")
    return grid


def grid_points(grid: Mapping[str, Sequence[str]]) -> list[dict[str, str]]:
    """Every combination of the grid's values, the first key varying slowest."""
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[key] for key in keys))]


def point_overrides(point: Mapping[str, str]) -> list[str]:
    """A point as ``key=value`` overrides for the runner."""
    return [f"{key}={value}" for key, value in point.items()]


def point_name(base: str, point: Mapping[str, str]) -> str:
    """The run name of a point: the sweep's name and its values, e.g. ``smoke-epochs=2-seed=1``."""
    return "-".join([base, *(f"{key.rsplit('.', 1)[-1]}={value}" for key, value in point.items())])


def prepare_sweep(params_files: Sequence[str | Path], overrides: Sequence[str], grid_texts: Sequence[str], *,
                  data: str | None = None, name: str | None = None, out: str | Path | None = None,
                  notebooks_dir: Path | None = None) -> dict[str, Any]:
    """Check every point of the grid (params resolved and validated, data found) before anything is written."""
    from fer_lib.app import runner
    grid = parse_grid(grid_texts)
    base = runner.prepare_run(params_files, overrides, data=data, name=name, out=out, notebooks_dir=notebooks_dir)
    sweep_name = base["params"]["name"]
    points = []
    for point in grid_points(grid):
        try:
            plan = runner.prepare_run(params_files, [*overrides, *point_overrides(point)], data=data,
                                      name=point_name(sweep_name, point), out=out, notebooks_dir=notebooks_dir)
        except UserError as error:
            values = ", ".join(f"{key}={value}" for key, value in point.items())
            raise UserError(f"sweep point {values}: {error}") from None
        points.append({"values": point, "plan": plan})
    return {"grid": grid, "name": sweep_name, "points": points, "params_files": [str(f) for f in params_files],
            "overrides": list(overrides), "data": data, "out": out, "notebooks_dir": notebooks_dir}


def parse_devices(text: str) -> list[str]:
    """``--devices``: "" (points in turn), "0,1" (one process per listed device) or "auto" (one per visible GPU
    when there are at least two, else in turn)."""
    from fer_lib.app.provenance import visible_gpu_indices

    if text.strip() == "auto":
        gpus = visible_gpu_indices()
        return gpus if len(gpus) > 1 else []
    devices = [device.strip() for device in text.split(",") if device.strip()]
    if len(set(devices)) != len(devices):
        raise UserError(f"--devices {text!r} names a device twice")
    return devices


def new_sweep_dir(name: str, outputs_dir: str | Path | None = None) -> Path:
    """A fresh sweep folder (never an earlier one): ``<timestamp>-sweep-<name>``, suffixed -2, -3, ... if taken."""
    return runs.unique_path(outputs_dir or records.default_outputs_dir(), f"{runs.timestamp()}-sweep-{runs.slug(name)}",
                            create=True)


def _write(sweep_dir: Path, record: Mapping[str, Any]) -> None:
    records.write_json(sweep_dir / SWEEP_FILE, record)


def is_sweep_dir(path: str | Path) -> bool:
    return (Path(path) / SWEEP_FILE).is_file()


def read_sweep(sweep_dir: str | Path) -> dict[str, Any]:
    return records.read_json(Path(sweep_dir) / SWEEP_FILE)


def sweep_run_dirs(sweep_dir: str | Path) -> list[Path]:
    """The run folders of a sweep's points that exist, in grid order."""
    record = read_sweep(sweep_dir)
    return [Path(p["run_dir"]) for p in record["points"] if p.get("run_dir") and Path(p["run_dir"]).is_dir()]


def start_sweep(sweep: dict[str, Any], *, argv: Sequence[str], devices: Sequence[str] = (),
                log_output: bool = False) -> int:
    """Create the sweep folder and run every point; the exit code (0 when every point completed)."""
    sweep_dir = new_sweep_dir(sweep["name"], sweep["out"])
    record: dict[str, Any] = {
        "name": sweep["name"], "grid": sweep["grid"], "command": [PROG, *argv], "started": records.now(),
        "finished": None, "status": "running", "params_files": sweep["params_files"],
        "overrides": sweep["overrides"], "devices": list(devices),
        "points": [{"values": p["values"], "run_dir": None, "run": None, "status": "pending", "exit_code": None}
                   for p in sweep["points"]],
    }
    _write(sweep_dir, record)
    print(f"{PROG}: sweep folder {sweep_dir} ({len(record['points'])} runs)", flush=True)
    lock = threading.Lock()

    def finished(index: int, run_dir: Path | None, code: int) -> None:
        with lock:
            entry = record["points"][index]
            entry.update(run_dir=str(run_dir.resolve()) if run_dir else None, run=run_dir.name if run_dir else None,
                         exit_code=code, status="complete" if code == EXIT_OK else "failed")
            _write(sweep_dir, record)
            values = ", ".join(f"{k}={v}" for k, v in entry["values"].items())
            print(f"{PROG}: sweep point {index + 1}/{len(record['points'])} ({values}): {entry['status']}"
                  + (f" -> {run_dir}" if run_dir else ""), flush=True)

    try:
        if devices:
            _run_on_devices(sweep, devices, finished, log_output=log_output)
        else:
            _run_in_turn(sweep, finished, log_output=log_output)
    except KeyboardInterrupt:
        record.update(status="interrupted", finished=records.now())
        _write(sweep_dir, record)
        print(f"{PROG}: sweep interrupted; {sweep_dir / SWEEP_FILE} records which points ran", file=sys.stderr)
        return 130
    failed = [p for p in record["points"] if p["status"] != "complete"]
    record.update(status="complete" if not failed else "failed", finished=records.now())
    _write(sweep_dir, record)
    write_comparison(sweep_dir)
    print(f"{PROG}: sweep {'complete' if not failed else f'finished with {len(failed)} failed point(s)'}: "
          f"{sweep_dir}", flush=True)
    return EXIT_OK if not failed else EXIT_FAILED


def _run_in_turn(sweep: Mapping[str, Any], finished: Any, *, log_output: bool) -> None:
    from fer_lib.app import runner
    for index, point in enumerate(sweep["points"]):
        command = point_command(sweep, point)[3:]  # recorded in the run's manifest: the point as one `run`
        code = runner.start_run(point["plan"], argv=command, out=sweep["out"], log_output=log_output)
        finished(index, point["plan"].get("run_dir"), code)


def point_command(sweep: Mapping[str, Any], point: Mapping[str, Any]) -> list[str]:
    """The ``fer-study run`` command line of one point (for running it in its own process)."""
    command = [sys.executable, "-m", "fer_lib.app.cli", "run"]
    for file in sweep["params_files"]:
        command += ["--params", str(file)]
    for text in [*sweep["overrides"], *point_overrides(point["values"])]:
        command += ["-p", text]
    command += ["--name", point["plan"]["params"]["name"]]
    if sweep["data"] is not None:
        command += ["--data", str(sweep["data"])]
    if sweep["out"] is not None:
        command += ["--out", str(sweep["out"])]
    if sweep["notebooks_dir"] is not None:
        command += ["--notebooks-dir", str(sweep["notebooks_dir"])]
    return command


def launch_point(command: list[str], env: Mapping[str, str], *, capture: bool) -> subprocess.CompletedProcess[str]:
    """Run one point's ``fer-study run`` process to its end."""
    return subprocess.run(command, env=dict(env), capture_output=capture, text=True)


def _run_on_devices(sweep: Mapping[str, Any], devices: Sequence[str], finished: Any, *, log_output: bool) -> None:
    """Points side by side, one per device (``CUDA_VISIBLE_DEVICES``), each a ``fer-study run`` process."""
    pending = list(enumerate(sweep["points"]))
    lock = threading.Lock()

    def worker(device: str) -> None:
        while True:
            with lock:
                if not pending:
                    return
                index, point = pending.pop(0)
            env = {**os.environ, "CUDA_VISIBLE_DEVICES": device}
            done = launch_point(point_command(sweep, point), env, capture=not log_output)
            run_dir = None
            for line in (done.stdout or "").splitlines():
                if line.startswith(f"{PROG}: run folder "):
                    run_dir = Path(line.removeprefix(f"{PROG}: run folder ").strip())
            if done.returncode != EXIT_OK and not log_output:
                print((done.stderr or "")[-2000:], file=sys.stderr)
            finished(index, run_dir, done.returncode)

    threads = [threading.Thread(target=worker, args=(device,), daemon=True) for device in devices]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def write_comparison(sweep_dir: Path) -> list[Path]:
    """comparison.csv and comparison.png of a sweep's finished points (nothing when none finished)."""
    from fer_lib.analysis import plots
    from fer_lib.app import tables
    record = read_sweep(sweep_dir)
    run_dirs = [d for d in sweep_run_dirs(sweep_dir) if records.run_models(d)]
    if not run_dirs:
        return []
    table = tables.comparison_rows(run_dirs, keys=list(record["grid"]))
    table.to_csv(sweep_dir / COMPARISON_CSV, index=False)
    figure = plots.plot_sweep(table, list(record["grid"]), synthetic=bool(table["data"].eq("SYNTHETIC").any()))
    plots.save_figure(figure, sweep_dir / COMPARISON_PLOT)
    return [sweep_dir / COMPARISON_CSV, sweep_dir / COMPARISON_PLOT]


def expand_run_dirs(paths: Sequence[str | Path]) -> tuple[list[Path], list[str]]:
    """Run folders and sweep folders -> the run folders, and the swept keys of the sweeps among them."""
    run_dirs, keys = [], []
    for path in map(Path, paths):
        if is_sweep_dir(path):
            run_dirs += sweep_run_dirs(path)
            keys += [key for key in read_sweep(path)["grid"] if key not in keys]
        elif records.is_run_dir(path):
            run_dirs.append(path)
        else:
            raise UserError(f"'{path}' is neither a run folder ({records.PARAMS_FILE}) nor a sweep folder ({SWEEP_FILE})")
    return run_dirs, keys
