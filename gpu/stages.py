"""The stages of an offline GPU run (called by gpu/run.sh, which has set up the environment): bench, paper, strong,
tune.

Each stage runs in its own process under one wall-clock deadline. The bench stage times the study's own training
step for both protocols (benchmarks/bench.py); each study stage (`fer-study run` of params/paper.yaml or
params/strong.yaml) is first estimated from those timings and skipped, with a note, when it would not end before
the deadline; a stage still running at the deadline is stopped (its run folder is marked interrupted) and packed
as it is. The tune stage (`fer-study tune` of params/strong.yaml over params/space-strong.yaml, several workers
side by side on the one GPU) runs alone, after the study stages before it; it gets ``--timeout`` so that no trial
starts later than one round of trials before the deadline, and is skipped when not even one round fits. As soon
as a stage ends, its results are packed into ``<out>/<n>-<stage>.tar.gz`` (run folders without model weights; the
tune folder's trials.csv, two plots and best.yaml) and ``<out>/summary.json`` is rewritten, so a run killed later
still returns every finished stage.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

STUDY_STAGES = {"paper": "params/paper.yaml", "strong": "params/strong.yaml"}
BENCH_PROTOCOLS = {"strong": "", "paper": "paper-protocol"}  # protocol -> tag in the benchmark file's name
TUNE_STAGE, TUNE_PROTOCOL = "tune", "strong"  # the search's trials follow the strong protocol's params file ...
TUNE_DEFAULTS = ["epochs=20"]  # ... with short trials: -p and --stage-param tune:epochs=N come after these
# The search's options (--stage-param tune:KEY=VALUE with one of these keys; any other key is a study parameter).
TUNE_OPTIONS = {"space": "params/space-strong.yaml", "trials": 12, "workers": 3, "model": "basic_cnn",
                "pruner": "successive_halving"}
STAGES = ("bench", *STUDY_STAGES, TUNE_STAGE)
DEFAULT_STAGES = ("bench", *STUDY_STAGES)  # the tune stage only when asked for (a search needs its own deadline)
NOTEBOOK_SECONDS = 20.0  # a notebook kernel's start, imports and data load (measured: ~10 s on the H200 machine)
SAFETY = 1.15  # estimates are stretched by this much before comparing them with the time left
PACK_SECONDS = 15.0  # kept free at the deadline to pack the last stage
PARALLEL_SLOWDOWN = 1.5  # a study stage sharing the GPU with another is assumed this much slower
TUNE_START_SECONDS = NOTEBOOK_SECONDS  # the search's workers start, import and load the data, as a notebook kernel
TUNE_OUTPUT_SECONDS = 10.0  # trials.csv, Optuna's two plots and best.yaml, once the workers end
MAX_ARCHIVE_BYTES = 16 * 1024 * 1024
WEIGHT_SUFFIXES = (".keras", ".h5", ".weights.h5")
# Dropped in this order while an archive is over MAX_ARCHIVE_BYTES (each still holds the numbers and figures).
OPTIONAL_IN_ARCHIVE = ("notebooks/01_explore_data.ipynb", "notebooks/02_train-", "report.html", "notebooks/")


def log(message: str) -> None:
    print(f"stages: {message}", flush=True)


def params_file(stage: str) -> str:
    return STUDY_STAGES[TUNE_PROTOCOL if stage == TUNE_STAGE else stage]


def project_module(project: Path, name: str) -> Any:
    """A module of the unpacked project (``fer_lib.app.params``, ...): this script runs before it is on sys.path."""
    if str(project) not in sys.path:
        sys.path.insert(0, str(project))
    return importlib.import_module(name)


def params_of(project: Path, stage: str, overrides: list[str], data: str | None) -> dict[str, Any]:
    resolve_params_files = project_module(project, "fer_lib.app.params").resolve_params_files

    return resolve_params_files([project / params_file(stage)], overrides, {"data": data} if data else None)


def estimate_seconds(params: dict[str, Any], bench: dict[str, Any] | None) -> float | None:
    """Seconds a study stage should take: `fer-study estimate` of its params on the bench stage's timing of the same
    protocol (whose compiles are in the persistent cache by then), and each notebook's start (None: no timing)."""
    if not bench or any(model not in bench["models"] for model in params["models"]):
        return None
    from fer_lib.app.estimate import CACHED_COMPILE_SHARE, estimate  # the project is on sys.path: params_of put it

    result = estimate(params, bench, compile_share=CACHED_COMPILE_SHARE)
    notebooks = sum(model["seeds"] for model in result["models"]) + 2  # 02_train per model and seed, 01 and 03
    return SAFETY * (result["total_seconds"] + NOTEBOOK_SECONDS * notebooks)


def estimate_tune(params: dict[str, Any], bench: dict[str, Any] | None,
                  options: dict[str, Any]) -> dict[str, float] | None:
    """Seconds the tune stage should take, from the bench stage's timing of its protocol (None: no timing):
    ``round``, ``workers`` trials side by side (they share the GPU and its host, so a round is ``workers`` times one
    trial alone: `fer-study estimate`'s training, validation and whole compile of one seed, since the searched
    values are constants of the compiled step); ``least``, the workers' start, one round and the outputs (less time
    left than that: the stage is skipped); ``search``, every trial in rounds. All three stretched by SAFETY."""
    model = options["model"]
    if not bench or model not in bench["models"]:
        return None
    from fer_lib.app.estimate import model_estimate

    one = model_estimate({**params, "seeds": None}, model, bench)  # a trial trains one seed, tests nothing
    trial = one["train_seconds"] + one["validation_seconds"] + one["compile_seconds"]
    workers = min(options["workers"], options["trials"])
    one_round = workers * trial
    rounds = math.ceil(options["trials"] / workers)
    return {"round": SAFETY * one_round, "least": SAFETY * (TUNE_START_SECONDS + one_round + TUNE_OUTPUT_SECONDS),
            "search": SAFETY * (TUNE_START_SECONDS + rounds * one_round + TUNE_OUTPUT_SECONDS)}


def tune_timeout(left: float, timing: dict[str, float] | None) -> float:
    """``fer-study tune --timeout``: no trial starts later than one round before the deadline (a trial started then
    ends within a round, then the outputs are written); without a timing, half the time left."""
    if timing is None:
        return left / 2
    return left - timing["round"] - SAFETY * TUNE_OUTPUT_SECONDS


def tune_options(overrides: list[str]) -> tuple[dict[str, Any], list[str]]:
    """The tune stage's --stage-param overrides split into the search's options (TUNE_OPTIONS, checked) and study
    parameters of its trials."""
    options, parameters = dict(TUNE_OPTIONS), []
    for override in overrides:
        key, _, value = override.partition("=")
        if key.strip() not in TUNE_OPTIONS:
            parameters.append(override)
            continue
        key, value = key.strip(), value.strip()
        if isinstance(TUNE_OPTIONS[key], int):
            if not value.isdigit() or int(value) < 1:
                raise ValueError(f"--stage-param tune:{key}= must be a number >= 1, got '{value}'")
            options[key] = int(value)
        elif not value:
            raise ValueError(f"--stage-param tune:{key}= needs a value")
        else:
            options[key] = value
    return options, parameters


def write_tune_outputs(python: str, folder: Path, project: Path, timeout: float) -> bool:
    """The outputs of a search stopped at the deadline (its command ends only after its workers, so it never wrote
    them), from its journal file: `fer-study tune`'s own writer, in a process of its own (``timeout`` seconds)."""
    code = ("import pathlib, sys; from fer_lib.app import trials, tune; "
            "study, job = trials.load_study(sys.argv[1], sys.argv[2]); "
            "sys.exit(tune.write_outputs(study, job, pathlib.Path(sys.argv[3])))")
    journal = folder / project_module(project, "fer_lib.app.trials").JOURNAL_FILE  # the search's default storage
    try:
        done = subprocess.run([python, "-c", code, str(journal), folder.name, str(folder)],
                              cwd=project, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        log(f"tune: writing the outputs of the stopped search took over {timeout:.0f} s; packed without them")
        return False
    for line in (done.stdout + done.stderr).splitlines():
        print(f"[tune] {line}", flush=True)
    return done.returncode == 0


_ENDED: set[str] = set()  # processes already reported by supervise()
_STOPPING: dict[str, float] = {}  # processes supervise() sent SIGTERM at the deadline, and when


def launch(name: str, command: list[str], cwd: Path, *, group: bool = False) -> subprocess.Popen:
    """Start ``command`` with its output (stdout and stderr) printed line by line behind ``[name]``; ``group``: in a
    process group of its own, which the deadline's SIGTERM stops whole (a search's worker processes with it)."""
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               errors="replace", bufsize=1, start_new_session=group)
    process.group = group  # type: ignore[attr-defined]

    def relay() -> None:
        for line in process.stdout:
            print(f"[{name}] {line}", end="", flush=True)

    process.relay = threading.Thread(target=relay, daemon=True)  # type: ignore[attr-defined]
    process.relay.start()  # type: ignore[attr-defined]
    return process


def supervise(processes: dict[str, subprocess.Popen], deadline_at: float,
              on_end: Callable[[str, int | None, bool], None], *, until_first: bool = False) -> None:
    """Wait for ``processes`` (name -> process; all, or ``until_first`` ends); at the deadline, SIGTERM (as Ctrl-C)
    those still running.

    ``on_end(name, exit code, stopped at the deadline)`` is called as each one ends, so its results are packed at
    once, not when the slowest ends.
    """
    running = {name: process for name, process in processes.items() if name not in _ENDED}
    while running:
        for name, process in list(running.items()):
            code = process.poll()
            if code is not None:
                relay = getattr(process, "relay", None)
                if relay is not None:
                    relay.join(timeout=5)  # its last lines first
                del running[name]
                _ENDED.add(name)
                on_end(name, code, name in _STOPPING)
                if until_first:
                    return
        now = time.time()
        for name, process in running.items():
            group = getattr(process, "group", False)
            if name not in _STOPPING and now >= deadline_at - PACK_SECONDS:
                log(f"deadline reached: stopping {name} (pid {process.pid}{' and its group' if group else ''})")
                signal_process(process, signal.SIGTERM, group)
                _STOPPING[name] = now
            elif name in _STOPPING and now - _STOPPING[name] > 20:
                signal_process(process, signal.SIGKILL, group)
        time.sleep(0.5)


def signal_process(process: subprocess.Popen, signum: int, group: bool) -> None:
    try:
        os.killpg(process.pid, signum) if group else process.send_signal(signum)
    except ProcessLookupError:
        pass  # ended meanwhile


def pack(sources: list[Path], archive: Path, root: Path) -> dict[str, Any]:
    """tar.gz of ``sources`` (paths under ``root``) without model weights or backups; trimmed to fit 16 MiB."""
    files = sorted(f for source in sources for f in ([source] if source.is_file() else source.rglob("*"))
                   if f.is_file() and not f.name.endswith(WEIGHT_SUFFIXES) and "backup" not in f.parts)
    dropped: list[str] = []
    for tier in (None, *OPTIONAL_IN_ARCHIVE):
        if tier is not None:
            keep = [f for f in files if tier not in str(f.relative_to(root))]
            dropped += [str(f.relative_to(root)) for f in files if f not in keep]
            files = keep
        with tarfile.open(archive, "w:gz") as tar:
            for file in files:
                tar.add(file, arcname=str(file.relative_to(root)))
        if archive.stat().st_size <= MAX_ARCHIVE_BYTES:
            break
    return {"archive": archive.name, "bytes": archive.stat().st_size, "files": len(files), "dropped": dropped}


def bench_records(folder: Path) -> dict[str, dict[str, Any]]:
    """protocol -> its benchmark record as `fer-study estimate` reads it, from the bench stage's JSON files."""
    from fer_lib.app.estimate import read_bench  # the project is on sys.path: params_of put it there

    return {bench["settings"]["params"]: bench for bench in map(read_bench, sorted(folder.glob("*.json")))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--project", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--deadline-at", type=float, required=True, help="Unix time by which everything must end")
    parser.add_argument("--stages", default=",".join(DEFAULT_STAGES), help=f"of {', '.join(STAGES)}")
    parser.add_argument("--parallel", action="store_true",
                        help="run the study stages side by side on the one GPU (after the bench stage; the tune "
                             "stage still alone)")
    parser.add_argument("--bench-protocols", help="protocols the bench stage times (default: the study stages run; "
                                                   "their estimates need it)")
    parser.add_argument("--data")
    parser.add_argument("--bench-min-steps", type=int, default=200)
    parser.add_argument("-p", dest="overrides", action="append", default=[])
    parser.add_argument("--bench-scaling", default="", help="distribution settings the bench stage also times, "
                                                            "e.g. none (1 device beside auto's N GPUs)")
    parser.add_argument("--stage-param", action="append", default=[], metavar="STAGE:KEY=VALUE",
                        help="an override for one study stage only, e.g. paper:distribution=data_parallel; "
                             f"tune:KEY=VALUE with KEY one of {', '.join(TUNE_OPTIONS)}: the search's options")
    args = parser.parse_args(argv)
    stage_overrides: dict[str, list[str]] = {}
    for text in args.stage_param:
        stage, _, override = text.partition(":")
        stage_overrides.setdefault(stage, []).append(override)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        print(f"stages: error: unknown stage(s) {', '.join(unknown)}; stages are {', '.join(STAGES)}", file=sys.stderr)
        return 2
    try:
        search, trial_overrides = tune_options(stage_overrides.get(TUNE_STAGE, []))
    except ValueError as error:
        print(f"stages: error: {error}", file=sys.stderr)
        return 2
    # the search's trials: its defaults, then -p (as every stage), then its own --stage-param study parameters
    stage_overrides[TUNE_STAGE] = [*TUNE_DEFAULTS, *args.overrides, *trial_overrides]

    python, bench_dir = sys.executable, args.work / "bench"
    summary: dict[str, Any] = {"deadline_at": args.deadline_at, "overrides": args.overrides, "data": args.data,
                               "parallel": args.parallel, "stages": []}
    entries = {stage: {"stage": stage, "number": number, "status": "pending", "seconds": None,
                       "estimate_seconds": None} for number, stage in enumerate(stages, start=1)}
    summary["stages"] = list(entries.values())

    def write_summary() -> None:
        (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")

    def finish(stage: str, status: str, sources: list[Path], root: Path) -> None:
        entry = entries[stage]
        entry.update(status=status, seconds=round(time.time() - entry.pop("began"), 1))
        if sources:
            entry.update(pack(sources, args.out / f"{entry['number']}-{stage}.tar.gz", root))
        log(f"[{entry['number']}/{len(stages)}] {stage}: {status} in {entry['seconds']:.0f} s"
            + (f" -> {entry['archive']} ({entry['bytes'] / 1e6:.1f} MB)" if "archive" in entry else ""))
        write_summary()

    extra = (["--data", args.data] if args.data else []) + [x for v in args.overrides for x in ("-p", v)]
    if "bench" in stages:
        entry = entries["bench"]
        entry["began"] = time.time()
        log(f"[{entry['number']}/{len(stages)}] bench: both models in the study's own training step "
            f"({args.deadline_at - time.time():.0f} s left)")
        codes: list[int | None] = []
        wanted = (args.bench_protocols.split(",") if args.bench_protocols  # the tune stage's: strong
                  else [TUNE_PROTOCOL if stage == TUNE_STAGE else stage for stage in stages if stage != "bench"]
                  or ["strong"])
        for protocol, tag in BENCH_PROTOCOLS.items():
            if protocol not in wanted:
                continue
            command = [python, str(args.project / "benchmarks" / "bench.py"), "--params",
                       str(args.project / STUDY_STAGES[protocol]), "--out", str(bench_dir), "--min-timed-steps",
                       str(args.bench_min_steps), "--tag", tag, "--scaling", args.bench_scaling,
                       "--note", f"gpu/run.sh bench stage: the {protocol} protocol's own training step", *extra]
            stopped: list[bool] = []
            supervise({f"bench-{protocol}": launch(f"bench {protocol}", command, args.project)}, args.deadline_at,
                      lambda name, code, was_stopped: (codes.append(code), stopped.append(was_stopped)))
            if stopped[0]:
                break
        status = "complete" if codes and all(code == 0 for code in codes) else "failed"
        finish("bench", status, sorted(bench_dir.glob("*.json")) if bench_dir.exists() else [], bench_dir)

    def stage_params(stage: str) -> list[str]:
        if stage == TUNE_STAGE:
            return stage_overrides[TUNE_STAGE]  # -p is among them already
        return args.overrides + stage_overrides.get(stage, [])

    def bench_of(params: dict[str, Any]) -> dict[str, Any] | None:
        return bench_records(bench_dir).get(params["name"]) if bench_dir.exists() else None

    def estimate(stage: str) -> float | None:
        params = params_of(args.project, stage, stage_params(stage), args.data)
        value = estimate_seconds(params, bench_of(params))
        entries[stage]["estimate_seconds"] = None if value is None else round(value, 1)
        return value

    def estimate_search() -> dict[str, float] | None:
        params = params_of(args.project, TUNE_STAGE, stage_params(TUNE_STAGE), args.data)
        timing = estimate_tune(params, bench_of(params), search)
        entries[TUNE_STAGE]["estimate_seconds"] = None if timing is None else round(timing["search"], 1)
        return timing

    def start(stage: str, left: float, shared: bool) -> subprocess.Popen:
        entry = entries[stage]
        guess = "unknown" if entry["estimate_seconds"] is None else f"{entry['estimate_seconds']:.0f} s"
        log(f"[{entry['number']}/{len(stages)}] {stage}: fer-study run --params {STUDY_STAGES[stage]} (estimate "
            f"{guess}{', sharing the GPU' if shared else ''}; {left:.0f} s left)")
        entry.update(status="running", began=time.time(), shared_gpu=shared)
        command = [python, "-m", "fer_lib.app.cli", "run", "--params", str(args.project / STUDY_STAGES[stage]),
                   "--out", str(args.work / "runs" / stage), *extra,
                   *[x for override in stage_overrides.get(stage, []) for x in ("-p", override)]]
        return launch(stage, command, args.project)

    def start_search(left: float, timing: dict[str, float] | None) -> subprocess.Popen:
        entry, timeout = entries[TUNE_STAGE], max(1.0, tune_timeout(left, timing))
        guess = "unknown" if entry["estimate_seconds"] is None else f"{entry['estimate_seconds']:.0f} s"
        log(f"[{entry['number']}/{len(stages)}] tune: fer-study tune --params {params_file(TUNE_STAGE)} --space "
            f"{search['space']} ({search['trials']} trials of {search['model']} by {search['workers']} workers side "
            f"by side; estimate {guess}, no trial starts after {timeout:.0f} s; {left:.0f} s left)")
        entry.update(status="running", began=time.time(), timeout_seconds=round(timeout), search=search)
        space = Path(search["space"]) if Path(search["space"]).is_absolute() else args.project / search["space"]
        command = [python, "-m", "fer_lib.app.cli", "tune", "--params", str(args.project / params_file(TUNE_STAGE)),
                   "--space", str(space), "--trials", str(search["trials"]), "--workers", str(search["workers"]),
                   "--model", search["model"], "--pruner", search["pruner"], "--timeout", f"{timeout:.0f}",
                   "--out", str(args.work / "runs" / TUNE_STAGE), *(["--data", args.data] if args.data else []),
                   *[x for override in stage_params(TUNE_STAGE) for x in ("-p", override)]]
        return launch(TUNE_STAGE, command, args.project, group=True)  # the deadline stops its workers too

    def skip(stage: str, value: float, left: float, what: str = "") -> None:
        entry = entries[stage]
        entry.update(status="skipped", note=f"estimated {value:.0f} s{what} from the bench stage, but only "
                                            f"{left:.0f} s were left before the deadline")
        log(f"[{entry['number']}/{len(stages)}] {stage}: skipped ({entry['note']})")
        write_summary()

    def ended(stage: str, code: int | None, stopped: bool) -> None:
        runs_dir = args.work / "runs" / stage
        status = "stopped at the deadline" if stopped else ("complete" if code == 0 else "failed")
        if stage != TUNE_STAGE:
            finish(stage, status, sorted(p for p in runs_dir.iterdir() if p.is_dir()) if runs_dir.exists() else [],
                   runs_dir)
            return
        folders = sorted(runs_dir.glob("tune-*")) if runs_dir.exists() else []
        if stopped and folders:  # its command ends after its workers, so a stopped search wrote no outputs
            write_tune_outputs(python, folders[-1], args.project, PACK_SECONDS - 5)
        # the table, the plots and best.yaml; not the trials' own training records (weights among them)
        outputs = project_module(args.project, "fer_lib.app.tune").OUTPUTS
        finish(stage, status, [f / name for f in folders for name in outputs if (f / name).is_file()], runs_dir)

    # In priority order, each study stage starts when its estimate fits the time left: alone (sequentially), or
    # with --parallel beside the others, stretched by PARALLEL_SLOWDOWN for the shared GPU. One that fits only alone
    # runs alone (the next wait for it); one that does not fit beside running stages waits for them to end. The tune
    # stage always runs alone (its workers share the GPU among themselves), when one round of its trials fits.
    pending = [stage for stage in stages if stage in STUDY_STAGES or stage == TUNE_STAGE]
    running: dict[str, subprocess.Popen] = {}
    exclusive = False
    while pending or running:
        while pending and not exclusive and (args.parallel or not running):
            stage, left = pending[0], args.deadline_at - time.time() - PACK_SECONDS
            if stage == TUNE_STAGE:
                if running:
                    break  # wait for the running stages, then judge the search
                timing = estimate_search()
                if timing is not None and timing["least"] > left:
                    skip(stage, timing["least"], left, f" for its workers' start, one round of "
                                                       f"{min(search['workers'], search['trials'])} trials side by "
                                                       f"side and its outputs")
                else:
                    running[stage] = start_search(left, timing)
                    exclusive = True
                pending.pop(0)
                continue
            value = estimate(stage)
            shared = bool(running) or (args.parallel and len([s for s in pending if s in STUDY_STAGES]) > 1)
            if value is None or value * (PARALLEL_SLOWDOWN if shared else 1.0) <= left:
                running[stage] = start(stage, left, shared)
            elif not running and value <= left:
                running[stage] = start(stage, left, False)
                exclusive = True
            elif running:
                break  # wait for the running stages, then judge this one again
            else:
                skip(stage, value, left)
            pending.pop(0)
        if running:
            supervise(running, args.deadline_at, ended, until_first=True)
            running = {stage: process for stage, process in running.items() if stage not in _ENDED}
            exclusive = exclusive and bool(running)
    write_summary()
    return 0 if all(entry["status"] == "complete" for entry in entries.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
