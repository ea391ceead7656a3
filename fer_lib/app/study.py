"""The study's per-model step: train one model on the run's data, evaluate it on val and test, save the records.

The 02_train notebook calls it with resolved params (fer_lib.app.params), which become typed configs here, once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fer_lib.core import records
from fer_lib.core.config import AugmentConfig, EvalConfig, TrainConfig, model_options
from fer_lib.core.data import FerDataset
from fer_lib.core.evaluate import evaluate_model, evaluation_batch_size, save_predictions
from fer_lib.core.train import device_count, distribution_scope, is_finished, load_finished, train_model


def run_model(params: Mapping[str, Any], model_name: str, dataset: FerDataset, model_dir: str | Path, *,
              extra_callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """Train one model, evaluate it on val and test (and test with flip and ten-view TTA), save its predictions and
    return its summary (also ``metrics.json``). Model selection uses val only."""
    model_dir = Path(model_dir)
    if is_finished(model_dir):  # a resumed run whose training had ended: evaluate the saved best model
        result = load_finished(model_dir)
    else:
        result = train_model(dataset, model_name, TrainConfig.from_mapping(params, ignore_unknown=True), model_dir,
                             model_options=model_options(model_name, params["model_options"].get(model_name)),
                             augmentation=AugmentConfig.from_mapping(params["augmentation"]),
                             extra_callbacks=extra_callbacks)
    batch = evaluation_batch_size(params["batch_size"], dataset, devices=device_count(result.distribution))
    summary: dict[str, Any] = {
        "model": model_name, "synthetic": dataset.is_synthetic, "data_source": dataset.source,
        "val_origin": dataset.val_origin, "params": int(result.model.count_params()),
        "epochs_run": int(len(result.history)), "best_epoch": result.best_epoch, "monitor": result.monitor,
        "best_val": result.best_value, "train_seconds": result.train_seconds,
        "resumed_from_epoch": result.resumed_from_epoch,
    }
    scoring = EvalConfig.from_mapping(params, ignore_unknown=True)
    for key, split_name, tta, crop in (("val", "val", False, None), ("test", "test", False, None),
                                       ("test_tta", "test", scoring.tta, None),
                                       ("test_tta10", "test", scoring.tta_crop is not None, scoring.tta_crop)):
        if split_name == "test" and key != "test" and not tta:
            continue
        split = dataset.split(split_name)
        with distribution_scope(result.distribution):  # validation's compiled predict function, on its devices
            metrics, probabilities = evaluate_model(result.model, split, tta=tta, tta_crop=crop, batch_size=batch)
        summary[key] = metrics
        save_predictions(model_dir / records.predictions_file(key), split, probabilities)
    records.write_json(model_dir / records.METRICS_FILE, summary)
    return summary
