"""The ``fer-study`` command: run the whole study (the three notebooks, executed with papermill) or list runs.

``fer-study run [--params FILE ...] [--data DIR] [-p key=value ...] [--out DIR] [--name NAME]``

1. resolves the params (defaults, then each params file, then ``--data``/``--name``, then ``-p`` overrides) and
   checks them, the data folder and the notebooks; any user error is one line on stderr and exit code 2, before
   anything is written;
2. creates a fresh run folder ``<out>/<YYYYmmdd-HHMMSS>-<name>/`` (never overwrites one) with ``params.yaml`` and
   ``manifest.json`` (versions, backend, device, git commit, data fingerprint, timings, status);
3. executes ``01_explore_data``, ``02_train`` once per model and ``03_compare`` into ``<run>/notebooks/``, passing
   the resolved params and the run folder, and renders ``03_compare`` as ``<run>/report.html``.

A failing notebook ends the run with exit code 1, a paragraph naming the notebook and the cell, the partially
executed notebook kept in the run folder and the manifest's status ``failed``.

``fer-study list [--out DIR]`` prints every run: id, status, real or synthetic data, and per model the test
accuracy, macro-F1 and whether its predictions collapsed onto one class.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import logging
import os
import platform
import re
import signal
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from fer_lib import __version__, runs
from fer_lib.provenance import BackendUnavailable, check_backend, device_info, git_info, keras_backend, package_versions

PROG = "fer-study"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
KERNEL_NAME = "python3"
NOTEBOOKS = ("01_explore_data", "02_train", "03_compare")
DEFAULT_NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"
# Parameters of 01_explore_data when its parameters cell cannot be inspected (see docs/CONTRACTS.md).
EXPLORE_FALLBACK_KEYS = ("seed", "augmentation")
BANNER = "!" * 100


class UserError(Exception):
    """A mistake in the command line, a params file or the data folder: reported in one line, exit code 2."""


class NotebookFailed(Exception):
    """A notebook of the run failed; the message is the paragraph shown to the user."""


# --------------------------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Facial expression recognition on FER2013: basic CNN vs ResNet50V2. Runs the study's "
                    "notebooks into a fresh run folder and lists past runs.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = commands.add_parser(
        "run", help="run the study: explore the data, train every model, compare them",
        description="Run the study into a new run folder. Params are resolved as: defaults, then each --params file "
                    "in order, then --data/--name, then each -p override.",
        epilog="examples:\n  fer-study run --params params/smoke.yaml\n"
               "  fer-study run --params params/paper.yaml --data ~/datasets/fer2013 -p epochs=50\n"
               "  fer-study run --params params/paper.yaml -p models=[basic_cnn] -p augmentation.rotation=5",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("--params", metavar="FILE", action="extend", nargs="+", default=[],
                     help="YAML params file(s); later files override earlier ones")
    run.add_argument("--data", metavar="DIR",
                     help="FER2013: fer2013.csv, a folder holding it, or a train/ test/ folder layout "
                          "(default: $FER2013_DIR, else data/fer2013, else the synthetic demo data)")
    run.add_argument("-p", "--param", metavar="KEY=VALUE", dest="overrides", action="append", default=[],
                     help="override one parameter (value in YAML syntax; a.b=value sets a nested key), repeatable")
    run.add_argument("--out", metavar="DIR", help="where run folders go (default: outputs/ of the project)")
    run.add_argument("--name", help="run name, the suffix of the run folder (default: the params' name)")
    run.add_argument("--log-output", action="store_true",
                     help="stream the notebooks' outputs (training logs) to the terminal")
    run.add_argument("--notebooks-dir", metavar="DIR", type=Path, default=None, help=argparse.SUPPRESS)

    listing = commands.add_parser("list", help="list the runs in an outputs folder",
                                  description="List run folders: status, data, and each model's test results.")
    listing.add_argument("--out", metavar="DIR", help="outputs folder (default: outputs/ of the project)")

    results = commands.add_parser(
        "results", help="a markdown results table generated from run folders",
        description="Print a markdown table of the given runs' test results (every number read from the run "
                    "folder), or write it into the README between the results markers.")
    results.add_argument("run_dirs", metavar="RUN_DIR", nargs="+", type=Path)
    results.add_argument("--update-readme", metavar="FILE", type=Path,
                         help="replace the table between the results markers of FILE (e.g. README.md)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fer-study`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            return command_list(args)
        if args.command == "results":
            return command_results(args)
        return command_run(args, argv=list(sys.argv[1:] if argv is None else argv))
    except UserError as error:
        print(f"{PROG}: error: {_one_line(str(error))}", file=sys.stderr)
        return EXIT_USAGE


def _one_line(text: str) -> str:
    return " ".join(text.split())


# --------------------------------------------------------------------------------------------------------------------
# fer-study run
# --------------------------------------------------------------------------------------------------------------------


def command_run(args: argparse.Namespace, *, argv: list[str]) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before Keras imports TensorFlow; kernels inherit it
    try:
        check_backend()  # before Keras is imported: a missing backend is one line, not a traceback from Keras
    except BackendUnavailable as error:
        raise UserError(str(error)) from None
    with _native_stderr_filtered():
        import fer_lib.study  # noqa: F401 - imports Keras and its backend, whose import-time log lines are dropped
    plan = prepare_run(args)  # every check that can fail because of the user happens here, before any writing
    plan["context"] = run_context(plan)  # versions, backend, device, git, data fingerprint: before the folder too
    run_dir = runs.new_run_dir(plan["params"]["name"], outputs_dir=args.out, params=plan["params"])
    try:  # `kill` (SIGTERM) marks the run interrupted, like Ctrl-C
        previous = signal.signal(signal.SIGTERM, _terminated)
    except ValueError:  # not the main thread: leave signals alone
        previous = None
    try:
        return execute_run(plan, run_dir, argv=argv, log_output=args.log_output)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


# Lines TensorFlow's C++ side prints on import whatever TF_CPP_MIN_LOG_LEVEL says; anything else is passed through.
IMPORT_NOISE = (
    re.compile(r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$"),
    re.compile(r"^[IW]\d{4} [\d:.]+\s+\d+ (port|cpu_feature_guard)\.cc:\d+\] "),
    re.compile(r"^To enable the following instructions: .* in other operations, rebuild TensorFlow"),
)


@contextlib.contextmanager
def _native_stderr_filtered() -> Iterator[None]:
    """Capture what native code writes to file descriptor 2 meanwhile; give back all of it but the known noise."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines = capture.read().decode(errors="replace").splitlines()
            kept = [line for line in lines if not any(pattern.search(line) for pattern in IMPORT_NOISE)]
            if kept:
                print("\n".join(kept), file=sys.stderr)


def _terminated(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def prepare_run(args: argparse.Namespace) -> dict[str, Any]:
    """Resolve params, find the data and the notebooks; raise :class:`UserError` on any problem. Writes nothing."""
    from fer_lib.data import FerDataError, detect_layout, source_fingerprint
    from fer_lib.study import ParamsError, data_source, resolve_params_files

    extra: dict[str, Any] = {}
    if args.data is not None:
        extra["data"] = str(args.data)
    if args.name is not None:
        extra["name"] = args.name
    try:
        params = resolve_params_files(args.params, args.overrides, extra or None)
    except ParamsError as error:
        raise UserError(str(error)) from None

    project = runs.project_root(DEFAULT_NOTEBOOKS_DIR.parent)
    try:
        path, how = data_source(params, project_root=project)
        data: dict[str, Any]
        if path is None:
            params["synthetic"] = True  # the notebooks must use exactly what the runner checked
            data = {"synthetic": True, "how": how, "layout": "synthetic"}
        else:
            layout, root = detect_layout(path.resolve())
            params["data"] = str(root)  # absolute, so the notebooks (run in notebooks/) load the same files
            data = {"synthetic": False, "how": how, "source": str(root), "layout": layout,
                    "fingerprint": source_fingerprint(layout, root, resize=params["resize"])}
    except FerDataError as error:
        raise UserError(str(error)) from None

    notebooks_dir = (args.notebooks_dir or DEFAULT_NOTEBOOKS_DIR).resolve()
    missing = [f"{name}.ipynb" for name in NOTEBOOKS if not (notebooks_dir / f"{name}.ipynb").is_file()]
    if missing:
        raise UserError(f"notebook(s) {', '.join(missing)} not found in '{notebooks_dir}'; is the project checkout "
                        f"complete?")
    if args.out is not None and Path(args.out).exists() and not Path(args.out).is_dir():
        raise UserError(f"--out '{args.out}' exists and is not a folder")
    return {"params": params, "data": data, "notebooks_dir": notebooks_dir, "params_files": list(args.params),
            "overrides": list(args.overrides), "project_root": project}


def notebook_jobs(plan: Mapping[str, Any], run_dir: Path) -> list[dict[str, Any]]:
    """The notebooks to execute, in order, each with its output path and papermill parameters."""
    params, notebooks_dir = plan["params"], plan["notebooks_dir"]
    run_dir_text = str(run_dir.resolve())
    out = runs.notebooks_dir(run_dir)

    def declared(name: str) -> set[str]:
        try:
            import papermill

            return set(papermill.inspect_notebook(str(notebooks_dir / f"{name}.ipynb")))
        except Exception:  # noqa: BLE001 - an uninspectable notebook just gets the documented parameters
            return set()

    from fer_lib.study import DATA_DEFAULTS

    explore_keys = declared("01_explore_data") or {*DATA_DEFAULTS, *EXPLORE_FALLBACK_KEYS}
    compare_keys = declared("03_compare")
    jobs = [{"name": "01_explore_data", "model": None, "output": out / "01_explore_data.ipynb",
             "parameters": {**{k: v for k, v in params.items() if k in explore_keys}, "run_dir": run_dir_text}}]
    for model in params["models"]:
        jobs.append({"name": "02_train", "model": model, "output": out / f"02_train-{model}.ipynb",
                     "parameters": {**params, "model": model, "run_dir": run_dir_text}})
    jobs.append({"name": "03_compare", "model": None, "output": out / "03_compare.ipynb",
                 "parameters": {**{k: v for k, v in params.items() if k in compare_keys}, "run_dir": run_dir_text}})
    for job in jobs:
        job["input"] = notebooks_dir / f"{job['name']}.ipynb"
    return jobs


def run_context(plan: Mapping[str, Any]) -> dict[str, Any]:
    """What the manifest records about the data and the machine (gathered before the run folder exists)."""
    params, data = plan["params"], dict(plan["data"])
    if data["synthetic"]:
        from fer_lib.data import SYNTHETIC_NOTICE, load_synthetic

        data["notice"] = SYNTHETIC_NOTICE
        data["fingerprint"] = load_synthetic(params["synthetic_train"], params["synthetic_val"],
                                             params["synthetic_test"], seed=params["seed"],
                                             class_balance=params["synthetic_balance"]).fingerprint
    return {
        "data": data,
        "backend": keras_backend(),
        "device": device_info(),
        "versions": package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "git": git_info(plan["project_root"]),
        "environment": {key: os.environ[key] for key in ("KERAS_BACKEND", "CUDA_VISIBLE_DEVICES", "JAX_PLATFORMS",
                                                         "XLA_FLAGS", "FER2013_DIR") if key in os.environ},
    }


def execute_run(plan: Mapping[str, Any], run_dir: Path, *, argv: list[str], log_output: bool = False) -> int:
    """Execute the notebooks into ``run_dir``, keeping manifest.json up to date; returns the exit code."""
    from tqdm.auto import tqdm

    context = plan.get("context") or run_context(plan)
    data = context["data"]
    if data["synthetic"]:
        _shout(data["notice"])
    started = time.time()
    jobs = notebook_jobs(plan, run_dir)
    manifest: dict[str, Any] = {
        "fer_study_version": __version__,
        "status": "running",
        "started": _now(),
        "finished": None,
        "seconds": None,
        "run_dir": str(run_dir.resolve()),
        "command": [PROG, *argv],
        "host": platform.node(),
        "pid": os.getpid(),
        "params_files": plan["params_files"],
        "overrides": plan["overrides"],
        **context,
        "notebooks": [{"notebook": job["name"], "model": job["model"],
                       "output": str(job["output"].relative_to(run_dir)), "status": "pending", "started": None,
                       "seconds": None} for job in jobs],
        "results": {},
        "error": None,
    }
    runs.write_manifest(run_dir, manifest)
    runs.notebooks_dir(run_dir).mkdir(exist_ok=True)
    runs.figures_dir(run_dir).mkdir(exist_ok=True)
    print(f"{PROG}: run folder {run_dir}", flush=True)
    print(f"{PROG}: data: {data['how']}; backend: {manifest['backend']}; device: {manifest['device']['summary']}",
          flush=True)

    interactive = _is_terminal(sys.stderr)  # progress bars on a terminal; one line per notebook in logs
    bar = tqdm(total=len(jobs), desc="fer-study", unit="notebook", position=0, disable=not interactive,
               file=sys.stderr)
    index, current = 0, None
    try:
        for index, job in enumerate(jobs):
            current = job
            entry = manifest["notebooks"][index]
            label = job["name"] + (f" ({job['model']})" if job["model"] else "")
            bar.set_description(label)
            entry.update(status="running", started=_now())
            runs.write_manifest(run_dir, manifest)
            began = time.perf_counter()
            show = bar.set_postfix_str if interactive else (lambda text: print(f"{PROG}: {text}", file=sys.stderr,
                                                                                  flush=True))
            watcher = None if job["model"] is None or log_output else EpochProgress(
                runs.model_dir(run_dir, job["model"]) / runs.PROGRESS_FILE, show)
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
            tqdm.write(f"{PROG}: [{index + 1}/{len(jobs)}] {label} done in {entry['seconds']:.1f} s", file=sys.stderr)
        bar.close()
        report = render_report(run_dir / runs.NOTEBOOKS_DIR / "03_compare.ipynb", run_dir / runs.REPORT_FILE)
        manifest["report"] = str(report.relative_to(run_dir))
    except KeyboardInterrupt:
        bar.close()
        if current is not None:
            manifest["notebooks"][index]["status"] = "interrupted"
        _finish(manifest, run_dir, started, "interrupted", "interrupted by the user (Ctrl-C)")
        print(f"{PROG}: interrupted; the run folder {run_dir} is marked interrupted (the partial notebook is kept)",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:  # noqa: BLE001 - every failure is reported, recorded and turned into exit code 1
        bar.close()
        if current is not None:
            manifest["notebooks"][index]["status"] = "failed"
        message = failure_message(error, current, run_dir)
        _finish(manifest, run_dir, started, "failed", message)
        print("\n" + _wrap(message, 110), file=sys.stderr)
        return EXIT_FAILED

    manifest["results"] = {m["model"]: m for m in runs.run_summary(run_dir)["models"]}
    _check_fingerprints(manifest, run_dir)
    _finish(manifest, run_dir, started, "complete", None)
    print_run_summary(run_dir)
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


class _DropUnknownParameterWarnings(logging.Filter):
    """papermill warns once per parameter a notebook does not declare; the runner warns once per notebook."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Passed unknown parameter")


def _undeclared(job: Mapping[str, Any]) -> list[str]:
    try:
        import papermill

        declared = set(papermill.inspect_notebook(str(job["input"])))
    except Exception:  # noqa: BLE001 - nothing to compare with
        return []
    return sorted(set(job["parameters"]) - declared) if declared else []


def _execute_notebook(job: Mapping[str, Any], notebooks_dir: Path, *, log_output: bool,
                      progress: bool | dict[str, Any]) -> None:
    import papermill

    logger = logging.getLogger("papermill")
    if not any(isinstance(f, _DropUnknownParameterWarnings) for f in logger.filters):
        logger.addFilter(_DropUnknownParameterWarnings())
    undeclared = _undeclared(job)
    if undeclared:
        print(f"{PROG}: note: {job['input'].name} does not declare parameter(s) {', '.join(undeclared)} in its "
              f"parameters cell; they are injected anyway", file=sys.stderr)

    job["output"].parent.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(
        str(job["input"]), str(job["output"]), parameters=dict(job["parameters"]), kernel_name=KERNEL_NAME,
        cwd=str(notebooks_dir), progress_bar=progress, log_output=log_output,
        stdout_file=sys.stdout if log_output else None, stderr_file=sys.stderr if log_output else None)


def render_report(executed: Path, report: Path) -> Path:
    """The executed compare notebook as a standalone HTML page (figures embedded), titled after the run."""
    import nbconvert
    import nbformat

    notebook = nbformat.read(executed, as_version=4)
    title = f"fer-study report {report.parent.name}"
    body, _ = nbconvert.HTMLExporter().from_notebook_node(notebook, resources={"metadata": {"name": title}})
    report.write_text(body, encoding="utf-8")
    return report


def failure_message(error: BaseException, job: Mapping[str, Any] | None, run_dir: Path) -> str:
    """One paragraph: which notebook and cell failed, the error, and where the partial notebook is."""
    from papermill.exceptions import PapermillExecutionError

    where = "after the notebooks, while writing report.html"
    if job is not None:
        where = f"notebook {job['name']}.ipynb" + (f" (model {job['model']})" if job["model"] else "")
    if isinstance(error, PapermillExecutionError):
        first_line = next((line.strip() for line in str(error.source or "").splitlines() if line.strip()), "")
        cell = f"cell [{error.exec_count}]" if error.exec_count is not None else "a cell"
        snippet = f" (starting `{first_line[:80]}`)" if first_line else ""
        text = f"{PROG}: {where} failed at {cell}{snippet}: {error.ename}: {_one_line(str(error.evalue))[:500]}."
    else:
        text = f"{PROG}: {where} failed: {type(error).__name__}: {_one_line(str(error))[:500]}."
    if job is not None and Path(job["output"]).exists():
        text += f" The partially executed notebook, with the full traceback, is kept at {job['output']}."
    text += f" The run folder {run_dir} is marked failed in {runs.MANIFEST_FILE}."
    return text


def _finish(manifest: dict[str, Any], run_dir: Path, started: float, status: str, error: str | None) -> None:
    manifest.update(status=status, finished=_now(), seconds=round(time.time() - started, 2), error=error)
    runs.write_manifest(run_dir, manifest)


def _check_fingerprints(manifest: dict[str, Any], run_dir: Path) -> None:
    """Record the data fingerprint each model was trained on; warn if it is not the one the runner checked."""
    used = {}
    for model in runs.run_models(run_dir):
        config = runs.model_dir(run_dir, model) / "train_config.json"
        try:
            used[model] = json.loads(config.read_text())["data"]["fingerprint"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
    manifest["data"]["fingerprints_used"] = used
    expected = manifest["data"].get("fingerprint")
    if expected and any(value != expected for value in used.values()):
        print(f"{PROG}: warning: the models were trained on data with fingerprint(s) {sorted(set(used.values()))}, "
              f"not {expected} as checked before the run", file=sys.stderr)


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


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


# --------------------------------------------------------------------------------------------------------------------
# fer-study list
# --------------------------------------------------------------------------------------------------------------------

LIST_COLUMNS = ("run", "status", "data", "model", "test_acc", "macro_f1", "collapsed")


def list_rows(outputs_dir: str | Path | None) -> list[dict[str, str]]:
    """One row per model of each run (one row for a run without a finished model), as display strings."""
    rows = []
    for run_dir in runs.list_runs(outputs_dir):
        summary = runs.run_summary(run_dir)
        data = {True: "SYNTHETIC", False: "real"}.get(summary["synthetic"], "?")
        base = {"run": summary["id"], "status": summary["status"], "data": data}
        if not summary["models"]:
            rows.append({**base, "model": "-", "test_acc": "-", "macro_f1": "-", "collapsed": "-"})
        for model in summary["models"]:
            collapsed = model.get("collapsed")
            rows.append({**base, "model": str(model["model"]), "test_acc": _fmt(model.get("test_accuracy")),
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


def command_list(args: argparse.Namespace) -> int:
    outputs = Path(args.out) if args.out is not None else runs.default_outputs_dir()
    if args.out is not None and not outputs.is_dir():
        raise UserError(f"--out '{outputs}' is not a folder")
    rows = list_rows(outputs)
    if not rows:
        print(f"no runs under '{outputs}' (start one with `{PROG} run --params params/smoke.yaml`)")
        return EXIT_OK
    print(format_table(rows))
    if any(row["data"] == "SYNTHETIC" for row in rows):
        print("\nSYNTHETIC runs used generated cartoon faces, not FER2013: their numbers say nothing about real "
              "facial expression recognition.")
    return EXIT_OK


def command_results(args: argparse.Namespace) -> int:
    from fer_lib import report

    rows = []
    for run_dir in args.run_dirs:
        if not runs.is_run_dir(run_dir):
            raise UserError(f"'{run_dir}' is not a run folder (no {runs.PARAMS_FILE})")
        try:
            rows.extend(report.results_rows(run_dir))
        except FileNotFoundError as error:
            raise UserError(str(error)) from None
    table = report.results_markdown(rows)
    if args.update_readme is None:
        print(table)
        return EXIT_OK
    try:
        text = args.update_readme.read_text()
        args.update_readme.write_text(report.replace_results_block(text, table))
    except (OSError, ValueError) as error:
        raise UserError(f"cannot update '{args.update_readme}': {error}") from None
    print(f"updated the results table of {args.update_readme} ({len(rows)} rows)")
    return EXIT_OK


def print_run_summary(run_dir: Path) -> None:
    rows = [row for row in list_rows(run_dir.parent) if row["run"] == run_dir.name]
    print(f"\n{PROG}: run complete: {run_dir}")
    if rows:
        print(format_table(rows))
    report = run_dir / runs.REPORT_FILE
    if report.is_file():
        print(f"report: {report}")


if __name__ == "__main__":  # pragma: no cover - `python -m fer_lib.cli`
    sys.exit(main())
