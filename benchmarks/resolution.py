"""What ResNet50V2's input resolution costs per trained image, relative to 48x48: FLOPs and images/s; write JSON.

    python benchmarks/resolution.py [--sizes 48 64 96] [--steps 24] [--batch-size 16]

ResNet50V2's stem leaves a 2x2 map at the end of a 48x48 face; upsampling the input (model option input_size) is
the adaptation the study may use, at a price this measures:
* FLOPs of one training step (forward and backward) per image, as XLA counts them for the compiled step
  (``jax.jit(...).lower(...).compile().cost_analysis()``, in a JAX subprocess: the count, not a guess from shapes);
* training images/s in the study's own loop (fer_lib.app.bench.benchmark_model, the backend this process has: the
  TensorFlow CPU of a laptop) on synthetic faces, after the first (compiling) epoch.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

FLOPS_CODE = """
import json, sys, jax, keras, numpy as np
from fer_lib.core.config import ResNet50V2Options
from fer_lib.core.models import build_model
size, batch = int(sys.argv[1]), int(sys.argv[2])
model = build_model("resnet50v2", ResNet50V2Options(input_size=size))
loss = keras.losses.CategoricalCrossentropy()
def step(trainable, non_trainable, x, y):
    def value(trainable):
        out, _ = model.stateless_call(trainable, non_trainable, x, training=True)
        return loss(y, out)
    return jax.value_and_grad(value)(trainable)
x = np.zeros((batch, 48, 48, 1), "float32"); y = np.eye(7, dtype="float32")[np.zeros(batch, int)]
compiled = jax.jit(step).lower([v.value for v in model.trainable_variables],
                               [v.value for v in model.non_trainable_variables], x, y).compile()
analysis = compiled.cost_analysis()
analysis = analysis[0] if isinstance(analysis, list) else analysis
print(json.dumps({"flops_per_image": analysis["flops"] / batch, "params": model.count_params()}))
"""


def step_flops(size: int, batch: int) -> dict:
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", FLOPS_CODE, str(size), str(batch)], capture_output=True, text=True,
                          env=env, check=True, cwd=Path(__file__).resolve().parents[1])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[48, 64, 96])
    parser.add_argument("--steps", type=int, default=24, help="timed training steps per size (after the first epoch)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = parser.parse_args(argv)

    from fer_lib.app import runs
    from fer_lib.app.keras_start import import_keras_quietly
    from fer_lib.app.params import resolve_params
    from fer_lib.app.provenance import device_info, package_versions
    from fer_lib.core import records
    from fer_lib.core.data import load_synthetic

    import_keras_quietly()
    from fer_lib.app.bench import benchmark_model

    dataset = load_synthetic(args.batch_size * 8, args.batch_size * 2, args.batch_size * 2, seed=0)
    rows = []
    for size in args.sizes:
        params = resolve_params({"models": ["resnet50v2"], "batch_size": args.batch_size, "epochs": 2,
                                 "model_options": {"resnet50v2": {"input_size": size}}, "augmentation": {}})
        timing = benchmark_model(dataset, "resnet50v2", params, min_timed_steps=args.steps, inference_repeats=1)
        rows.append({"input_size": size, **step_flops(size, args.batch_size),
                     "train_images_per_second": timing["train_images_per_second"],
                     "timed_steps": timing["timed_steps"], "compile_seconds_estimate":
                         timing["compile_seconds_estimate"]})
        print(f"resnet50v2 at {size}x{size}: {rows[-1]['flops_per_image'] / 1e9:.2f} GFLOP per trained image, "
              f"{rows[-1]['train_images_per_second']:.1f} training images/s", flush=True)
    base = rows[0]
    for row in rows:
        row["flops_relative"] = row["flops_per_image"] / base["flops_per_image"]
        row["seconds_per_image_relative"] = base["train_images_per_second"] / row["train_images_per_second"]
    device = device_info()
    import keras

    record = {"date": records.now(), "device": device["summary"], "device_details": device,
              "backend": keras.backend.backend(), "versions": package_versions(),
              "settings": {"model": "resnet50v2", "batch_size": args.batch_size, "timed_steps": args.steps,
                           "data": "synthetic faces", "flops": "XLA cost analysis of the compiled training step "
                                                               "(JAX, CPU), per image"},
              "sizes": rows}
    path = records.write_json(runs.unique_path(args.out, f"{record['date'][:10]}-{keras.backend.backend()}-"
                                                          f"resnet50v2-resolution", ".json"), record)
    for row in rows:
        print(f"  {row['input_size']}: FLOPs x{row['flops_relative']:.2f}, time per image x"
              f"{row['seconds_per_image_relative']:.2f} relative to {base['input_size']}")
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
