"""Measure training/inference images/s, compile time and (optionally) time-to-target accuracy; write JSON.

    python benchmarks/bench.py                                   # both models, this machine, TF backend
    KERAS_BACKEND=jax python benchmarks/bench.py --mixed-precision --batch-size 128 --steps 50   # a GPU box
    python benchmarks/bench.py --models basic_cnn --target 0.6 --data ../shared/fer2013          # + time to 60% val

Results go to benchmarks/results/ (commit only results of real runs; the file names the date, backend and device).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from fer_lib.bench import run_benchmark, time_to_accuracy  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["basic_cnn", "resnet50v2"])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20, help="batches per timed epoch")
    parser.add_argument("--mixed-precision", action="store_true", help="bf16 body, float32 softmax")
    parser.add_argument("--target", type=float, help="also measure time to this validation accuracy")
    parser.add_argument("--data", help="FER2013 folder or csv for --target (default: synthetic faces)")
    parser.add_argument("--max-epochs", type=int, default=30)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    parser.add_argument("--note", default="")
    args = parser.parse_args(argv)
    targets = []
    if args.target is not None:
        from fer_lib.data import load_fer2013, load_synthetic

        dataset = load_fer2013(args.data) if args.data else load_synthetic(3000, 500, 500)
        targets = [time_to_accuracy(dataset, name, args.target, max_epochs=args.max_epochs,
                                    params={"batch_size": args.batch_size, "mixed_precision": args.mixed_precision})
                   for name in args.models]
    path = run_benchmark(args.models, batch_size=args.batch_size, steps=args.steps,
                         mixed_precision=args.mixed_precision, out_dir=args.out, time_to_target=targets,
                         note=args.note)
    print(path.read_text())
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
