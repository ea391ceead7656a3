"""Sweeps (`fer-study sweep`): every combination of a grid of values (times every seed) as its own run, each an
enqueued trial of an Optuna study (fer_lib.app.trials) that workers pull. The folder is named after what the sweep is,
so the same command run again resumes it; its layout: docs/CONTRACTS.md.
"""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from fer_lib.app import runs, trials
from fer_lib.app.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, PROG, UserError, one_line
from fer_lib.app.params import load_yaml, override_text, seed_list
from fer_lib.core import records

SWEEP_FILE = "sweep.json"
COMPARISON_CSV = "comparison.csv"
COMPARISON_PLOT = "comparison.png"
STATUS = {"WAITING": "pending", "RUNNING": "running", "COMPLETE": "complete", "FAIL": "failed", "PRUNED": "failed"}


def split_values(text: str) -> list[str]:
    """A grid's values, ``"a,[b, c],{d: e}"``, read as a YAML list; each back as its YAML text (what ``-p`` takes)."""
    try:
        values = load_yaml(f"[{text}]")
    except yaml.YAMLError as error:
        raise UserError(f"--grid values {text!r} are not a YAML list ({one_line(str(error))})") from None
    return [override_text(value) if value is not None else "" for value in values]


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
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def point_overrides(point: Mapping[str, str]) -> list[str]:
    """A point as ``key=value`` overrides for the runner."""
    return [f"{key}={value}" for key, value in point.items()]


def point_name(base: str, point: Mapping[str, str]) -> str:
    """The run name of a point: the sweep's name and its values, e.g. ``smoke-epochs=2-seed=1``."""
    return "-".join([base, *(f"{key.rsplit('.', 1)[-1]}={value}" for key, value in point.items())])


def prepare_sweep(params_files: Sequence[str | Path], overrides: Sequence[str], grid_texts: Sequence[str], *,
                  data: str | None = None, name: str | None = None, out: str | Path | None = None,
                  notebooks_dir: Path | None = None) -> dict[str, Any]:
    """Check every point of the grid (params resolved and validated, data found) before anything is written. With
    several ``seeds``, a point per seed (``seeds=[s]``), so that workers train the seeds side by side."""
    from fer_lib.app import runner

    grid = parse_grid(grid_texts)
    base = runner.prepare_run(params_files, overrides, data=data, name=name, out=out, notebooks_dir=notebooks_dir)
    sweep_name, seeds = base["params"]["name"], seed_list(base["params"])
    combinations = [{**point, **({"seeds": f"[{s}]"} if len(seeds) > 1 else {})}
                    for point in grid_points(grid) for s in seeds]
    for point in combinations:
        try:
            runner.prepare_run(params_files, [*overrides, *point_overrides(point)], data=data,
                               name=point_name(sweep_name, point), out=out, notebooks_dir=notebooks_dir)
        except UserError as error:
            raise UserError(f"sweep point {', '.join(point_overrides(point))}: {error}") from None
    definition = {"name": sweep_name, "grid": grid, "overrides": list(overrides), "data": data,
                  "params": [Path(f).read_text() for f in params_files]}
    return {"grid": grid, "name": sweep_name, "points": combinations, "params_files": [str(f) for f in params_files],
            "overrides": list(overrides), "data": data, "out": None if out is None else str(out),
            "notebooks_dir": str(notebooks_dir or runner.DEFAULT_NOTEBOOKS_DIR),  # the workers' too
            "folder": runs.job_folder("sweep", sweep_name, definition)}


def point_key(point: Mapping[str, str]) -> str:
    return json.dumps(dict(point), sort_keys=True)


def is_sweep_dir(path: str | Path) -> bool:
    return (Path(path) / SWEEP_FILE).is_file()


def read_sweep(sweep_dir: str | Path) -> dict[str, Any]:
    return records.read_json(Path(sweep_dir) / SWEEP_FILE)


def sweep_run_dirs(sweep_dir: str | Path) -> list[Path]:
    """The run folders of a sweep's points that exist, in grid order."""
    record = read_sweep(sweep_dir)
    return [Path(p["run_dir"]) for p in record["points"] if p.get("run_dir") and Path(p["run_dir"]).is_dir()]


def point_states(study: Any, points: Sequence[Mapping[str, str]]) -> list[dict[str, Any]]:
    """Per point, what its newest trial says: status (pending, running, complete, failed), run folder, trial."""
    # the trials come sorted by number: a point's last is its newest
    newest = {t.user_attrs["point"]: t for t in study.get_trials(deepcopy=False) if "point" in t.user_attrs}
    entries = []
    for point in points:
        trial = newest.get(point_key(point))
        run_dir = None if trial is None else trial.user_attrs.get("run_dir")
        entries.append({"values": dict(point), "status": "pending" if trial is None else STATUS[trial.state.name],
                        "trial": None if trial is None else trial.number, "run_dir": run_dir,
                        "run": Path(run_dir).name if run_dir else None})
    return entries


def enqueue_points(study: Any, points: Sequence[Mapping[str, str]]) -> int:
    """Enqueue each point with no waiting, running or complete trial (a failed one reruns in its folder); the count."""
    entries = [(point, entry) for point, entry in zip(points, point_states(study, points))
               if entry["trial"] is None or entry["status"] == "failed"]
    for point, entry in entries:
        study.enqueue_trial({}, user_attrs={"point": point_key(point), "values": dict(point),
                                            **({"run_dir": entry["run_dir"]} if entry["run_dir"] else {})})
    return len(entries)


def start_sweep(sweep: dict[str, Any], *, argv: Sequence[str], workers: str = "auto", storage: str | None = None,
                launch: str = "local", dry_run: bool = False, log_output: bool = False) -> int:
    """Make (or find) the sweep folder and study, enqueue the points and run workers (or submit them to Slurm)."""
    sweep_dir, storage_url = trials.job_location(sweep["out"], sweep["folder"], storage)
    devices = trials.worker_devices(workers) if launch == "local" or workers != "auto" else [None]
    again = is_sweep_dir(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    job = {"kind": "sweep", **{key: sweep[key] for key in ("name", "params_files", "overrides", "data", "out",
                                                             "notebooks_dir")}, "log_output": log_output}
    study = trials.create_study(storage_url, sweep["folder"], job)
    retried = trials.retry_dead_trials(study)
    enqueued = enqueue_points(study, sweep["points"])
    record: dict[str, Any] = {"name": sweep["name"], "grid": sweep["grid"], "command": [PROG, *argv],
                              "started": records.now(), "finished": None, "status": "running",
                              "params_files": sweep["params_files"], "overrides": sweep["overrides"],
                              "storage": storage_url, "study": sweep["folder"], "workers": len(devices),
                              "points": point_states(study, sweep["points"])}
    records.write_json(sweep_dir / SWEEP_FILE, record)
    print(f"{PROG}: sweep folder {sweep_dir} ({len(sweep['points'])} runs; "
          + (f"again: {len(sweep['points']) - enqueued} kept, {enqueued} to run" if again else f"{enqueued} to run")
          + (f", {len(retried)} of a killed worker again" if retried else "") + ")", flush=True)
    if launch == "slurm":
        tasks = len(devices) if workers != "auto" else len(sweep["points"])  # auto: a GPU for every point
        print(trials.launch_slurm(storage_url, sweep["folder"], tasks, sweep_dir, command=[PROG, *argv],
                                  dry_run=dry_run).rstrip())
        return EXIT_OK
    try:
        if enqueued or retried or any(p["status"] in ("pending", "running") for p in record["points"]):
            trials.run_local_workers(storage_url, sweep["folder"], devices)
    except KeyboardInterrupt:
        record.update(status="interrupted", finished=records.now(), points=point_states(study, sweep["points"]))
        records.write_json(sweep_dir / SWEEP_FILE, record)
        print(f"{PROG}: sweep interrupted; the same command resumes it ({sweep_dir / SWEEP_FILE})", file=sys.stderr)
        return EXIT_INTERRUPTED
    record["points"] = point_states(study, sweep["points"])
    failed = [p for p in record["points"] if p["status"] != "complete"]
    record.update(status="complete" if not failed else "failed", finished=records.now())
    records.write_json(sweep_dir / SWEEP_FILE, record)
    write_comparison(sweep_dir)
    print(f"{PROG}: sweep {'complete' if not failed else f'finished with {len(failed)} point(s) not complete'}: "
          f"{sweep_dir}", flush=True)
    return EXIT_OK if not failed else EXIT_FAILED


class PointFailed(RuntimeError):
    """A point's run failed (its run folder says why): its trial fails, and runs again with the sweep."""


def work(study: Any, job: Mapping[str, Any]) -> None:
    """A worker of a sweep: run points until none is waiting (each a run folder made by the study's runner)."""
    trials.quiet_optuna()
    while True:
        trials.retry_dead_trials(study)
        if not trials.trials_in(study, "WAITING"):
            return
        study.optimize(lambda trial: run_point(trial, job), n_trials=1, catch=(PointFailed,))


def run_point(trial: Any, job: Mapping[str, Any]) -> float:
    """One trial: its point's run (a killed point's retry resumes it); the models' mean best validation accuracy."""
    import optuna

    from fer_lib.app import runner

    if "point" not in trial.user_attrs:  # another worker took the last waiting point between our look and our ask
        raise optuna.TrialPruned("no point was left for this trial")
    trials.mark_worker(trial)
    values, previous = trial.user_attrs["values"], trial.user_attrs.get("run_dir")
    notebooks_dir = Path(job["notebooks_dir"])  # prepare_sweep always names one
    if previous and Path(previous).is_dir() and runs.run_summary(previous)["status"] != "complete":
        code = runner.resume_run(previous, argv=["resume", previous], log_output=job["log_output"],
                                 notebooks_dir=notebooks_dir)
        run_dir = Path(previous)
    else:
        overrides = [*job["overrides"], *point_overrides(values)]
        plan = runner.prepare_run(job["params_files"], overrides, data=job["data"],
                                  name=point_name(job["name"], values), out=job["out"],
                                  notebooks_dir=notebooks_dir)
        command = ["run", *[x for f in job["params_files"] for x in ("--params", f)],
                   *[x for o in overrides for x in ("-p", o)]]
        code = runner.start_run(plan, argv=command, out=job["out"], log_output=job["log_output"],
                                on_start=lambda folder: trial.set_user_attr("run_dir", str(folder.resolve())))
        run_dir = plan["run_dir"]
    text = ", ".join(point_overrides(values))
    print(f"{PROG}: sweep point {text}: {'complete' if code == EXIT_OK else 'failed'} -> {run_dir}", flush=True)
    if code != EXIT_OK:
        raise PointFailed(f"sweep point {text} ended with exit code {code}: see {run_dir}")
    accuracies = [records.read_json(records.model_dir(folder, model) / records.METRICS_FILE)["best_val"]
                  for folder in records.seed_folders(run_dir).values() for model in records.finished_models(folder)]
    return float(sum(accuracies) / len(accuracies)) if accuracies else 0.0


def write_comparison(sweep_dir: Path) -> list[Path]:
    """comparison.csv and comparison.png of a sweep's finished points (nothing when none finished)."""
    from fer_lib.analysis import plots
    from fer_lib.app import tables
    keys = list(read_sweep(sweep_dir)["grid"])
    run_dirs = [d for d in sweep_run_dirs(sweep_dir) if records.run_models(d)]
    if not run_dirs:
        return []
    table = tables.comparison_rows(run_dirs, keys=keys)
    table.to_csv(sweep_dir / COMPARISON_CSV, index=False)
    figure = plots.plot_sweep(table, keys, synthetic=bool(table["data"].eq("SYNTHETIC").any()))
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
            raise UserError(f"'{path}' is neither a run folder ({records.PARAMS_FILE}) nor a sweep folder "
                            f"({SWEEP_FILE})")
    return run_dirs, keys
