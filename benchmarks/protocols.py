"""The paper's protocol against the strong one on real FER2013, on this CPU, for the same wall time each; write JSON.

    python benchmarks/protocols.py [--data ../shared/fer2013] [--minutes 12 | --epochs 10] [--parallel 2]

A small CNN of the basic CNN's family (four blocks of two convolutions, 16-128 filters) is trained by the study's own
loop (fer_lib.core.train.train_model) on train/ less a validation split carved from it, for ``--minutes`` of wall
time per protocol (the last epoch that would not end in time is not started), or for ``--epochs`` each (the same
work for protocols of the same speed, whatever else runs on the machine; each one's wall time is recorded), in
float32 and with the ten-view TTA scored, each protocol otherwise as its params file says:
  paper      params/paper.yaml (Adam 1e-3, batch 64, the paper's augmentation);
  strong     params/strong.yaml (SGD 0.02, batch 128, every part of the recipe but mixup and cutmix);
  no-erasing strong without random erasing;  no-ema  strong without the moving average;  with-mixing  strong with
             mixup and cutmix (alpha 1, half of the batches): every part on (one ablation each).
Each protocol runs in its own process with one thread per operation pool; ``--parallel`` of them run side by side,
so each gets the same share of the machine. The best validation epoch is selected (never test); test (PublicTest)
is scored once, with and without the flip and ten-view TTA. The JSON names the device, versions, settings, per
protocol every epoch's accuracies and the selected model's scores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
PROJECT = Path(__file__).resolve().parents[1]
SMALL_CNN = {"basic_cnn": {"filters": [16, 32, 64, 128], "convs_per_block": 2, "dense_units": [128]}}
CPU = {"mixed_precision": False, "tta_crop": 40, "models": ["basic_cnn"], "epochs": 1000,
       "backup_every_seconds": 1e9, "verbose": 0}
PROTOCOLS: dict[str, tuple[str, dict]] = {
    "paper": ("paper.yaml", {"model_options": SMALL_CNN, "tta": True}),
    "strong": ("strong.yaml", {"model_options": SMALL_CNN}),
    "no-erasing": ("strong.yaml", {"model_options": SMALL_CNN, "augmentation": {"erasing": 0.0}}),
    "no-ema": ("strong.yaml", {"model_options": SMALL_CNN, "ema": False}),
    "with-mixing": ("strong.yaml", {"model_options": SMALL_CNN, "mixup_alpha": 1.0, "cutmix_alpha": 1.0}),
}


def run_one(name: str, data: str, minutes: float, epochs: int | None, out: Path) -> None:
    """One protocol in this process: train for the budget, score the best validation epoch, write its JSON row."""
    import keras

    from fer_lib.app.params import resolve_params_files
    from fer_lib.app.study import run_model
    from fer_lib.core import records
    from fer_lib.core.config import DataConfig
    from fer_lib.core.data import load_study_data

    file, changes = PROTOCOLS[name]
    fixed = {"epochs": epochs} if epochs else {}
    params = resolve_params_files([PROJECT / "params" / file], [], {**CPU, **changes, **fixed, "data": data})
    dataset, _ = load_study_data(DataConfig.from_mapping(params), project_root=PROJECT)
    budget = minutes * 60.0

    class WallClock(keras.callbacks.Callback):  # epoch-level: stop before an epoch that would not end in time
        def on_train_begin(self, logs: dict | None = None) -> None:
            self.started = time.monotonic()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            spent = time.monotonic() - self.started
            if not epochs and spent * (epoch + 2) / (epoch + 1) > budget:
                self.model.stop_training = True

    folder = out / f"model-{name}"
    summary = run_model(params, "basic_cnn", dataset, folder, extra_callbacks=[WallClock()])
    history = records.read_history(folder / records.HISTORY_FILE)
    row = {"protocol": name, "params_file": f"params/{file}", "changes": changes,
           "minutes": None if epochs else minutes,
           "epochs": int(len(history)), "train_seconds": summary["train_seconds"], "best_epoch": summary["best_epoch"],
           "val_accuracy": summary["val"]["accuracy"], "test_accuracy": summary["test"]["accuracy"],
           "test_accuracy_tta": summary.get("test_tta", {}).get("accuracy"),
           "test_accuracy_tta10": summary.get("test_tta10", {}).get("accuracy"),
           "last_train_accuracy": float(history["accuracy"].iloc[-1]),
           "history": history[["epoch", "accuracy", "val_accuracy", "loss", "val_loss",
                               "train_images_per_second"]].to_dict(orient="list")}
    records.write_json(out / f"{name}.json", row)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(PROJECT.parent / "shared" / "fer2013"))
    parser.add_argument("--minutes", type=float, default=12.0, help="wall time per protocol (at most 15)")
    parser.add_argument("--epochs", type=int, help="a fixed number of epochs per protocol instead of --minutes")
    parser.add_argument("--parallel", type=int, default=2, help="protocols side by side (one thread each)")
    parser.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=list(PROTOCOLS))
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    parser.add_argument("--add-to", metavar="RECORD",
                        help="an earlier record of the same settings: its protocols are kept, these are added")
    parser.add_argument("--rename", metavar="OLD=NEW", action="append", default=[],
                        help="with --add-to: an earlier row's protocol under today's name (its configuration got a "
                             "new name since; recorded in the settings)")
    parser.add_argument("--only", help=argparse.SUPPRESS)  # one protocol, in this process
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.only:
        run_one(args.only, args.data, args.minutes, args.epochs, Path(args.work))
        return 0
    if args.epochs is not None and args.epochs < 1:
        parser.error(f"--epochs must be a positive whole number, got {args.epochs}")
    if not 0 < args.minutes <= 15:
        parser.error(f"--minutes must be in (0, 15], got {args.minutes}")
    if not Path(args.data).exists():
        parser.error(f"--data '{args.data}' does not exist (FER2013: train/ and test/)")
    earlier: list[dict] = []
    if args.add_to:
        previous = json.loads(Path(args.add_to).read_text())
        same = {"epochs_per_protocol": args.epochs, "parallel": args.parallel, "data": args.data}
        if any(previous["settings"].get(key) != value for key, value in same.items()):
            parser.error(f"--add-to {args.add_to}: its settings differ from these ({same})")
        renames = dict(text.split("=", 1) for text in args.rename)
        earlier = [{**row, "protocol": renames.get(row["protocol"], row["protocol"]),
                    **({"recorded_as": row["protocol"]} if row["protocol"] in renames else {})}
                   for row in previous["protocols"]]
        earlier = [row for row in earlier if row["protocol"] not in args.protocols and row["protocol"] in PROTOCOLS]

    import tempfile

    from fer_lib.app import runs
    from fer_lib.app.provenance import device_info, keras_backend, package_versions
    from fer_lib.core import records

    work = Path(tempfile.mkdtemp(prefix="fer-protocols-"))
    env = {**os.environ, "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1",
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    pending, running, started = list(args.protocols), {}, time.monotonic()
    while pending or running:
        while pending and len(running) < args.parallel:
            name = pending.pop(0)
            log = open(work / f"{name}.log", "w")
            running[name] = subprocess.Popen([sys.executable, __file__, "--only", name, "--data", args.data,
                                              "--minutes", str(args.minutes), "--work", str(work)]
                                             + (["--epochs", str(args.epochs)] if args.epochs else []),
                                             stdout=log, stderr=subprocess.STDOUT, env=env)
            print(f"protocols: {name} started ({time.monotonic() - started:.0f} s)", flush=True)
        for name, process in list(running.items()):
            if process.poll() is not None:
                del running[name]
                status = "done" if process.returncode == 0 else f"FAILED (see {work / (name + '.log')})"
                print(f"protocols: {name} {status} ({time.monotonic() - started:.0f} s)", flush=True)
        time.sleep(2)
    rows = earlier + [records.read_json(work / f"{name}.json") for name in args.protocols
                      if (work / f"{name}.json").is_file()]
    device = device_info()
    record = {"date": records.now(), "device": device["summary"], "device_details": device, "backend": keras_backend(),
              "versions": package_versions(),
              "settings": {"data": args.data, "val": "10% of train/ carved (stratified, seed 0)", "model": SMALL_CNN,
                           "minutes_per_protocol": None if args.epochs else args.minutes,
                           "epochs_per_protocol": args.epochs, "parallel": args.parallel,
                           "threads_per_protocol": 1, "selection": "best validation epoch; test scored once",
                           **({"carried_over": {"from": Path(args.add_to).name, "renamed": args.rename}}
                              if args.add_to else {})},
              "protocols": rows}
    out = Path(args.out)
    path = records.write_json(runs.unique_path(out, f"{record['date'][:10]}-{record['backend']}-protocols-fer2013",
                                               ".json"), record)
    print(f"{'protocol':10} {'epochs':>6} {'val':>6} {'test':>6} {'flip':>6} {'10-view':>7} {'train':>6}")
    for row in rows:
        print(f"{row['protocol']:10} {row['epochs']:6d} {row['val_accuracy']:6.3f} {row['test_accuracy']:6.3f} "
              f"{row['test_accuracy_tta'] or float('nan'):6.3f} {row['test_accuracy_tta10'] or float('nan'):7.3f} "
              f"{row['last_train_accuracy']:6.3f}")
    print(f"written to {path}")
    return 0 if len(rows) == len(earlier) + len(args.protocols) else 1


if __name__ == "__main__":
    raise SystemExit(main())
