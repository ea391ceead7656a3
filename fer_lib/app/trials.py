"""Trials on Optuna: the storage a sweep or a search keeps them in, the workers that pull them, and their launchers.

The study's ``job`` user attribute says what the job is, so a worker on another machine needs only the storage and the
study's name; the dead-worker and heartbeat rules are the README's "Beyond one machine".
"""

from __future__ import annotations

import os
import platform
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from fer_lib.app import runs
from fer_lib.app.errors import PROG, UserError, sigterm_as_interrupt
from fer_lib.core import records

JOURNAL_FILE = "trials.journal"
SLURM_FILE = "workers.sbatch"
HEARTBEAT_SECONDS = 60  # a database's workers record a heartbeat this often ...
GRACE_SECONDS = 180  # ... and a trial silent for this long is failed and retried
MAX_RETRIES = 3
FINISHED = ("COMPLETE", "PRUNED", "FAIL")  # trial states (TrialState names) of a trial that has ended
COUNTED = (*FINISHED, "RUNNING")  # the trials a search's --trials counts: every one started


def quiet_optuna() -> Any:
    """Optuna, with its per-trial lines and its 'experimental' warnings silenced (process-wide)."""
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # its per-trial lines are not fer-study's to print
    # the heartbeat and its retry callback are "experimental" since Optuna 2.8: a note per use, not fer-study's
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def trial_states(*names: str) -> tuple[Any, ...]:
    """Optuna's TrialState members of these names (``"RUNNING"``, ...), imported only when needed."""
    from optuna.trial import TrialState

    return tuple(TrialState[name] for name in names)


def trials_in(study: Any, *states: str) -> list[Any]:
    """The study's trials in these states (TrialState names)."""
    return study.get_trials(deepcopy=False, states=trial_states(*states))


def job_location(out: str | None, folder_name: str, storage: str | None) -> tuple[Path, str]:
    """A sweep's or a search's folder (under ``out``, default outputs/) and its storage (default: a journal file in
    that folder)."""
    folder = (Path(out) if out else records.default_outputs_dir()) / folder_name
    return folder, storage or str(folder / JOURNAL_FILE)


def retry_callback() -> Any:
    """Enqueue a copy of a killed worker's trial (user attributes kept) up to :data:`MAX_RETRIES` times."""
    return quiet_optuna().storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES)


def open_storage(url: str) -> Any:
    """The storage behind ``url``: a journal file (a path, or ``journal:PATH``) or a database URL (``scheme://``)."""
    optuna = quiet_optuna()
    if "://" not in url:
        from optuna.storages.journal import JournalFileBackend

        path = Path(url.removeprefix("journal:")).expanduser()
        if path.exists() and not path.is_file():
            raise UserError(f"--storage '{url}' is a folder; give a journal file or a database URL")
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    try:
        return optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=GRACE_SECONDS,
                                          heartbeat_stale_trial_callback=retry_callback())
    except Exception as error:  # noqa: BLE001 - a wrong URL, a missing driver, a server that does not answer
        raise UserError(f"--storage '{url}' cannot be opened: {type(error).__name__}: "
                        f"{' '.join(str(error).split())[:300]}") from None


def create_study(storage_url: str, name: str, job: Mapping[str, Any], *, direction: str = "maximize",
                 sampler: Any = None, pruner: Any = None) -> Any:
    """The job's study, made or (the same command run again) loaded; its settings recorded as ``job``."""
    optuna = quiet_optuna()
    study = optuna.create_study(storage=open_storage(storage_url), study_name=name, direction=direction,
                                sampler=sampler, pruner=pruner, load_if_exists=True)
    if "job" not in study.user_attrs:
        study.set_user_attr("job", dict(job))
    return study


def load_study(storage_url: str, name: str) -> tuple[Any, dict[str, Any]]:
    """A job's study and its settings, or a UserError naming the studies the storage has."""
    optuna = quiet_optuna()
    storage = open_storage(storage_url)
    names = [summary.study_name for summary in optuna.get_all_study_summaries(storage)]
    if name not in names:
        raise UserError(f"--study '{name}' is not in the storage '{storage_url}'; it holds: "
                        f"{', '.join(names) or 'no study'}")
    study = optuna.load_study(study_name=name, storage=storage)
    if "job" not in study.user_attrs:
        raise UserError(f"study '{name}' was not made by {PROG} sweep or tune (it has no job settings)")
    return study, dict(study.user_attrs["job"])


def mark_worker(trial: Any) -> None:
    """Record which process works on ``trial``: the journal file's rule for a killed worker needs it."""
    trial.set_user_attr("worker", {"host": platform.node(), "pid": os.getpid()})


def retry_dead_trials(study: Any) -> list[int]:
    """Fail and enqueue again the RUNNING trials whose worker was killed (returns their numbers): on this machine, a
    gone worker process (any storage); on a database also Optuna's heartbeat rule (``fail_stale_trials``)."""
    optuna = quiet_optuna()
    retried = []
    if isinstance(study._storage, optuna.storages.RDBStorage):
        before = {t.number for t in trials_in(study, "RUNNING")}
        optuna.storages.fail_stale_trials(study)
        retried += sorted(before - {t.number for t in trials_in(study, "RUNNING")})
    for trial in trials_in(study, "RUNNING"):
        worker = trial.user_attrs.get("worker") or {}
        pid = worker.get("pid")
        if worker.get("host") == platform.node() and not (isinstance(pid, int) and runs.process_alive(pid)):
            if study._storage.set_trial_state_values(trial._trial_id, state=optuna.trial.TrialState.FAIL):
                retry_callback()(study, study.trials[trial.number])
                retried.append(trial.number)
    return retried


def worker_devices(workers: str | int) -> list[str | None]:
    """``--workers``: ``auto`` is one worker per visible GPU (its CUDA_VISIBLE_DEVICES), one on a CPU-only machine;
    a number N is N workers sharing the visible devices (None: no device set)."""
    from fer_lib.app.provenance import visible_gpu_indices

    if str(workers) == "auto":
        return list(visible_gpu_indices()) or [None]
    try:
        count = int(workers)
    except ValueError:
        count = 0
    if count < 1:
        raise UserError(f"--workers must be 'auto' or a number of workers >= 1, got {workers!r}")
    return [None] * count


def worker_command(storage_url: str, study_name: str) -> list[str]:
    return [sys.executable, "-m", "fer_lib.app.cli", "worker", "--storage", storage_url, "--study", study_name]


@sigterm_as_interrupt()  # a scheduler's or a deadline's SIGTERM stops the workers as Ctrl-C does: none is orphaned
def run_local_workers(storage_url: str, study_name: str, devices: Sequence[str | None],
                      launch: Callable[..., subprocess.Popen] = subprocess.Popen) -> list[int]:
    """Worker processes on this machine, one per device (CUDA_VISIBLE_DEVICES); their exit codes once all have ended."""
    processes, sharing = [], sum(device is None for device in devices)
    for device in devices:
        env = dict(os.environ)
        if device is not None:
            env["CUDA_VISIBLE_DEVICES"] = device
        elif sharing > 1 and "XLA_PYTHON_CLIENT_MEM_FRACTION" not in env:  # JAX takes 75% of a GPU per process
            env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{0.9 / sharing:.3f}"  # by default: N share 90% of it
        processes.append(launch(worker_command(storage_url, study_name), env=env))
    try:
        return [process.wait() for process in processes]
    except KeyboardInterrupt:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait()
        raise


SLURM_TEMPLATE = """#!/bin/bash
# {PROG} workers of study {study} as a Slurm job array: each task joins the study and pulls trials until none is
# left. Written by `{command}`.
#SBATCH --job-name={job_name}
#SBATCH --array=0-{last}
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --output={log_dir}/worker-%a.log
set -euo pipefail
cd {project}
export KERAS_BACKEND=jax
exec {worker}
"""  # the worker: this environment's Python (on a file system the nodes share, as the project and the data)


def launch_slurm(storage_url: str, study_name: str, tasks: int, folder: Path, *, command: Sequence[str],
                 dry_run: bool) -> str:
    """``--launch slurm``: ``tasks`` array tasks, one GPU each, every one a ``fer-study worker`` of the study, written
    to ``folder``/workers.sbatch and submitted (``dry_run``: only written); the script or sbatch's answer."""
    if "://" not in storage_url:
        print(f"{PROG}: warning: the Slurm workers share the journal file {storage_url}: it must be on a file "
              f"system every node sees", file=sys.stderr)
    (folder / "logs").mkdir(parents=True, exist_ok=True)  # sbatch does not make the tasks' log folder
    script = SLURM_TEMPLATE.format(PROG=PROG, study=study_name, command=" ".join(command), job_name=study_name[:64],
                                   last=tasks - 1, log_dir=shlex.quote(str(folder / "logs")),
                                   project=shlex.quote(str(records.project_root())),
                                   worker=" ".join(map(shlex.quote, worker_command(storage_url, study_name))))
    path = folder / SLURM_FILE
    path.write_text(script)
    if dry_run:
        return script
    if shutil.which("sbatch") is None:
        raise UserError(f"--launch slurm needs sbatch on this machine's PATH; the script is written to {path} "
                        f"(submit it where Slurm is, or add --dry-run to only print it)")
    done = subprocess.run(["sbatch", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        raise UserError(f"sbatch refused {path}: {' '.join(done.stderr.split())}")
    return done.stdout.strip()
