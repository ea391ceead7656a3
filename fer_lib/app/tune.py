"""A pruned search over a space of study parameters (`fer-study tune`) on Optuna: TPE proposes, successive halving
(or Hyperband) prunes at epoch ends, and each trial trains one model through ``train_model`` on validation only (the
search never sees test). The space file and the folder: README ("Seeds, statistics and sweeps") and docs/CONTRACTS.md.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from fer_lib.app import runs, trials
from fer_lib.app.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, PROG, UserError
from fer_lib.app.params import ParamsError, load_params_file, load_yaml, override_text, resolve_params_files
from fer_lib.core import records

PRUNERS = ("successive_halving", "hyperband", "none")
TRIALS_CSV, HISTORY_PLOT, IMPORTANCES_PLOT, BEST_FILE = OUTPUTS = (
    "trials.csv", "optimization_history.png", "param_importances.png", "best.yaml")  # what a search returns


def load_space(path: str | Path, params_files: Sequence[str | Path], overrides: Sequence[str]) -> dict[str, Any]:
    """The space file, checked: every name a study parameter, every end and choice a value the params accept."""
    try:
        space = load_params_file(path)
    except ParamsError as error:
        raise UserError(str(error).replace("params file", "space file")) from None
    if not space:
        raise UserError(f"space file '{path}' names no parameter to search")
    checked: dict[str, Any] = {}
    for key, spec in space.items():
        where = f"space file '{path}', {key}"
        if not isinstance(spec, Mapping) or not ({"low", "high"} <= set(spec) or set(spec) == {"choices"}):
            raise UserError(f"{where}: must be {{low: ..., high: ...}} (with log: true or step: N) or "
                            f"{{choices: [...]}}, got {spec!r}")
        if "choices" in spec:
            if not isinstance(spec["choices"], list) or not spec["choices"]:
                raise UserError(f"{where}: choices must be a non-empty list, got {spec['choices']!r}")
            values, kind = list(spec["choices"]), "choices"
        else:
            unknown = sorted(set(spec) - {"low", "high", "log", "step"})
            low, high = spec["low"], spec["high"]
            numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high))
            if unknown or not numbers or low >= high or (spec.get("log") and low <= 0):
                raise UserError(f"{where}: a range needs numbers low < high (low > 0 with log: true) and no other "
                                f"keys than log and step, got {dict(spec)!r}")
            values, kind = [low, high], "int" if all(isinstance(v, int) for v in (low, high)) else "float"
        for value in values:
            try:
                resolve_params_files(params_files, [*overrides, f"{key}={override_text(value)}"])
            except ParamsError as error:
                raise UserError(f"{where}: {value!r} is not a value the study accepts: {error}") from None
        checked[key] = {**dict(spec), "kind": kind}
    return checked


def suggest(trial: Any, space: Mapping[str, Any]) -> list[str]:
    """The trial's values of the space, as ``key=value`` overrides."""
    overrides = []
    for key, spec in space.items():
        if spec["kind"] == "choices":
            value = load_yaml(trial.suggest_categorical(key, [override_text(c) for c in spec["choices"]]))
        elif spec["kind"] == "int":
            value = trial.suggest_int(key, spec["low"], spec["high"], log=bool(spec.get("log")),
                                      step=int(spec.get("step", 1)))
        else:
            value = trial.suggest_float(key, spec["low"], spec["high"], log=bool(spec.get("log")),
                                        step=spec.get("step"))
        overrides.append(f"{key}={override_text(value)}")
    return overrides


def make_pruner(name: str, epochs: int) -> Any:
    import optuna

    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs, reduction_factor=3)
    return optuna.pruners.NopPruner()


def prepare_tune(params_files: Sequence[str | Path], overrides: Sequence[str], space_file: str | Path, *,
                 trials_wanted: int, model: str | None, pruner: str, data: str | None, name: str | None,
                 out: str | Path | None, timeout: float | None = None) -> dict[str, Any]:
    """Check the params, the data, the space and the options before anything is written."""
    from fer_lib.app import runner

    if trials_wanted < 1:
        raise UserError(f"--trials must be a number of trials >= 1, got {trials_wanted}")
    if timeout is not None and not timeout > 0:
        raise UserError(f"--timeout must be a number of seconds > 0, got {timeout}")
    if pruner not in PRUNERS:
        raise UserError(f"--pruner must be one of {', '.join(PRUNERS)}, got {pruner!r}")
    params = runner.prepare_run(params_files, overrides, data=data, name=name, out=out)["params"]
    model = model or params["models"][0]
    if model not in params["models"]:
        raise UserError(f"--model must be one of the params' models ({', '.join(params['models'])}), got {model!r}")
    extra = [*overrides, *([f"data={params['data']}"] if params.get("data") else []),
             *([f"name={name}"] if name else [])]
    space = load_space(space_file, params_files, extra)
    definition = {"params": [Path(f).read_text() for f in params_files], "overrides": extra,
                  "space": Path(space_file).read_text(), "model": model, "pruner": pruner}
    return {"kind": "tune", "params_files": [str(f) for f in params_files], "overrides": extra, "space": space,
            "space_file": str(space_file), "trials": trials_wanted, "model": model, "pruner": pruner,
            "epochs": params["epochs"], "name": params["name"], "out": None if out is None else str(out),
            "timeout": timeout,  # not part of the digest: the same search, another budget
            "folder": runs.job_folder("tune", params["name"], definition)}


def start_tune(job: dict[str, Any], *, argv: Sequence[str], workers: str = "auto", storage: str | None = None,
               launch: str = "local", dry_run: bool = False) -> int:
    """Make (or find) the tune folder and its study, let workers run the trials, then write the outputs."""
    import optuna

    devices = trials.worker_devices(workers)  # a wrong --workers is refused before the folder exists
    folder, storage_url = trials.job_location(job["out"], job["folder"], storage)
    folder.mkdir(parents=True, exist_ok=True)
    job = {**job, "dir": str(folder.resolve())}
    study = trials.create_study(storage_url, job["folder"], job, sampler=optuna.samplers.TPESampler(seed=0),
                                pruner=make_pruner(job["pruner"], job["epochs"]))
    # --timeout counts from this command's start; a worker reads it from the study (None: no deadline)
    study.set_user_attr("deadline", time.time() + job["timeout"] if job["timeout"] else None)
    finished = len(trials.trials_in(study, *trials.FINISHED))
    print(f"{PROG}: tune folder {folder} ({job['trials']} trials of {job['model']} over "
          f"{', '.join(job['space'])}; {finished} finished already)", flush=True)
    if launch == "slurm":
        tasks = len(devices) if workers != "auto" else 1
        print(trials.launch_slurm(storage_url, job["folder"], tasks, folder, command=[PROG, *argv],
                                  dry_run=dry_run).rstrip())
        return EXIT_OK
    if finished < job["trials"]:
        try:
            trials.run_local_workers(storage_url, job["folder"], devices)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the workers are stopped; what finished is written
            write_outputs(study, job, folder)
            print(f"{PROG}: tune interrupted; the same command resumes it ({folder})", file=sys.stderr)
            return EXIT_INTERRUPTED
    return write_outputs(study, job, folder)


def pruning_callback(trial: Any, epochs: int) -> Any:
    """A Keras callback: validation accuracy reported at each epoch end, training stopped when the pruner says so
    (never after the last of ``epochs``); no batch hook, so Keras keeps dispatching asynchronously."""
    import keras

    class PruneAtEpochEnd(keras.callbacks.Callback):
        pruned_at: int | None = None

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            trial.report(float((logs or {})["val_accuracy"]), epoch + 1)
            if epoch + 1 < epochs and trial.should_prune():
                self.pruned_at = epoch + 1
                self.model.stop_training = True

    return PruneAtEpochEnd()


def run_trial(trial: Any, job: Mapping[str, Any], datasets: dict[str, Any]) -> float:
    """One trial: a model trained on the suggested values; its best val accuracy (``datasets``: data loaded once)."""
    import optuna

    from fer_lib.app.keras_start import import_keras_quietly
    from fer_lib.core.config import AugmentConfig, DataConfig, TrainConfig, model_options
    from fer_lib.core.data import load_study_data

    trials.mark_worker(trial)
    values = suggest(trial, job["space"])
    params = resolve_params_files(job["params_files"], [*job["overrides"], *values])
    trial.set_user_attr("overrides", [*job["overrides"], *values])
    data_config = DataConfig.from_mapping(params)
    data_key = repr(data_config)
    if data_key not in datasets:
        datasets[data_key] = load_study_data(data_config, project_root=records.project_root())[0]
    import_keras_quietly()
    from fer_lib.core.train import train_model

    config = TrainConfig.from_mapping({**params, "verbose": 0}, ignore_unknown=True)
    pruning = pruning_callback(trial, config.epochs)
    out_dir = runs.unique_path(Path(job["dir"]) / "trials", f"trial-{trial.number}")  # a retry trains beside
    result = train_model(datasets[data_key], job["model"], config, out_dir,
                         model_options=model_options(job["model"], params["model_options"].get(job["model"])),
                         augmentation=AugmentConfig.from_mapping(params["augmentation"]), extra_callbacks=[pruning])
    value = float(result.history["val_accuracy"].max())
    ended = f", pruned at epoch {pruning.pruned_at}" if pruning.pruned_at else ""
    print(f"{PROG}: tune trial {trial.number}: val accuracy {value:.4f}{ended} ({', '.join(values)})", flush=True)
    if pruning.pruned_at is not None:
        raise optuna.TrialPruned(f"pruned at epoch {pruning.pruned_at}")
    return value


def work(study: Any, job: Mapping[str, Any]) -> None:
    """A worker of a search: trials until the study has ``trials`` started ones (this worker's and the others')."""
    from optuna.study import MaxTrialsCallback

    trials.retry_dead_trials(study)
    if len(trials.trials_in(study, *trials.COUNTED)) >= job["trials"]:
        return
    deadline = study.user_attrs.get("deadline")  # --timeout: no trial starts after it (running ones end as usual)
    timeout = None if deadline is None else deadline - time.time()
    if timeout is not None and timeout <= 0:
        return
    datasets: dict[str, Any] = {}
    # the trials running on other workers count too: N workers never start more than --trials in all
    study.optimize(lambda trial: run_trial(trial, job, datasets), catch=(RuntimeError,), timeout=timeout,
                   callbacks=[MaxTrialsCallback(job["trials"], states=trials.trial_states(*trials.COUNTED))])


def write_outputs(study: Any, job: Mapping[str, Any], folder: Path) -> int:
    """trials.csv, the two plots and best.yaml; the exit code (1 when no trial completed)."""
    import matplotlib

    matplotlib.use("Agg")
    trials.quiet_optuna()  # Optuna's matplotlib plots are "experimental": a warning per plot otherwise
    from optuna.visualization import matplotlib as optuna_plots

    study.trials_dataframe().to_csv(folder / TRIALS_CSV, index=False)
    complete = trials.trials_in(study, "COMPLETE")
    if not complete:
        print(f"{PROG}: error: no trial of {folder} completed ({TRIALS_CSV} says why)", file=sys.stderr)
        return EXIT_FAILED
    for name, draw in ((HISTORY_PLOT, optuna_plots.plot_optimization_history),
                       (IMPORTANCES_PLOT, optuna_plots.plot_param_importances)):
        if name == IMPORTANCES_PLOT and len(complete) < 2:
            print(f"{PROG}: {name} needs two complete trials; {len(complete)} completed", flush=True)
            continue
        axes = draw(study)
        if name == HISTORY_PLOT:
            axes.set_ylabel("best validation accuracy of the trial")
        axes.figure.set_size_inches(8, 5)
        axes.figure.savefig(folder / name, dpi=110, bbox_inches="tight")
        matplotlib.pyplot.close(axes.figure)
    best = study.best_trial
    params = resolve_params_files(job["params_files"], best.user_attrs["overrides"])
    params["name"] = f"{job['name']}-tuned"
    values = best.user_attrs["overrides"][len(job["overrides"]):]
    header = (f"# The best trial of `{PROG} tune` ({folder.name}): trial {best.number}, validation accuracy "
              f"{best.value:.4f} ({job['model']}, {len(complete)} complete trials; the table: {TRIALS_CSV}).\n"
              f"# Its values: {', '.join(values)}. Run it as the study:\n"
              f"#     {PROG} run --params {folder / BEST_FILE}\n")
    (folder / BEST_FILE).write_text(header + yaml.safe_dump(params, sort_keys=True))
    print(f"{PROG}: best trial {best.number}: val accuracy {best.value:.4f}; {folder / BEST_FILE}", flush=True)
    return EXIT_OK
