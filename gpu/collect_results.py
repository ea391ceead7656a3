"""Unpack what an offline GPU run returned, and keep in the repository only what may be committed.

    python gpu/collect_results.py GPU_OUT_DIR [--outputs outputs] [--results results] [--benchmarks benchmarks/results]

* every stage archive is unpacked, whole, into ``<outputs>/`` (git-ignored): the run folders as `fer-study list`,
  `fer-study results` and the notebooks know them;
* each study run's shareable records are copied into ``<results>/<run id>/``: params.yaml, manifest.json, summary.json
  (the statistics), per model
  metrics.json, history.csv and the curves / confusion-matrix figures, and the comparison figures. Nothing that
  shows or lists FER2013 itself is copied: no sample grids, augmentation previews or pixel statistics (faces), no
  executed notebooks or report (they embed those figures), no predictions (they hold the test labels); of the tune
  stage's folder, all four files (trials.csv, its two plots and best.yaml: numbers and parameters only);
* the bench stage's records go to ``<benchmarks>/`` (the JSON of each protocol).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import shutil
import sys
import tarfile
from pathlib import Path

MODEL_FILES = ("metrics.json", "history.csv", "train_config.json", "curves.png", "confusion_counts.png",
               "confusion_normalised.png")
SHAREABLE = ("params.yaml", "manifest.json", "summary.json",
             *(f"models/*/{name}" for name in MODEL_FILES), *(f"seeds/seed-*/models/*/{name}" for name in MODEL_FILES),
             "figures/fig4_training_curves.png", "figures/fig5_confusion_*.png", "figures/per_class_f1.png",
             "figures/test_accuracy.png", "figures/class_distribution.png", "figures/training_curves_over_seeds.png",
             "trials.csv", "optimization_history.png", "param_importances.png", "best.yaml")  # a tune folder's
"""Files of a run folder (or a tune folder) that hold numbers and plots of numbers only (checked against the run's
own file list); never faces (sample grids, augmentation previews, occlusion maps), predictions, weights or executed
notebooks."""


def shareable(relative: str) -> bool:
    return any(fnmatch.fnmatchcase(relative, pattern) for pattern in SHAREABLE)


def collect(gpu_out: Path, outputs: Path, results: Path, benchmarks: Path) -> list[str]:
    """Unpack the archives of ``gpu_out``; copy the shareable files; return what was written, one line each."""
    summary = json.loads((gpu_out / "summary.json").read_text())
    written = []
    for entry in summary["stages"]:
        archive = gpu_out / str(entry.get("archive", ""))
        if not archive.is_file():
            written.append(f"{entry['stage']}: {entry['status']} (no archive)")
            continue
        if entry["stage"] == "bench":
            benchmarks.mkdir(parents=True, exist_ok=True)
            with tarfile.open(archive) as tar:
                for member in tar.getmembers():
                    if member.isfile() and member.name.endswith(".json"):
                        target = benchmarks / Path(member.name).name
                        target.write_bytes(tar.extractfile(member).read())
                        written.append(f"bench: {target}")
            continue
        outputs.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as tar:
            tar.extractall(outputs, filter="data")
            runs = sorted({Path(name).parts[0] for name in tar.getnames()})
        for run in runs:
            source, destination = outputs / run, results / run
            count = 0
            for file in sorted(p for p in source.rglob("*") if p.is_file()):
                relative = str(file.relative_to(source))
                if shareable(relative):
                    (destination / relative).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(file, destination / relative)
                    count += 1
            written.append(f"{entry['stage']}: {entry['status']}: {source} (whole), {destination} ({count} files)")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("gpu_out", type=Path)
    parser.add_argument("--outputs", type=Path, default=Path("outputs"))
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--benchmarks", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    if not (args.gpu_out / "summary.json").is_file():
        print(f"collect_results: error: {args.gpu_out} has no summary.json: not the output of gpu/run.sh",
              file=sys.stderr)
        return 2
    for line in collect(args.gpu_out, args.outputs, args.results, args.benchmarks):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
