"""Check what an offline GPU run returned (the output folder of gpu/run.sh): used by `make gpu-rehearsal`.

    python gpu/check_results.py OUT_DIR [--stages bench,paper,strong,tune] [--backend jax] [--devices paper=2 ...]

Checks: at most 8 files, each at most 16 MiB; summary.json names every stage; each completed stage's archive holds
its results and no model weights: the bench stage a JSON record per protocol with both models' throughput, each
study stage a run folder whose manifest says status complete and the expected backend, with params.yaml, per model
(and seed) metrics.json and history.csv, and summary.json with the statistics (intervals, McNemar's test, mean and
std over seeds) and the paper's claims; the tune stage one tune folder with only trials.csv (at least 2 trials, 2
of them complete), optimization_history.png and param_importances.png (real plots, not empty files) and best.yaml
(a params file the study accepts: fer_lib.app.params resolves it); with --devices, the devices a stage trained over
(its manifest's distribution and every model's train_config.json; the bench stage's scaling rows). Prints one line
per stage; exit code 1 with the problems listed otherwise.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import tarfile
import tempfile
from pathlib import Path

import yaml

PROJECT = Path(__file__).resolve().parent.parent
MAX_FILES, MAX_BYTES = 8, 16 * 1024 * 1024
MIN_PLOT_BYTES = 10_000  # an Optuna plot with its axes and points is tens of kB; a blank or broken one is not
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def check_statistics(summary: dict, seeds: list[int]) -> list[str]:
    """The compare step's statistics: intervals and McNemar's test per seed, mean and std over several seeds, and
    the paper's claims."""
    problems = []
    per_seed = summary.get("per_seed", {}) if len(seeds) > 1 else {"the run": summary}
    if len(seeds) > 1 and sorted(per_seed) != sorted(str(s) for s in seeds):
        problems.append(f"per_seed holds seeds {sorted(per_seed)}, expected {seeds}")
    for seed, entry in per_seed.items():
        test = entry.get("splits", {}).get("test", {})
        intervals = test.get("accuracy", {})
        if not {"basic_cnn", "resnet50v2", "ensemble"} <= set(intervals):
            problems.append(f"{seed}: test intervals for {sorted(intervals)}")
        pair = next((c for c in test.get("comparisons", []) if {c["a"], c["b"]} == {"basic_cnn", "resnet50v2"}), None)
        if pair is None or not {"a_right_b_wrong", "a_wrong_b_right", "p_value"} <= set(pair["mcnemar"]):
            problems.append(f"{seed}: no McNemar test of basic_cnn vs resnet50v2 with its counts and p-value")
    if len(seeds) > 1:
        for model, entry in summary.get("over_seeds", {}).get("models", {}).items():
            accuracy = entry.get("test_accuracy") or {}
            if accuracy.get("n") != len(seeds) or accuracy.get("std") is None:
                problems.append(f"over_seeds: {model}'s test accuracy has no mean and std over {len(seeds)} seeds")
        if not summary.get("over_seeds", {}).get("comparisons"):
            problems.append("over_seeds: no paired comparison of the models")
    if len(summary.get("paper_claims", [])) != 2:
        problems.append("no verdicts on the paper's two claims")
    return problems


def check_tune(tar: tarfile.TarFile, names: list[str]) -> tuple[list[str], str]:
    """The tune stage's archive: one tune folder holding exactly the search's outputs; problems, and a summary."""
    paths = [name for name in names if tar.getmember(name).isfile()]
    folders = sorted({name.split("/")[0] for name in paths if "/" in name})
    if len(folders) != 1 or not folders[0].startswith("tune-") or any("/" not in name for name in paths):
        return [f"stage tune: expected one tune-* folder in its archive, found {folders or paths}"], ""
    sys.path.insert(0, str(PROJECT))
    from fer_lib.app import tune
    from fer_lib.app.params import ParamsError, resolve_params_files

    folder = folders[0]
    files = {name.split("/", 1)[1] for name in paths}
    problems = [f"stage tune: no {name} in {folder}" for name in tune.OUTPUTS if name not in files]
    problems += [f"stage tune: {folder} holds {name}, beyond the search's outputs" for name in sorted(files)
                 if name not in tune.OUTPUTS]
    rows: list[dict] = []
    if tune.TRIALS_CSV in files:
        rows = list(csv.DictReader(io.StringIO(tar.extractfile(f"{folder}/{tune.TRIALS_CSV}").read().decode())))
        complete = [row for row in rows if row.get("state") == "COMPLETE"]
        if len(rows) < 2 or len(complete) < 2:
            problems.append(f"stage tune: trials.csv has {len(rows)} trial(s), {len(complete)} complete; "
                            f"expected at least 2 complete")
    for plot in (tune.HISTORY_PLOT, tune.IMPORTANCES_PLOT):
        if plot in files:
            member = tar.getmember(f"{folder}/{plot}")
            if tar.extractfile(member).read(8) != PNG_SIGNATURE:
                problems.append(f"stage tune: {plot} is not a PNG file")
            elif member.size < MIN_PLOT_BYTES:
                problems.append(f"stage tune: {plot} is {member.size} bytes, too small for a plot (at least "
                                f"{MIN_PLOT_BYTES})")
    if tune.BEST_FILE in files:
        text = tar.extractfile(f"{folder}/{tune.BEST_FILE}").read().decode()
        with tempfile.TemporaryDirectory() as temporary:
            best = Path(temporary) / "best.yaml"
            best.write_text(text)
            try:
                resolve_params_files([best], [])
            except ParamsError as error:
                problems.append(f"stage tune: best.yaml is not a params file the study accepts: {error}")
    return problems, f"{folder}, {len(rows)} trials"


def check_devices(stage: str, expected: int, manifest: dict, train_configs: list[dict]) -> list[str]:
    """A study stage trained over ``expected`` devices: as its manifest planned and as every model recorded."""
    planned = (manifest.get("distribution") or {}).get("devices")
    problems = [] if planned == expected else [f"stage {stage}: manifest plans {planned} device(s), not {expected}"]
    used = sorted({(config.get("distribution") or {}).get("devices") for config in train_configs})
    if used != [expected]:
        problems.append(f"stage {stage}: models trained over {used} device(s) (train_config.json), not {expected}")
    return problems


def check(out: Path, stages: list[str], backend: str, devices: dict[str, int] | None = None) -> list[str]:
    devices = devices or {}
    problems: list[str] = []
    files = [p for p in out.rglob("*") if p.is_file()]
    if len(files) > MAX_FILES:
        problems.append(f"{len(files)} files in {out}, more than {MAX_FILES}")
    problems += [f"{p.name} is {p.stat().st_size / 2**20:.1f} MiB, over 16 MiB" for p in files
                 if p.stat().st_size > MAX_BYTES]
    summary_file = out / "summary.json"
    if not summary_file.is_file():
        return [*problems, f"no summary.json in {out}"]
    entries = {entry["stage"]: entry for entry in json.loads(summary_file.read_text())["stages"]}
    for stage in stages:
        entry = entries.get(stage)
        if entry is None:
            problems.append(f"stage {stage}: not in summary.json")
            continue
        if entry["status"] != "complete":
            problems.append(f"stage {stage}: {entry['status']} ({entry.get('note', 'see run.log')})")
            continue
        archive = out / entry.get("archive", "")
        if not archive.is_file():
            problems.append(f"stage {stage}: its archive {entry.get('archive')} is missing")
            continue
        with tarfile.open(archive) as tar:
            names = tar.getnames()
            read = lambda name: json.loads(tar.extractfile(name).read())  # noqa: E731
            weights = [n for n in names if n.endswith((".keras", ".h5"))]
            if weights:
                problems.append(f"stage {stage}: model weights in {archive.name}: {weights[:3]}")
            if stage == "bench":
                records = [read(n) for n in names if n.endswith(".json")]
                if not records:
                    problems.append("stage bench: no benchmark record in its archive")
                for record in records:
                    models = {row["model"] for row in record["throughput"]}
                    if models != {"basic_cnn", "resnet50v2"}:
                        problems.append(f"stage bench: record {record['settings']['params']} has models {models}")
                    if record["backend"] != backend:
                        problems.append(f"stage bench: backend {record['backend']}, expected {backend}")
                    if "bench" in devices and sorted({r["devices"] for r in record.get("scaling", [])}) \
                            != [devices["bench"]]:
                        problems.append(f"stage bench: no scaling rows on {devices['bench']} devices")
                print(f"check: stage bench: complete, {archive.name}, {len(records)} benchmark record(s)")
                continue
            if stage == "tune":
                found, described = check_tune(tar, names)
                problems += found
                print(f"check: stage tune: complete, {archive.name} {archive.stat().st_size / 2**20:.1f} MiB, "
                      f"{described}")
                continue
            manifests = [n for n in names if n.count("/") == 1 and n.endswith("/manifest.json")]
            if len(manifests) != 1:
                problems.append(f"stage {stage}: expected one run folder in {archive.name}, found {len(manifests)}")
                continue
            run = manifests[0].split("/")[0]
            manifest = read(manifests[0])
            if manifest.get("status") != "complete":
                problems.append(f"stage {stage}: manifest status {manifest.get('status')}")
            if manifest.get("backend") != backend:
                problems.append(f"stage {stage}: manifest backend {manifest.get('backend')}, expected {backend}")
            if f"{run}/params.yaml" not in names:
                problems.append(f"stage {stage}: no params.yaml")
            params = yaml.safe_load(tar.extractfile(f"{run}/params.yaml").read()) if f"{run}/params.yaml" in names \
                else {}
            seeds = params.get("seeds") or [params.get("seed", 0)]
            folders = [f"seeds/seed-{seed}/models" for seed in seeds] if len(seeds) > 1 else ["models"]
            for folder in folders:
                for model in manifest.get("results", {}) or ["basic_cnn", "resnet50v2"]:
                    for file in ("metrics.json", "history.csv"):
                        if f"{run}/{folder}/{model}/{file}" not in names:
                            problems.append(f"stage {stage}: no {folder}/{model}/{file}")
            if stage in devices:
                problems += check_devices(stage, devices[stage], manifest,
                                          [read(n) for n in names if n.endswith("/train_config.json")])
            if f"{run}/summary.json" not in names:
                problems.append(f"stage {stage}: no summary.json (the compare step's statistics)")
            else:
                problems += [f"stage {stage}: summary.json: {p}" for p in check_statistics(read(f"{run}/summary.json"),
                                                                                           seeds)]
        print(f"check: stage {stage}: complete, {archive.name} {archive.stat().st_size / 2**20:.1f} MiB, "
              f"{len(names)} files")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--stages", default="bench,paper,strong")
    parser.add_argument("--backend", default="jax")
    parser.add_argument("--devices", action="append", default=[], metavar="STAGE=N",
                        help="the stage trained over N devices (bench: its scaling rows)")
    args = parser.parse_args(argv)
    devices = {stage: int(count) for stage, _, count in (text.partition("=") for text in args.devices)}
    problems = check(args.out, [s for s in args.stages.split(",") if s], args.backend, devices)
    for problem in problems:
        print(f"check: PROBLEM: {problem}", file=sys.stderr)
    print(f"check: {'FAILED' if problems else 'all stages complete and within limits'}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
