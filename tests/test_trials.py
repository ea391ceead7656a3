"""Trials on Optuna (fer_lib.app.trials, sweep, tune): workers sharing a journal file or a PostgreSQL database, a
killed worker's trial run again, the Slurm script, the pruner on known curves, and a real `fer-study tune`.

The sweeps run the stand-in notebooks of test_cli (a run folder in a few seconds) in real worker processes.
"""

from __future__ import annotations

import getpass
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import nbformat
import numpy as np
import pandas as pd
import pytest
import yaml

from fer_lib.app import runner, sweep, trials, tune
from fer_lib.core import records
from test_cli import FAKE_TRAIN, RECORD, TINY, _notebook, project, run_cli  # noqa: F401 - project: a fixture

GOLDEN = Path(__file__).resolve().parent / "golden"
POINTS = ["--grid", "epochs=2,3", "--grid", "augmentation.rotation=0,10"]


def sweep_args(out: Path, project: Path, *extra: str, storage: str | None = None) -> list[str]:
    return ["sweep", "-p", "synthetic=true", *TINY, "-p", "models=[basic_cnn]", "--name", "grid", "--out", str(out),
            "--notebooks-dir", str(project / "notebooks"), *(["--storage", storage] if storage else []), *extra]


def the_study(out: Path, storage: str | None = None) -> Any:
    (folder,) = [p for p in out.iterdir() if sweep.is_sweep_dir(p)]
    study, job = trials.load_study(storage or str(folder / trials.JOURNAL_FILE), folder.name)
    return folder, study


# --------------------------------------------------------------------------------------------------------------------
# Storages: the journal file in the sweep folder, or a PostgreSQL server started for the test
# --------------------------------------------------------------------------------------------------------------------


def postgres_binaries() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent  # Debian's: /usr/lib/postgresql/<version>/bin
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return versions[-1].parent if versions else None


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL server in a temporary folder (Debian's `postgresql` package; skipped without it), its URL."""
    binaries = postgres_binaries()
    if binaries is None:
        pytest.skip("PostgreSQL's server binaries (initdb, pg_ctl) are missing: apt-get install postgresql")
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: run the server as Debian's postgres user
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the PostgreSQL server as")
        as_user = ["runuser", "-u", "postgres", "--"]
    folder = Path(tempfile.mkdtemp(prefix="fer-pg-"))
    if as_user:
        shutil.chown(folder, "postgres")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    user = "postgres" if as_user else getpass.getuser()
    run = lambda *command: subprocess.run([*as_user, *command], check=True, capture_output=True, text=True)  # noqa
    run(str(binaries / "initdb"), "-D", str(folder / "data"), "-U", user, "--auth=trust", "-E", "UTF8")
    run(str(binaries / "pg_ctl"), "-D", str(folder / "data"), "-l", str(folder / "server.log"), "-w", "-o",
        f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
    try:
        yield f"postgresql+psycopg2://{user}@127.0.0.1:{port}/postgres"  # each test makes a database of its own
    finally:
        subprocess.run([*as_user, str(binaries / "pg_ctl"), "-D", str(folder / "data"), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


STORAGES = ["journal", pytest.param("postgresql", marks=pytest.mark.slow)]


def storage_for(kind: str, request: pytest.FixtureRequest) -> str | None:
    if kind == "journal":
        return None  # the default: a journal file in the sweep folder
    url = request.getfixturevalue("postgres_url")
    database = f"fer_{request.node.name.split('[')[0][-20:]}_{os.getpid()}".lower()
    subprocess.run([sys.executable, "-c", "import sqlalchemy as s, sys; e = s.create_engine(sys.argv[1], "
                    "isolation_level='AUTOCOMMIT'); e.connect().execute(s.text(f'CREATE DATABASE {sys.argv[2]}'))",
                    url, database], check=True)
    return url.rsplit("/", 1)[0] + "/" + database  # a database of its own per test: no study names shared


# --------------------------------------------------------------------------------------------------------------------
# Two workers, four points, the same command again
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("storage_kind", STORAGES)
def test_two_workers_run_four_points_once_and_the_same_command_runs_nothing(
        storage_kind: str, project: Path, tmp_path: Path, request: pytest.FixtureRequest,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "outputs"
    storage = storage_for(storage_kind, request)
    code, stdout, err = run_cli(sweep_args(out, project, *POINTS, "--workers", "2", storage=storage), capsys)
    assert code == 0, err
    folder, study = the_study(out, storage)
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(study.trials) == 4 and len(complete) == 4
    assert len({t.user_attrs["point"] for t in complete}) == 4, "no point ran twice"
    run_dirs = {t.user_attrs["run_dir"] for t in complete}
    assert len(run_dirs) == 4 and run_dirs == {str(p.resolve()) for p in records.list_runs(out)}
    assert len({t.user_attrs["worker"]["pid"] for t in complete}) == 2, "both workers ran points"
    assert {t.value for t in complete} == {0.52, 0.53}  # the stand-in's best_val: 0.5 + epochs / 100
    record = sweep.read_sweep(folder)
    assert record["status"] == "complete" and record["workers"] == 2
    assert (folder / sweep.COMPARISON_CSV).is_file()

    code, stdout, err = run_cli(sweep_args(out, project, *POINTS, "--workers", "2", storage=storage), capsys)
    assert code == 0, err
    assert "again: 4 kept, 0 to run" in stdout
    _, study = the_study(out, storage)
    assert len(study.trials) == 4 and len(records.list_runs(out)) == 4


# --------------------------------------------------------------------------------------------------------------------
# A worker killed during a trial
# --------------------------------------------------------------------------------------------------------------------


def holding_train_notebook(project: Path, hold: Path) -> None:
    """02_train that waits while ``hold`` exists (writing its kernel's pid beside it), then trains as the stand-in."""
    wait = (f"import os, pathlib, time\npathlib.Path({str(hold)!r} + '.pid').write_text(str(os.getpid()))\n"
            f"while os.path.exists({str(hold)!r}):\n    time.sleep(0.1)\n")
    nbformat.write(_notebook("model = 'basic_cnn'\nrun_dir = None\nparams_file = None\noverrides = {}",
                             wait + FAKE_TRAIN.replace("folder.mkdir(parents=True)",
                                                       "folder.mkdir(parents=True, exist_ok=True)")),
                   project / "notebooks" / "02_train.ipynb")


@pytest.mark.slow
@pytest.mark.parametrize("storage_kind", STORAGES)
def test_a_killed_workers_trial_completes_in_its_run_folder_on_the_next_run(
        storage_kind: str, project: Path, tmp_path: Path, request: pytest.FixtureRequest,
        capsys: pytest.CaptureFixture[str]) -> None:
    out, hold = tmp_path / "outputs", tmp_path / "hold"
    storage = storage_for(storage_kind, request)
    holding_train_notebook(project, hold)
    hold.write_text("")
    args = sweep_args(out, project, "--grid", "epochs=2", "--workers", "1", storage=storage)
    process = subprocess.Popen([sys.executable, "-m", "fer_lib.app.cli", *args], start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 45
        while not Path(f"{hold}.pid").is_file():  # the point's 02_train is running (and holding)
            assert process.poll() is None and time.monotonic() < deadline, "the sweep did not reach 02_train"
            time.sleep(0.2)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the sweep and its worker ...
        process.wait()
        if Path(f"{hold}.pid").is_file():
            try:
                os.kill(int(Path(f"{hold}.pid").read_text()), signal.SIGKILL)  # ... and the notebook's kernel
            except ProcessLookupError:
                pass
    _, study = the_study(out, storage)
    (killed,) = study.trials
    assert killed.state.name == "RUNNING" and killed.user_attrs["run_dir"]
    hold.unlink()

    code, stdout, err = run_cli(sweep_args(out, project, "--grid", "epochs=2", "--workers", "1", storage=storage),
                                capsys)
    assert code == 0, stdout + err
    assert "1 of a killed worker again" in stdout
    _, study = the_study(out, storage)
    assert [t.state.name for t in study.trials] == ["FAIL", "COMPLETE"]
    assert study.trials[1].user_attrs["run_dir"] == killed.user_attrs["run_dir"], "resumed in its own run folder"
    (run_dir,) = records.list_runs(out)
    assert str(run_dir.resolve()) == killed.user_attrs["run_dir"]
    manifest = records.read_json(run_dir / records.MANIFEST_FILE)
    assert manifest["status"] == "complete" and len(manifest["resumes"]) == 1


# --------------------------------------------------------------------------------------------------------------------
# Slurm
# --------------------------------------------------------------------------------------------------------------------


def test_launch_slurm_dry_run_prints_the_golden_sbatch_script(project: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "outputs"
    code, stdout, err = run_cli(sweep_args(out, project, *POINTS, "--workers", "3", "--launch", "slurm",
                                           "--dry-run"), capsys)
    assert code == 0, err
    (folder,) = [p for p in out.iterdir() if sweep.is_sweep_dir(p)]
    script = stdout[stdout.index("#!/bin/bash"):]
    assert (folder / trials.SLURM_FILE).read_text().rstrip() == script.rstrip()
    assert not records.list_runs(out), "a dry run runs nothing"
    assert (folder / "logs").is_dir(), "sbatch does not make the tasks' log folder"
    normalised = (script.replace(sys.executable, "<python>").replace(folder.name, "<study>")
                  .replace(str(tmp_path), "<tmp>").replace(str(records.project_root()), "<project>"))
    golden = GOLDEN / "workers.sbatch"
    if os.environ.get("FER_UPDATE_GOLDEN"):
        golden.write_text(normalised)
    assert normalised == golden.read_text(), f"the script differs from {golden} (FER_UPDATE_GOLDEN=1 rewrites it)"
    code, _, err = run_cli(sweep_args(out, project, *POINTS, "--workers", "3", "--launch", "slurm"), capsys)
    if shutil.which("sbatch") is None:
        assert code == 2 and "--launch slurm needs sbatch on this machine's PATH" in err


# --------------------------------------------------------------------------------------------------------------------
# tune: the pruner on known curves, then a real search
# --------------------------------------------------------------------------------------------------------------------


def test_the_pruner_stops_bad_trials_and_best_yaml_names_the_good_one(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A stub of train_model with known curves: learning_rate 0.01 climbs to 0.8, the others stay near 0.2."""
    import fer_lib.core.train as train

    epochs_run: dict[float, list[int]] = {}

    def stub_train_model(dataset: Any, model_name: str, config: Any, out_dir: Path, *,
                         extra_callbacks: list, **_: Any) -> SimpleNamespace:
        (pruning,) = extra_callbacks
        model = SimpleNamespace(stop_training=False)
        pruning.set_model(model)
        good = config.learning_rate == 0.01
        curve = []
        for epoch in range(config.epochs):
            curve.append(0.3 + 0.5 * (epoch + 1) / config.epochs if good else 0.2 + 0.001 * epoch)
            pruning.on_epoch_end(epoch, {"val_accuracy": curve[-1]})
            if model.stop_training:
                break
        epochs_run.setdefault(config.learning_rate, []).append(len(curve))
        return SimpleNamespace(history=pd.DataFrame({"val_accuracy": curve}))

    monkeypatch.setattr(train, "train_model", stub_train_model)
    space = tmp_path / "space.yaml"
    space.write_text("learning_rate: {choices: [0.0001, 0.01, 0.3]}\n")
    job = tune.prepare_tune([records.project_root() / "params" / "smoke.yaml"],
                            [*[p for p in TINY if p != "-p"], "models=[basic_cnn]", "epochs=9"],
                            space, trials_wanted=9, model=None, pruner="successive_halving", data=None, name="stub",
                            out=tmp_path)
    folder = tmp_path / job["folder"]
    folder.mkdir()
    job = {**job, "dir": str(folder)}
    study = trials.create_study(str(folder / trials.JOURNAL_FILE), job["folder"], job,
                                sampler=trials.quiet_optuna().samplers.TPESampler(seed=0),
                                pruner=tune.make_pruner("successive_halving", 9))
    study.set_user_attr("deadline", None)
    tune.work(study, job)
    states = [(t.params["learning_rate"], t.state.name) for t in study.trials]
    assert len(states) == 9
    pruned = [rate for rate, state in states if state == "PRUNED"]
    assert pruned and set(pruned) <= {"0.0001", "0.3"}, states  # only bad trials are pruned ...
    assert min(min(epochs_run.get(r, [9])) for r in (0.0001, 0.3)) < 9  # ... before their last epoch
    assert all(n == 9 for n in epochs_run[0.01])  # the good one always trains to the end ...
    assert {state for rate, state in states if rate == "0.01"} == {"COMPLETE"}  # ... and counts
    assert tune.write_outputs(study, job, folder) == 0
    best = yaml.safe_load((folder / "best.yaml").read_text())
    assert best["learning_rate"] == 0.01 and best["name"] == "stub-tuned"


@pytest.mark.slow
def test_a_real_tune_writes_the_table_both_plots_and_a_best_yaml_that_runs(project: Path, tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "outputs"
    space = tmp_path / "space.yaml"
    space.write_text("learning_rate: {low: 0.0005, high: 0.005, log: true}\n"
                     "augmentation.rotation: {choices: [0, 10]}\n")
    smoke = records.project_root() / "params" / "smoke.yaml"
    code, stdout, err = run_cli(["tune", "--params", str(smoke), "--space", str(space), "--trials", "2",
                                 "-p", "synthetic=true", *TINY, "-p", "models=[basic_cnn]", "-p", "epochs=2",
                                 "--workers", "2", "--out", str(out)], capsys)
    assert code == 0, err  # two workers, and still two trials in all (a worker counts the others' running ones)
    (folder,) = [p for p in out.iterdir() if p.name.startswith("tune-smoke-")]
    table = pd.read_csv(folder / "trials.csv")
    assert len(table) == 2 and set(table["state"]) == {"COMPLETE"}
    assert table["value"].between(0, 1).all() and {"params_learning_rate", "params_augmentation.rotation"} <= set(
        table.columns)
    for plot in ("optimization_history.png", "param_importances.png"):
        assert (folder / plot).stat().st_size > 10_000, plot
    best = folder / "best.yaml"
    assert f"fer-study run --params {best}" in best.read_text()
    chosen = yaml.safe_load(best.read_text())
    assert chosen["epochs"] == 2 and 0.0005 <= chosen["learning_rate"] <= 0.005
    assert np.isclose(chosen["learning_rate"], table.loc[table["value"].idxmax(), "params_learning_rate"])
    code, stdout, err = run_cli(["run", "--params", str(best), "--out", str(tmp_path / "runs")], capsys)
    assert code == 0, err  # the stand-in notebooks: the study accepted best.yaml and made its run
    (run_dir,) = records.list_runs(tmp_path / "runs")
    assert records.read_params(run_dir)["learning_rate"] == chosen["learning_rate"]
    code, stdout, _ = run_cli(["tune", "--params", str(smoke), "--space", str(space), "--trials", "2",
                               "-p", "synthetic=true", *TINY, "-p", "models=[basic_cnn]", "-p", "epochs=2",
                               "--workers", "1", "--out", str(out)], capsys)
    assert code == 0 and "2 finished already" in stdout  # the same command: nothing trains again


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ("learning_rat: {low: 0.001, high: 0.01}\n", "unknown parameter(s) learning_rat"),
        ("learning_rate: {low: 0.01, high: 0.001}\n", "a range needs numbers low < high"),
        ("epochs: {choices: [2, 0]}\n", "0 is not a value the study accepts"),
        ("learning_rate: 0.01\n", "must be {low: ..., high: ...}"),
    ],
)
def test_a_bad_space_file_is_one_line_and_exit_2_before_anything_is_written(
        project: Path, tmp_path: Path, space: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "outputs"
    (tmp_path / "space.yaml").write_text(space)
    code, _, err = run_cli(["tune", "--params", str(records.project_root() / "params" / "smoke.yaml"),
                            "--space", str(tmp_path / "space.yaml"), "--trials", "2", "--out", str(out)], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_sigterm_stops_the_local_workers(tmp_path: Path) -> None:
    """A scheduler's or a deadline's SIGTERM to `fer-study sweep/tune` stops its workers too (none is orphaned)."""
    script = tmp_path / "supervisor.py"
    pids = tmp_path / "pids"
    script.write_text(
        "import subprocess, sys\n"
        "from fer_lib.app import trials\n"
        "def launch(command, env):\n"
        "    child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"    open({str(pids)!r}, 'a').write(f'{{child.pid}}\\n')\n"
        "    return child\n"
        "try:\n"
        "    trials.run_local_workers('s.journal', 'study', [None, None], launch=launch)\n"
        "except KeyboardInterrupt:\n"
        "    sys.exit(130)\n")
    supervisor = subprocess.Popen([sys.executable, str(script)])
    deadline = time.monotonic() + 30
    while not pids.is_file() or len(pids.read_text().split()) < 2:
        assert time.monotonic() < deadline and supervisor.poll() is None
        time.sleep(0.1)
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(timeout=20) == 130
    from fer_lib.app.runs import process_alive
    assert not any(process_alive(int(pid)) for pid in pids.read_text().split())
