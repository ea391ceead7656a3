"""Time the study's own training step on this machine: training and inference images/s and compile time; write JSON.

    python benchmarks/bench.py --params params/strong.yaml --data ../shared/fer2013          # the strong protocol
    KERAS_BACKEND=jax python benchmarks/bench.py --params params/strong.yaml --data DIR       # a GPU box
    python benchmarks/bench.py --params params/smoke.yaml -p batch_size=16 --min-timed-steps 20   # quick check
    KERAS_BACKEND=jax python benchmarks/bench.py --params params/strong.yaml --data DIR --scaling none  # N GPUs and 1

Each model of the params is trained by fer_lib.core.train.train_model (the study's loop) on the params' data for enough
epochs to time at least --min-timed-steps steps after the first (compiling) epoch. Results go to benchmarks/results/
(commit only results of real runs; the file names the date, backend and device).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", nargs="+", default=["params/strong.yaml"], metavar="FILE")
    parser.add_argument("--data", help="FER2013 (folder, csv or data bundle); default as for `fer-study run`")
    parser.add_argument("-p", "--param", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--min-timed-steps", type=int, default=200)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    parser.add_argument("--note", default="")
    parser.add_argument("--tag", default="", help="appended to the result file's name (e.g. the protocol)")
    parser.add_argument("--scaling", default="", metavar="SETTINGS",
                        help="also time these distribution settings, e.g. none,2 (1 and 2 devices) beside the "
                             "params' own (auto: every GPU); the record's 'scaling' rows")
    args = parser.parse_args(argv)

    from fer_lib.app.provenance import BackendUnavailable, check_backend

    try:
        check_backend()
    except BackendUnavailable as error:
        print(f"bench: error: {error}", file=sys.stderr)
        return 2
    from fer_lib.app.bench import run_benchmark
    from fer_lib.app.params import ParamsError, load_yaml, resolve_params, resolve_params_files
    from fer_lib.app.provenance import distribution_plan
    from fer_lib.core.config import DataConfig, TrainConfig
    from fer_lib.core.data import FerDataError, load_study_data

    try:
        params = resolve_params_files(args.params, args.overrides, {"data": args.data} if args.data else None)
        scaling = [load_yaml(value) for value in args.scaling.split(",") if value.strip()]
        for setting in [params["distribution"], *scaling]:  # each splits the batch over its devices, or exit 2
            distribution_plan(TrainConfig.from_mapping(resolve_params({**params, "distribution": setting}),
                                                       ignore_unknown=True))
        dataset, how = load_study_data(DataConfig.from_mapping(params))
    except (ParamsError, FerDataError, BackendUnavailable) as error:
        print(f"bench: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    print(f"bench: data {how}; {len(dataset.train)} training images", flush=True)
    path = run_benchmark(dataset, params, out_dir=args.out, min_timed_steps=args.min_timed_steps, note=args.note,
                         tag=args.tag, scaling=scaling)
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
