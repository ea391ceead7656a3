"""The study runner: check a run up front, execute the notebooks into a fresh run folder with papermill (one line
per epoch from each model's progress.json), keep its manifest.json, render report.html, resume an interrupted run.
A failing notebook ends the run with one paragraph naming the notebook and the cell; the partial notebook is kept."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from fer_lib import __version__
from fer_lib.app import runs
from fer_lib.app.errors import (EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, PROG, UserError, one_line,
                                sigterm_as_interrupt)
from fer_lib.app.lock import lock_status
from fer_lib.app.params import ParamsError, resolve_params, resolve_params_files, seed_folder, seed_list
from fer_lib.app.provenance import (BackendUnavailable, device_info, distribution_plan, git_info, keras_backend,
                                    package_versions)
from fer_lib.core import records
from fer_lib.core.config import DataConfig, TrainConfig
from fer_lib.core.data import SYNTHETIC_NOTICE, FerDataError, data_source, detect_layout, load_study_data

KERNEL_NAME = "python3"
NOTEBOOKS = ("01_explore_data", "02_train", "03_compare")
DEFAULT_NOTEBOOKS_DIR = Path(__file__).resolve().parents[2] / "notebooks"
BANNER = "!" * 100


def prepare_run(params_files: Sequence[str | Path] = (), overrides: Sequence[str] = (), *, data: str | None = None,
                name: str | None = None, out: str | Path | None = None,
                notebooks_dir: Path | None = None) -> dict[str, Any]:
    """Check everything a run needs before anything is written, with no Keras imported; any problem is a UserError.
    Params: defaults, the params files in order, ``data``/``name``, the overrides. The data is read in full (FER2013
    decoded once, into the loader's cache the notebooks read) and the distribution's devices must divide the batch."""
    extra = {key: str(value) for key, value in (("data", data), ("name", name)) if value is not None}
    try:
        params = resolve_params_files(params_files, overrides, extra or None)
        runs.check_writable(out)
    except (ParamsError, ValueError) as error:
        raise UserError(str(error)) from None
    project = records.project_root(DEFAULT_NOTEBOOKS_DIR.parent)
    try:
        path, how = data_source(DataConfig.from_mapping(params), project_root=project)
        if path is None:
            params["synthetic"] = True  # the notebooks must use exactly what the runner checked
        else:
            params["data"] = str(detect_layout(path.resolve())[1])  # absolute: the notebooks run in notebooks/
        dataset, how = load_study_data(DataConfig.from_mapping(params), project_root=project)
        train = TrainConfig.from_mapping(params, ignore_unknown=True)
        train.check_training_split(len(dataset.train))
        distribution = distribution_plan(train)  # the devices and the batch's split, from a JAX subprocess
    except (FerDataError, ParamsError, BackendUnavailable) as error:
        raise UserError(str(error)) from None
    source = {"synthetic": dataset.is_synthetic, "how": how, "layout": dataset.layout, "source": dataset.source,
              "fingerprint": dataset.fingerprint, "val_origin": dataset.val_origin,
              "images": {name: len(split) for name, split in dataset.splits.items()}}
    if dataset.is_synthetic:
        source["notice"] = SYNTHETIC_NOTICE
    notebooks_dir = (notebooks_dir or DEFAULT_NOTEBOOKS_DIR).resolve()
    if missing := [f"{name}.ipynb" for name in NOTEBOOKS if not (notebooks_dir / f"{name}.ipynb").is_file()]:
        raise UserError(f"notebook(s) {', '.join(missing)} not found in '{notebooks_dir}'; is the project checkout "
                        f"complete?")
    return {"params": params, "data": source, "notebooks_dir": notebooks_dir, "distribution": distribution,
            "params_files": [str(f) for f in params_files], "overrides": list(overrides), "project_root": project}


def notebook_jobs(plan: Mapping[str, Any], run_dir: Path) -> list[dict[str, Any]]:
    """The notebooks to execute, in order, with their papermill parameters (exactly those each declares): 01 and 02
    get the resolved params as ``overrides``, 02 its ``model`` too, once per model and seed (seed by seed, so a short
    run has whole seeds), 03 only the run folder."""
    params, notebooks_dir = dict(plan["params"]), plan["notebooks_dir"]
    run_dir_text = str(run_dir.resolve())
    out = run_dir / runs.NOTEBOOKS_DIR
    study = {"run_dir": run_dir_text, "params_file": None, "overrides": params}
    jobs = [{"name": "01_explore_data", "model": None, "seed": None, "output": out / "01_explore_data.ipynb",
             "parameters": study}]
    seeds: list[int | None] = list(seed_list(params)) if seed_folder(params) is not None else [None]
    for seed in seeds:
        overrides = params if seed is None else {**params, "seed": seed}
        suffix = "" if seed is None else f"-seed{seed}"
        for model in params["models"]:
            jobs.append({"name": "02_train", "model": model, "seed": seed,
                         "output": out / f"02_train-{model}{suffix}.ipynb",
                         "parameters": {**study, "overrides": overrides, "model": model}})
    jobs.append({"name": "03_compare", "model": None, "seed": None, "output": out / "03_compare.ipynb",
                 "parameters": {"run_dir": run_dir_text}})
    for job in jobs:
        job["input"] = notebooks_dir / f"{job['name']}.ipynb"
    return jobs


def run_context(plan: Mapping[str, Any]) -> dict[str, Any]:
    """What the manifest records about the data and the machine (gathered before the run folder exists)."""
    return {"data": dict(plan["data"]), "backend": keras_backend(), "device": device_info(),
            "distribution": plan.get("distribution"),  # as planned; train_config.json records what each model used
            "versions": package_versions(),
            "lock": lock_status(),  # whether this environment has requirements/lock.txt's versions (None: no lock here)
            "python": sys.version.split()[0], "platform": platform.platform(), "git": git_info(plan["project_root"]),
            "environment": {key: os.environ[key] for key in ("KERAS_BACKEND", "CUDA_VISIBLE_DEVICES", "JAX_PLATFORMS",
                                                             "XLA_FLAGS", "FER2013_DIR") if key in os.environ}}


def start_run(plan: dict[str, Any], *, argv: Sequence[str], out: str | Path | None = None,
              log_output: bool = False, on_start: Callable[[Path], Any] | None = None) -> int:
    """Create a fresh run folder for a prepared ``plan`` and execute every notebook into it; the exit code.
    ``on_start`` is called with the run folder as soon as it exists (a sweep's trial records it)."""
    plan["context"] = plan.get("context") or run_context(plan)  # versions, backend, device, git: before the folder
    run_dir = plan["run_dir"] = runs.new_run_dir(plan["params"]["name"], outputs_dir=out, params=plan["params"])
    jobs = notebook_jobs(plan, run_dir)
    manifest: dict[str, Any] = {
        "fer_study_version": __version__, "status": "running", "started": records.now(), "finished": None,
        "seconds": None, "run_dir": str(run_dir.resolve()), "command": [PROG, *argv], "host": platform.node(),
        "pid": os.getpid(), "params_files": plan["params_files"], "overrides": plan["overrides"], **plan["context"],
        "notebooks_dir": str(plan["notebooks_dir"]),  # what a resume runs again
        "notebooks": [{"notebook": job["name"], "model": job["model"], "seed": job["seed"],
                       "output": str(job["output"].relative_to(run_dir)), "status": "pending", "started": None,
                       "seconds": None} for job in jobs],
        "results": {}, "resumes": [], "error": None}
    runs.write_manifest(run_dir, manifest)
    (run_dir / runs.NOTEBOOKS_DIR).mkdir(exist_ok=True)
    (run_dir / runs.FIGURES_DIR).mkdir(exist_ok=True)
    print(f"{PROG}: run folder {run_dir}", flush=True)
    if on_start is not None:
        on_start(run_dir)
    return execute_jobs(plan, run_dir, manifest, jobs, log_output=log_output)


def resume_run(run_dir: str | Path, *, argv: Sequence[str], log_output: bool = False,
               notebooks_dir: Path | None = None) -> int:
    """Finish an interrupted or failed run in its own folder: completed notebooks are kept, the others run again (a
    training notebook from its model's last backup) with the notebooks the run was made with; the manifest records
    each resume."""
    run_dir = Path(run_dir)
    if not records.is_run_dir(run_dir):
        raise UserError(f"'{run_dir}' is not a run folder (no {records.PARAMS_FILE} or {records.MANIFEST_FILE})")
    manifest = runs.read_manifest(run_dir)
    if not manifest.get("notebooks"):
        raise UserError(f"'{run_dir}' has no {records.MANIFEST_FILE} listing its notebooks: it was not made by "
                        f"`{PROG} run`, so there is nothing to resume")
    status = runs.run_summary(run_dir)["status"]
    if status == "complete":
        raise UserError(f"'{run_dir}' is already complete; nothing to resume")
    if status == "running":
        raise UserError(f"'{run_dir}' is still running (process {manifest.get('pid')} on {manifest.get('host')}); "
                        f"stop it first")
    try:
        params = resolve_params(records.read_params(run_dir))
    except ParamsError as error:
        raise UserError(f"{run_dir / records.PARAMS_FILE}: {error}") from None
    notebooks_dir = Path(notebooks_dir or manifest.get("notebooks_dir") or DEFAULT_NOTEBOOKS_DIR)
    plan: dict[str, Any] = {
        "params": params, "data": manifest["data"], "notebooks_dir": notebooks_dir,
        "params_files": manifest.get("params_files", []), "overrides": manifest.get("overrides", []),
        "project_root": records.project_root(notebooks_dir.parent),
        "context": {key: manifest.get(key) for key in ("data", "backend", "device", "distribution")}}
    jobs = notebook_jobs(plan, run_dir)
    done = {(entry["notebook"], entry["model"], entry.get("seed")) for entry in manifest["notebooks"]
            if entry["status"] == "complete"}
    manifest["resumes"] = [*manifest.get("resumes", []),
                           {"started": records.now(), "previous_status": status, "command": [PROG, *argv],
                            "host": platform.node(), "pid": os.getpid(), "notebooks_kept": len(done)}]
    manifest.update(status="running", pid=os.getpid(), host=platform.node(), error=None, finished=None)
    runs.write_manifest(run_dir, manifest)
    print(f"{PROG}: resuming {run_dir} ({len(done)} of {len(jobs)} notebooks already complete)", flush=True)
    return execute_jobs(plan, run_dir, manifest, jobs, log_output=log_output, skip=done)


def job_label(job: Mapping[str, Any]) -> str:
    """A notebook job as the user reads it: ``02_train (basic_cnn, seed 1)``."""
    details = [part for part in (job.get("model"), None if job.get("seed") is None else f"seed {job['seed']}") if part]
    return job["name"] + (f" ({', '.join(details)})" if details else "")


@sigterm_as_interrupt()  # `kill` marks the run interrupted, like Ctrl-C
def execute_jobs(plan: Mapping[str, Any], run_dir: Path, manifest: dict[str, Any], jobs: list[dict[str, Any]], *,
                 log_output: bool = False, skip: set[tuple[str, str | None, int | None]] = frozenset()) -> int:
    """Execute ``jobs`` into ``run_dir`` (all but those in ``skip``), keeping manifest.json up to date; then the
    report. Ctrl-C (or SIGTERM) marks the run interrupted, a failing notebook marks it failed; the exit code."""
    from tqdm.auto import tqdm

    data = manifest["data"]
    if data["synthetic"]:
        _shout(data["notice"])
    distribution = manifest.get("distribution") or {}
    spread = (f"; distribution: {distribution['kind']} over {distribution['devices']} devices"
              if distribution.get("kind") else "")
    print(f"{PROG}: data: {data['how']}; backend: {manifest['backend']}; device: {manifest['device']['summary']}"
          f"{spread}", flush=True)
    started = time.time()
    interactive = _is_terminal(sys.stderr)  # progress bars on a terminal; one line per notebook in logs
    index, current = 0, None
    try:
        with tqdm(total=len(jobs), desc="fer-study", unit="notebook", position=0, disable=not interactive,
                  file=sys.stderr) as bar:
            show = bar.set_postfix_str if interactive else (lambda text: print(f"{PROG}: {text}", file=sys.stderr,
                                                                              flush=True))
            for index, job in enumerate(jobs):
                entry = manifest["notebooks"][index]
                label = job_label(job)
                if (job["name"], job["model"], job["seed"]) in skip:
                    bar.update(1)
                    tqdm.write(f"{PROG}: [{index + 1}/{len(jobs)}] {label} complete already (kept)", file=sys.stderr)
                    continue
                current = job
                bar.set_description(label)
                entry.update(status="running", started=records.now())
                runs.write_manifest(run_dir, manifest)
                began = time.perf_counter()
                watcher = None if job["model"] is None or log_output else EpochProgress(
                    records.model_dir(run_dir, job["model"], job["seed"]) / records.PROGRESS_FILE, show)
                try:
                    if watcher is not None:
                        watcher.start()
                    _execute_notebook(job, plan["notebooks_dir"], log_output=log_output,
                                      progress=({"desc": f"  cells of {job['output'].name}", "position": 1,
                                                 "leave": False} if interactive and not log_output else False))
                finally:
                    if watcher is not None:
                        watcher.stop()
                    entry["seconds"] = round(time.perf_counter() - began, 2)
                entry["status"] = "complete"
                current = None
                runs.write_manifest(run_dir, manifest)
                bar.update(1)
                tqdm.write(f"{PROG}: [{index + 1}/{len(jobs)}] {label} done in {entry['seconds']:.1f} s",
                           file=sys.stderr)
        report = render_report(run_dir / runs.NOTEBOOKS_DIR / "03_compare.ipynb", run_dir / runs.REPORT_FILE)
        manifest["report"] = str(report.relative_to(run_dir))
    except KeyboardInterrupt:
        if current is not None:
            manifest["notebooks"][index]["status"] = "interrupted"
        _finish(manifest, run_dir, started, "interrupted", "interrupted by the user (Ctrl-C)")
        print(f"{PROG}: interrupted; the run folder {run_dir} is marked interrupted (the partial notebook is kept)",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:  # noqa: BLE001 - every failure is reported, recorded and turned into exit code 1
        if current is not None:
            manifest["notebooks"][index]["status"] = "failed"
        message = failure_message(error, current, run_dir)
        _finish(manifest, run_dir, started, "failed", message)
        print("\n" + _wrap(message, 110), file=sys.stderr)
        return EXIT_FAILED
    else:
        manifest["results"] = {m["model"]: m for m in runs.run_summary(run_dir)["models"]}
        _record_what_models_used(manifest, run_dir)
        _finish(manifest, run_dir, started, "complete", None)
        print_run_summary(run_dir, manifest["seconds"])
        if data["synthetic"]:
            _shout(data["notice"])
        return EXIT_OK


def format_progress(record: Mapping[str, Any]) -> str:
    """One line about a training epoch (from ``progress.json``): model, epoch, accuracies, speed, time left."""
    def number(key: str, form: str) -> str:
        value = record.get(key)
        return format(value, form) if isinstance(value, (int, float)) else "-"

    return (f"{record.get('model')} epoch {record.get('epoch')}/{record.get('epochs')} · train acc "
            f"{number('accuracy', '.3f')} · val acc {number('val_accuracy', '.3f')} · "
            f"{number('images_per_second', ',.0f')} images/s · ~{number('seconds_left', '.0f')} s left")


class EpochProgress(threading.Thread):
    """Watches a training notebook's ``progress.json`` and shows one line per finished epoch."""

    def __init__(self, path: Path, show: Callable[[str], Any], interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.path, self.show, self.interval = path, show, interval
        self._stopped = threading.Event()
        self._last: Any = None

    def run(self) -> None:
        while not self._stopped.wait(self.interval):
            self.poll()

    def poll(self) -> None:
        try:
            record = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return
        if record.get("epoch") != self._last:
            self._last = record.get("epoch")
            self.show(format_progress(record))

    def stop(self) -> None:
        self._stopped.set()
        self.join(timeout=5)
        self.poll()  # the last epoch, if it ended between two polls


def kernel_log(job: Mapping[str, Any]) -> Path:
    """Where a notebook's kernel process writes its own output: ``<run>/logs/<notebook>.log``."""
    return Path(job["output"]).parent.parent / runs.LOGS_DIR / f"{Path(job['output']).stem}.log"


def kernel_manager_logging_to(log: Path) -> type:
    """A Jupyter kernel manager whose kernel writes its stdout and stderr (TensorFlow 2.21's C++ start-up lines that
    no log level silences, warnings, a crash's last words) to ``log``: the terminal keeps only fer-study's lines."""
    from jupyter_client.manager import AsyncKernelManager

    class LoggingKernelManager(AsyncKernelManager):
        async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "ab") as handle:  # the kernel process keeps its own copy of the file descriptor
                kw.update(stdout=handle, stderr=handle)
                await super()._async_launch_kernel(kernel_cmd, **kw)

    return LoggingKernelManager


def _execute_notebook(job: Mapping[str, Any], notebooks_dir: Path, *, log_output: bool,
                      progress: bool | dict[str, Any]) -> None:
    import papermill

    job["output"].parent.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(
        str(job["input"]), str(job["output"]), parameters=dict(job["parameters"]), kernel_name=KERNEL_NAME,
        cwd=str(notebooks_dir), progress_bar=progress, log_output=log_output,
        stdout_file=sys.stdout if log_output else None, stderr_file=sys.stderr if log_output else None,
        kernel_manager_class=kernel_manager_logging_to(kernel_log(job)))


def render_report(executed: Path, report: Path) -> Path:
    """The executed compare notebook as a standalone HTML report for readers: narrative, tables and figures, code
    hidden (nbconvert's no-input export; the notebook in ``notebooks/`` keeps its code)."""
    import nbconvert
    import nbformat

    notebook = nbformat.read(executed, as_version=4)
    title = f"fer-study report {report.parent.name}"
    exporter = nbconvert.HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(notebook, resources={"metadata": {"name": title}})
    report.write_text(body, encoding="utf-8")
    return report


def failure_message(error: BaseException, job: Mapping[str, Any] | None, run_dir: Path) -> str:
    """One paragraph: which notebook and cell failed, the error, and where the partial notebook is."""
    from papermill.exceptions import PapermillExecutionError

    where = (f"notebook {job_label({**job, 'name': job['name'] + '.ipynb'})}" if job is not None
             else "after the notebooks, while writing report.html")
    if isinstance(error, PapermillExecutionError):
        first_line = next((line.strip() for line in str(error.source or "").splitlines() if line.strip()), "")
        cell = f"cell [{error.exec_count}]" if error.exec_count is not None else "a cell"
        snippet = f" (starting `{first_line[:80]}`)" if first_line else ""
        text = f"{PROG}: {where} failed at {cell}{snippet}: {error.ename}: {one_line(str(error.evalue))[:500]}."
    else:
        text = f"{PROG}: {where} failed: {type(error).__name__}: {one_line(str(error))[:500]}."
    if job is not None and Path(job["output"]).exists():
        text += f" The partially executed notebook, with the full traceback, is kept at {job['output']}."
    if job is not None and kernel_log(job).is_file():
        text += f" The kernel's own output is in {kernel_log(job)}."
    text += f" The run folder {run_dir} is marked failed in {records.MANIFEST_FILE}."
    return text


def _finish(manifest: dict[str, Any], run_dir: Path, started: float, status: str, error: str | None) -> None:
    manifest.update(status=status, finished=records.now(), seconds=round(time.time() - started, 2), error=error)
    runs.write_manifest(run_dir, manifest)


def _record_what_models_used(manifest: dict[str, Any], run_dir: Path) -> None:
    """Record the data fingerprint and the distribution each model trained with (its train_config.json); warn if a
    fingerprint is not the one the runner checked."""
    fingerprints, distributions = {}, {}
    for seed, folder in records.seed_folders(run_dir).items():
        for model in records.finished_models(folder):
            name = f"{model} seed {seed}"
            try:
                config = records.read_json(records.model_dir(folder, model) / records.TRAIN_CONFIG_FILE)
            except (OSError, ValueError):
                continue
            with contextlib.suppress(KeyError, TypeError):
                fingerprints[name] = config["data"]["fingerprint"]
            with contextlib.suppress(KeyError, TypeError):
                distributions[name] = config["distribution"]
    manifest["data"]["fingerprints_used"] = fingerprints
    expected = manifest["data"].get("fingerprint")
    if expected and any(value != expected for value in fingerprints.values()):
        print(f"{PROG}: warning: the models were trained on data with fingerprint(s) "
              f"{sorted(set(fingerprints.values()))}, not {expected} as checked before the run", file=sys.stderr)
    if isinstance(manifest.get("distribution"), dict):
        manifest["distribution"]["used"] = distributions


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _shout(text: str) -> None:
    print(f"\n{BANNER}\n{_wrap(text, len(BANNER))}\n{BANNER}\n", file=sys.stderr)


def _wrap(text: str, width: int) -> str:
    """Wrap at spaces only, so that paths stay whole (copyable)."""
    return textwrap.fill(text, width=width, break_on_hyphens=False, break_long_words=False)


def print_run_summary(run_dir: Path, seconds: float) -> None:
    rows = [row for row in runs.list_rows(run_dir.parent) if row["run"] == run_dir.name]
    print(f"\n{PROG}: run complete in {seconds:.1f} s ({seconds / 60:.1f} min): {run_dir}")
    if rows:
        print(runs.format_table(rows))
    report = run_dir / runs.REPORT_FILE
    if report.is_file():
        print(f"report: {report}")
