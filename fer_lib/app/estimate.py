"""How long a study's training takes on a machine whose throughput a benchmark measured (`fer-study estimate`).

Only arithmetic on the params and the benchmark's JSON record (no data, no Keras): see :func:`model_estimate`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fer_lib.app.params import seed_list
from fer_lib.core import records
from fer_lib.core.config import EvalConfig, model_options

COMPILE_SHARE = 1.0  # a fresh machine compiles everything ...
CACHED_COMPILE_SHARE = 0.25  # ... and after the bench, whose compiles are in the persistent cache, a quarter


class EstimateError(ValueError):
    """A benchmark record that cannot answer for these params (missing file, model or field)."""


def read_bench(path: str | Path) -> dict[str, Any]:
    """A benchmark JSON record (fer_lib.app.bench) with its throughput rows by model."""
    path = Path(path)
    try:
        record = records.read_json(path)
        rows = {row["model"]: row for row in record["throughput"]}
        settings = record["settings"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise EstimateError(f"--bench '{path}' is not a benchmark record of benchmarks/bench.py "
                            f"({type(error).__name__}: {error})") from None
    return {"path": str(path), "device": record.get("device"), "settings": settings, "models": rows}


def model_estimate(params: Mapping[str, Any], model: str, bench: Mapping[str, Any], *,
                   compile_share: float = COMPILE_SHARE) -> dict[str, Any]:
    """Seconds one model of ``params`` trains (all its seeds), evaluates (val per epoch, once val and test in every
    test-time view) and compiles, at the benchmark's images/s for that model, with the assumptions made."""
    if model not in bench["models"]:
        raise EstimateError(f"the benchmark {bench['path']} has no record of {model} (it has "
                            f"{', '.join(bench['models'])}); benchmark this protocol first: python benchmarks/bench.py")
    row, settings = bench["models"][model], bench["settings"]
    seeds, batch = len(seed_list(params)), int(params["batch_size"])
    images_per_epoch = settings["n_train"] // batch * batch
    notes = []
    scale = 1.0  # the cost per image against the benchmark's: ResNet50V2's input resolution
    options = model_options(model, params["model_options"].get(model)).as_dict()
    size = options.get("input_size")
    bench_size = (row.get("model_options") or {}).get("input_size", 48) if size is not None else None
    if size is not None and size != bench_size:
        scale = (size / bench_size) ** 2
        notes.append(f"{model} at {size}x{size}: the benchmark ran at {bench_size}x{bench_size}; the cost per image is "
                     f"taken as {scale:.2f}x (the FLOPs grow with the pixels: benchmarks/results/*resolution*.json)")
    if batch != row["batch_size"] or bool(params["mixed_precision"]) != bool(row["mixed_precision"]):
        notes.append(f"{model}: the benchmark measured batch {row['batch_size']}, mixed precision "
                     f"{row['mixed_precision']}; these params use batch {batch}, mixed precision "
                     f"{params['mixed_precision']}: the images/s are taken as they are")
    measured = {**options, **(row.get("model_options") or {})}
    differ = sorted(key for key in options if key != "input_size" and measured[key] != options[key])
    if differ:
        notes.append(f"{model}: the benchmark measured other options ({', '.join(f'{k} {measured[k]}' for k in differ)}"
                     f"; here {', '.join(f'{k} {options[k]}' for k in differ)}): its images/s are taken as they are")
    scoring = EvalConfig.from_mapping(params, ignore_unknown=True)
    test_views = 1 + (2 if scoring.tta else 0) + (10 if scoring.tta_crop is not None else 0)
    seconds_per_prediction = seeds * scale / row["inference_images_per_second"]
    validation = settings["n_val"] * (params["epochs"] + 1) * seconds_per_prediction
    test = settings["n_test"] * test_views * seconds_per_prediction
    train = seeds * params["epochs"] * images_per_epoch / row["train_images_per_second"] * scale
    compiles = seeds * row["compile_seconds_estimate"] * compile_share
    return {"model": model, "seeds": seeds, "epochs": params["epochs"], "images_per_epoch": images_per_epoch,
            "train_images_per_second": row["train_images_per_second"] / scale, "train_seconds": train,
            "validation_seconds": validation, "test_seconds": test, "evaluation_seconds": validation + test,
            "compile_seconds": compiles, "total_seconds": train + validation + test + compiles, "notes": notes}


def estimate(params: Mapping[str, Any], bench: Mapping[str, Any], *,
             compile_share: float = COMPILE_SHARE) -> dict[str, Any]:
    """Every model of ``params``: :func:`model_estimate`, and the totals (models one after the other)."""
    models = [model_estimate(params, model, bench, compile_share=compile_share) for model in params["models"]]
    totals = {key: sum(m[key] for m in models) for key in ("train_seconds", "evaluation_seconds", "compile_seconds",
                                                          "total_seconds")}
    return {"params": params.get("name"), "bench": bench["path"], "device": bench["device"], "models": models, **totals}


def format_estimate(result: Mapping[str, Any]) -> str:
    """The estimate as the command prints it: a line per model, the totals, the assumptions."""
    lines = [f"estimate for '{result['params']}' on {result['device']} (from {result['bench']}):"]
    for m in result["models"]:
        lines.append(f"  {m['model']}: {m['seeds']} seed(s) x {m['epochs']} epochs x {m['images_per_epoch']:,} images "
                     f"/ {m['train_images_per_second']:,.0f} images/s = {m['train_seconds'] / 60:.1f} min training; "
                     f"evaluations {m['evaluation_seconds']:.0f} s; compiles {m['compile_seconds']:.0f} s")
    lines.append(f"  training of all models: {result['train_seconds'] / 60:.1f} min; with evaluations and compiles: "
                 f"{result['total_seconds'] / 60:.1f} min (one model after the other; the notebooks' own time not "
                 f"counted)")
    lines += [f"  note: {note}" for m in result["models"] for note in m["notes"]]
    return "\n".join(lines)
