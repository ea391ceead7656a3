"""The ``fer-study`` command: parse the command line and call the runner, a sweep, a search, the predictor or the
run listing (the commands are in the README and ``fer-study COMMAND --help``). A user error (a typo in a parameter, a
missing file, no usable Keras backend) is one line on stderr and exit code 2, before anything is written."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from fer_lib import __version__
from fer_lib.app import runs
from fer_lib.app.provenance import BackendUnavailable, check_backend
from fer_lib.app.errors import EXIT_OK, EXIT_USAGE, PROG, UserError, one_line
from fer_lib.core import records

def _add_study_arguments(parser: argparse.ArgumentParser, *, out: str, name: str) -> None:
    """The arguments of a study run (`run`, and every point of a `sweep`)."""
    parser.add_argument("--params", metavar="FILE", action="extend", nargs="+", default=[],
                        help="YAML params file(s); later files override earlier ones")
    parser.add_argument("--data", metavar="DIR", help="FER2013: fer2013.csv, a folder holding it, or a train/ test/ "
                        "folder layout (default: $FER2013_DIR, else data/fer2013, else the synthetic demo data)")
    parser.add_argument("-p", "--param", metavar="KEY=VALUE", dest="overrides", action="append", default=[],
                        help="override one parameter (value in YAML syntax; a.b=value sets a nested key), repeatable")
    parser.add_argument("--out", metavar="DIR", help=out)
    parser.add_argument("--name", help=name)
    parser.add_argument("--log-output", action="store_true",
                        help="stream the notebooks' outputs (training logs) to the terminal")
    parser.add_argument("--notebooks-dir", metavar="DIR", type=Path, default=None, help=argparse.SUPPRESS)


def _add_worker_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """Where the trials are kept and who runs them (`sweep` and `tune`)."""
    parser.add_argument("--workers", default="auto", metavar="N|auto", help=f"worker processes running the {what} "
                        "side by side: auto is one per visible GPU (CUDA_VISIBLE_DEVICES of each), one on a CPU-only "
                        "machine; N workers share the devices")
    parser.add_argument("--storage", metavar="URL", help="where the trials are kept: a database URL many machines "
                        "share (postgresql://user@host/db), or a journal file; default: a journal file in the folder "
                        "(nothing to set up)")
    parser.add_argument("--launch", choices=("local", "slurm"), default="local", help="slurm: submit the workers as "
                        "an sbatch job array (--workers tasks, one GPU each) instead of running them here")
    parser.add_argument("--dry-run", action="store_true", help="with --launch slurm: print the script, submit nothing")


def build_parser() -> argparse.ArgumentParser:
    """The ``fer-study`` argument parser with every command."""
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
    _add_study_arguments(run, out="where run folders go (default: outputs/ of the project)",
                         name="run name, the suffix of the run folder (default: the params' name)")

    resume = commands.add_parser(
        "resume", help="finish an interrupted or failed run in its own folder",
        description="Finish a run that was interrupted (Ctrl-C, a killed process, a lost machine) or failed: the "
                    "notebooks that completed are kept, the others run again, and a training notebook resumes "
                    "from its model's last backup. The manifest records the resume.")
    resume.add_argument("run_dir", metavar="RUN_DIR", type=Path)
    resume.add_argument("--log-output", action="store_true", help="stream the notebooks' outputs to the terminal")

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

    sweep = commands.add_parser(
        "sweep", help="run every combination of a grid of parameter values, each as its own run",
        description="Run the study once per combination of the --grid values (times every seed: each point a run "
                    "folder made by the same runner as `run`), as the trials of an Optuna study that workers pull, "
                    "recorded in a sweep folder <out>/sweep-<name>-<digest>/ with sweep.json, comparison.csv and "
                    "comparison.png. Every point is checked before anything runs; the same command run again "
                    "resumes the sweep (finished points are kept).",
        epilog="examples:\n  fer-study sweep --params params/smoke.yaml --grid epochs=2,3 --grid batch_size=8,16\n"
               "  fer-study sweep --params params/paper.yaml --grid augmentation.rotation=0,10 "
               "--grid augmentation.horizontal_flip=false,true\n"
               "  fer-study sweep --params params/strong.yaml --grid learning_rate=0.01,0.03 --workers auto\n"
               "  fer-study sweep --params params/strong.yaml --grid seed=0,1,2,3 --storage postgresql://db/fer "
               "--launch slurm --workers 4",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sweep.add_argument("--grid", metavar="KEY=V1,V2", action="append", default=[], required=True,
                       help="a parameter and its values (YAML each; commas inside [] stay), repeatable")
    _add_study_arguments(sweep, out="where the sweep and run folders go (default: outputs/ of the project)",
                         name="the sweep's name, the prefix of its runs' names (default: the params' name)")
    _add_worker_arguments(sweep, "points")

    tune = commands.add_parser(
        "tune", help="a pruned search over a space of study parameters (Optuna), on validation only",
        description="Search a space of study parameters with Optuna's TPE sampler; a pruner stops a trial at an "
                    "epoch end whose validation accuracy is behind. A trial trains one model through the study's own "
                    "loop (no notebook); test is never looked at. The folder <out>/tune-<name>-<digest>/ gets "
                    "trials.csv, optimization_history.png, param_importances.png and best.yaml (the best trial's "
                    "params: `fer-study run --params best.yaml` runs it as the study); the same command resumes it.",
        epilog="space file (YAML):\n  learning_rate: {low: 0.005, high: 0.05, log: true}\n"
               "  augmentation.erasing: {low: 0.0, high: 0.6}\n  model_options.basic_cnn.dense_units: "
               "{choices: [[1024], [4096, 4096]]}\nexample:\n  fer-study tune --params params/strong.yaml "
               "--space params/space-strong.yaml --trials 12 --workers 3",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    tune.add_argument("--space", metavar="SPACE.yaml", type=Path, required=True, help="the parameters to search")
    tune.add_argument("--trials", type=int, required=True, help="trials in all (pruned and failed ones count)")
    tune.add_argument("--model", help="the model each trial trains (default: the params' first model)")
    tune.add_argument("--pruner", default="successive_halving", help="successive_halving (default), hyperband or none")
    tune.add_argument("--timeout", type=float, metavar="SECONDS",
                      help="start no trial after this many seconds (the trials running then finish)")
    _add_study_arguments(tune, out="where the tune folder goes (default: outputs/ of the project)",
                         name="the search's name (default: the params' name)")
    _add_worker_arguments(tune, "trials")

    worker = commands.add_parser(
        "worker", help="join a sweep's or a search's workers (on this or another machine)",
        description="Pull trials of a study that `fer-study sweep` or `tune` made and run them until none is left. "
                    "What to run comes from the study itself; every machine needs the same project, data paths "
                    "and params files (a shared file system).",
        epilog="example:\n  fer-study worker --storage postgresql://user@db/fer --study sweep-strong-1a2b3c4d5e",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    worker.add_argument("--storage", metavar="URL", required=True, help="the study's storage (as the sweep shows it)")
    worker.add_argument("--study", required=True, help="the study's name (the sweep or tune folder's name)")

    compare = commands.add_parser(
        "compare", help="tabulate and plot runs (or sweeps) against the parameters that tell them apart",
        description="One row per run and model (and ensemble): the parameters that differ between the runs (a "
                    "sweep's grid keys), test accuracy with its 95% interval (mean ± std over seeds), with TTA, "
                    "macro-F1, the majority baseline.")
    compare.add_argument("paths", metavar="RUN_OR_SWEEP", nargs="+", type=Path)
    compare.add_argument("--plot", metavar="FILE", type=Path, help="also save the comparison plot (PNG)")
    compare.add_argument("--csv", metavar="FILE", type=Path, help="also save the table as CSV")

    predict = commands.add_parser(
        "predict", help="find the faces in photos and predict their expressions with a run's trained models",
        description="Find the faces in photos (OpenCV's frontal-face detector), crop each as FER2013 shows faces "
                    "(grayscale, 48x48) and classify it with the run's trained model(s). Writes an annotated copy "
                    "of each photo and predictions.json (per face: box, the seven probabilities, the top 3) into a "
                    "new folder <RUN_DIR>/predictions/<timestamp>-<model>/ (or --out). A photo without a face is "
                    "reported, not an error; a file that is not a readable image is named and skipped, and the "
                    "exit code is then 1.",
        epilog="examples:\n  fer-study predict outputs/20261201-101500-study photo.jpg\n"
               "  fer-study predict outputs/20261201-101500-study ~/Pictures/party/ --model basic_cnn --out faces/",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    predict.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="a run folder with trained models")
    predict.add_argument("photos", metavar="IMAGE_OR_FOLDER", nargs="+",
                         help="photo files and/or folders of photos (not their sub-folders)")
    predict.add_argument("--model", default="ensemble", help="a trained model of the run (basic_cnn, resnet50v2), or "
                         "ensemble (the default): the average of the run's models' probabilities (each model "
                         "averaged over its seeds)")
    predict.add_argument("--out", metavar="DIR", type=Path, help="folder for the annotated photos and "
                         "predictions.json (created; refused if it already holds predictions); default: a new "
                         "<RUN_DIR>/predictions/<timestamp>-<model>/")
    predict.add_argument("--margin", type=float, default=None, help="margin around each detected face, a fraction "
                         "of its size per side (default: FER2013's framing)")
    predict.add_argument("--tta", action="store_true",
                         help="also classify each face's mirror image and average (the study's flip TTA)")
    predict.add_argument("--whole-image", action="store_true",
                         help="no face detection: each photo is one face already cropped (e.g. a FER2013 image)")
    predict.add_argument("--min-neighbors", metavar="N", type=int, default=None, help="face detector's strictness "
                         "(default 5): higher finds fewer false faces and misses more real ones")
    estimate = commands.add_parser(
        "estimate", help="how long a params file's training takes on a benchmarked machine",
        description="Per model: epochs x training images / the benchmark's training images/s (per seed), the "
                    "evaluations at its inference images/s, and its compiles. Nothing is trained or loaded.",
        epilog="example:\n  fer-study estimate --params params/strong.yaml "
               "--bench benchmarks/results/2026-11-28-jax-NVIDIA-H200.json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    estimate.add_argument("--params", metavar="FILE", action="extend", nargs="+", default=[], required=True)
    estimate.add_argument("-p", "--param", metavar="KEY=VALUE", dest="overrides", action="append", default=[])
    estimate.add_argument("--bench", metavar="JSON", type=Path, required=True,
                          help="a benchmark record (benchmarks/results/*.json) of the machine to estimate for")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fer-study`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    command_line = list(sys.argv[1:] if argv is None else argv)
    recording_their_command = {"run": command_run, "resume": command_resume, "sweep": command_sweep,
                               "tune": command_tune}  # what they make keeps the command line that made it
    others = {"list": command_list, "results": command_results, "worker": command_worker,
              "compare": command_compare, "estimate": command_estimate, "predict": command_predict}
    try:
        if args.command in recording_their_command:
            return recording_their_command[args.command](args, argv=command_line)
        return others[args.command](args)
    except UserError as error:
        print(f"{PROG}: error: {one_line(str(error))}", file=sys.stderr)
        return EXIT_USAGE


def _ready_backend() -> None:
    """Check, without importing Keras, that the backend the notebooks will get is installed (else one line, exit 2)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the notebooks' kernels inherit it: quiet TensorFlow imports
    try:
        check_backend()
    except BackendUnavailable as error:
        raise UserError(str(error)) from None


def command_run(args: argparse.Namespace, *, argv: list[str]) -> int:
    from fer_lib.app import runner
    _ready_backend()
    plan = runner.prepare_run(args.params, args.overrides, data=args.data, name=args.name, out=args.out,
                              notebooks_dir=args.notebooks_dir)
    return runner.start_run(plan, argv=argv, out=args.out, log_output=args.log_output)


def command_resume(args: argparse.Namespace, *, argv: list[str]) -> int:
    from fer_lib.app import runner
    _ready_backend()
    return runner.resume_run(args.run_dir, argv=argv, log_output=args.log_output)


def command_sweep(args: argparse.Namespace, *, argv: list[str]) -> int:
    from fer_lib.app import sweep
    _ready_backend()
    plan = sweep.prepare_sweep(args.params, args.overrides, args.grid, data=args.data, name=args.name, out=args.out,
                               notebooks_dir=args.notebooks_dir)
    return sweep.start_sweep(plan, argv=argv, workers=args.workers, storage=args.storage, launch=args.launch,
                             dry_run=args.dry_run, log_output=args.log_output)


def command_tune(args: argparse.Namespace, *, argv: list[str]) -> int:
    from fer_lib.app import tune

    _ready_backend()
    job = tune.prepare_tune(args.params, args.overrides, args.space, trials_wanted=args.trials, model=args.model,
                            pruner=args.pruner, data=args.data, name=args.name, out=args.out, timeout=args.timeout)
    return tune.start_tune(job, argv=argv, workers=args.workers, storage=args.storage, launch=args.launch,
                           dry_run=args.dry_run)


def command_worker(args: argparse.Namespace) -> int:
    from fer_lib.app import sweep, trials, tune

    _ready_backend()
    study, job = trials.load_study(args.storage, args.study)
    (sweep.work if job["kind"] == "sweep" else tune.work)(study, job)
    return EXIT_OK


def command_compare(args: argparse.Namespace) -> int:
    from fer_lib.analysis import plots
    from fer_lib.app import sweep, tables

    run_dirs, keys = sweep.expand_run_dirs(args.paths)
    finished = [run_dir for run_dir in run_dirs if records.run_models(run_dir)]
    if not finished:
        raise UserError("none of the given runs has a trained model to compare")
    table = tables.comparison_rows(finished, keys=keys or None)
    keys = keys or tables.varying_keys([records.read_params(run_dir) for run_dir in finished])
    shown = table.drop(columns=["data"]).copy()
    for column in shown.columns:
        if shown[column].dtype.kind == "f":
            shown[column] = shown[column].map(lambda v: "" if v != v else f"{v:.3f}")
    print(shown.to_string(index=False))
    if args.csv is not None:
        table.to_csv(args.csv, index=False)
        print(f"table: {args.csv}")
    if args.plot is not None:
        figure = plots.plot_sweep(table, keys, synthetic=bool(table["data"].eq("SYNTHETIC").any()))
        plots.save_figure(figure, args.plot)
        print(f"plot: {args.plot}")
    return EXIT_OK


def command_estimate(args: argparse.Namespace) -> int:
    from fer_lib.app import estimate
    from fer_lib.app.params import ParamsError, resolve_params_files

    try:
        params = resolve_params_files(args.params, args.overrides)
        print(estimate.format_estimate(estimate.estimate(params, estimate.read_bench(args.bench))))
    except (ParamsError, estimate.EstimateError) as error:
        raise UserError(str(error)) from None
    return EXIT_OK


def command_list(args: argparse.Namespace) -> int:
    outputs = Path(args.out) if args.out is not None else records.default_outputs_dir()
    if args.out is not None and not outputs.is_dir():
        raise UserError(f"--out '{outputs}' is not a folder")
    rows = runs.list_rows(outputs)
    if not rows:
        print(f"no runs under '{outputs}' (start one with `{PROG} run --params params/smoke.yaml`)")
        return EXIT_OK
    print(runs.format_table(rows))
    if any(row["data"] == "SYNTHETIC" for row in rows):
        print("\nSYNTHETIC runs used generated cartoon faces, not FER2013: their numbers say nothing about real "
              "facial expression recognition.")
    return EXIT_OK


def command_results(args: argparse.Namespace) -> int:
    from fer_lib.app import tables

    rows = []
    for run_dir in args.run_dirs:
        if not records.is_run_dir(run_dir):
            raise UserError(f"'{run_dir}' is not a run folder (no {records.PARAMS_FILE})")
        try:
            rows.extend(tables.results_rows(run_dir))
        except FileNotFoundError as error:
            raise UserError(str(error)) from None
    table = tables.results_markdown(rows)
    if args.update_readme is None:
        print(table)
        return EXIT_OK
    try:
        args.update_readme.write_text(tables.replace_results_block(args.update_readme.read_text(), table))
    except (OSError, ValueError) as error:
        raise UserError(f"cannot update '{args.update_readme}': {error}") from None
    print(f"updated the results table of {args.update_readme} ({len(rows)} rows)")
    return EXIT_OK


def command_predict(args: argparse.Namespace) -> int:
    from fer_lib.app import predict
    options = {name: value for name, value in (("margin", args.margin), ("min_neighbors", args.min_neighbors))
               if value is not None}
    predictor = predict.Predictor(args.run_dir, args.model, tta=args.tta, whole_image=args.whole_image, **options)
    _ready_backend()

    def start(_out_dir: Path) -> None:
        for warning in predictor.warnings:
            print(f"{PROG}: warning: {warning}", file=sys.stderr)
        print(f"{predictor.description} of run {predictor.run_dir.name}", flush=True)

    def show(result: predict.PhotoResult) -> None:
        if result.error is not None:
            print(f"{PROG}: error: {one_line(result.error)}; skipped", file=sys.stderr)
        else:
            print(predict.photo_line(result), flush=True)

    predictions = predict.predict_photos(args.run_dir, args.photos, out=args.out, predictor=predictor,
                                         on_start=start, on_photo=show)
    print(predict.summary_line(predictions))
    return predictions.exit_code


if __name__ == "__main__":  # pragma: no cover - `python -m fer_lib.app.cli`
    sys.exit(main())
