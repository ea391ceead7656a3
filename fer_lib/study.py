"""The study's parameters and its per-model step: validate a params mapping, load its data, train, evaluate, save.

A params mapping is flat and YAML-friendly (see ``params/*.yaml``): data keys, the list of models, per-model options,
augmentation ranges and the training keys of :class:`fer_lib.train.TrainConfig`. :func:`resolve_params` checks it
completely before anything is trained: unknown names are rejected with the list of valid ones, wrong types and
impossible values get a message naming the parameter.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from fer_lib import runs
from fer_lib.augment import PAPER_AUGMENTATION, AugmentConfig
from fer_lib.data import (SYNTHETIC_NOTICE, FerDataset, discover_data, load_fer2013, load_synthetic,
                          subsample)
from fer_lib.evaluate import evaluate_model, evaluation_batch_size, save_json, save_predictions
from fer_lib.models import MODEL_REGISTRY, ModelConfigError, check_model_options
from fer_lib.train import TrainConfig, is_finished, load_finished, train_model


class _Yaml12Loader(yaml.SafeLoader):
    """PyYAML reads YAML 1.1, where ``3e-4`` is a string; this loader reads it as the number everyone means."""


_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^[-+]?(?:\d[\d_]*\.[\d_]*(?:[eE][-+]?\d+)?|\d[\d_]*[eE][-+]?\d+|\.\d[\d_]*(?:[eE][-+]?\d+)?
                   |\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def load_yaml(text: str) -> Any:
    """Parse YAML text with numbers such as ``3e-4`` read as floats."""
    return yaml.load(text, Loader=_Yaml12Loader)  # noqa: S506 - a SafeLoader subclass


class ParamsError(ValueError):
    """A params file or override that names an unknown parameter or gives an invalid value."""


DATA_DEFAULTS: dict[str, Any] = {
    "name": "study",
    "data": None,  # FER2013 path; None: --data, FER2013_DIR, data/fer2013, else synthetic
    "synthetic": False,  # force the synthetic demo data even when FER2013 is found
    "synthetic_train": 2000,
    "synthetic_val": 500,
    "synthetic_test": 500,
    "synthetic_balance": "balanced",
    "val_fraction": 0.1,
    "subset": None,  # train on a stratified subset of this many training images
    "resize": False,  # resize images that are not 48x48 instead of rejecting them
}
STUDY_DEFAULTS: dict[str, Any] = {
    **DATA_DEFAULTS,
    "models": ["basic_cnn", "resnet50v2"],
    "model_options": {},  # {model name: {option: value}}
    "augmentation": dataclasses.asdict(PAPER_AUGMENTATION),
    "tta": True,  # also report test accuracy with horizontal-flip test-time augmentation
    **TrainConfig().as_dict(),
}


def valid_names() -> list[str]:
    return sorted(STUDY_DEFAULTS)


def resolve_params(*layers: Mapping[str, Any] | None) -> dict[str, Any]:
    """Defaults, then each mapping in turn; validated in full. Nested ``augmentation``/``model_options`` merge."""
    params = copy.deepcopy(STUDY_DEFAULTS)
    for layer in layers:
        if layer is None:
            continue
        if not isinstance(layer, Mapping):
            raise ParamsError(f"parameters must be a mapping of name: value, got {type(layer).__name__}")
        unknown = sorted(set(layer) - set(STUDY_DEFAULTS))
        if unknown:
            raise ParamsError(f"unknown parameter(s) {', '.join(map(str, unknown))}; valid parameters: "
                              f"{', '.join(valid_names())}")
        for key, value in layer.items():
            if key in ("augmentation", "model_options") and isinstance(value, Mapping):
                merged = dict(params[key])
                for sub_key, sub_value in value.items():
                    if key == "model_options" and isinstance(sub_value, Mapping):
                        merged[sub_key] = {**merged.get(sub_key, {}), **sub_value}
                    else:
                        merged[sub_key] = sub_value
                params[key] = merged
            else:
                params[key] = copy.deepcopy(value)
    _validate(params)
    return params


def _validate(params: dict[str, Any]) -> None:
    def fail(name: str, expected: str) -> None:
        raise ParamsError(f"parameter {name} must be {expected}, got {params[name]!r}")

    if not isinstance(params["name"], str) or not params["name"].strip():
        fail("name", "a non-empty string")
    if params["data"] is not None and not isinstance(params["data"], str):
        fail("data", "a path string or null")
    if params["synthetic"] is True and params["data"] is not None:
        raise ParamsError(f"the params ask for synthetic data (synthetic: true) but also give data "
                          f"'{params['data']}'; drop one, e.g. add -p synthetic=false to use the data")
    for key in ("synthetic", "tta", "resize"):
        if not isinstance(params[key], bool):
            fail(key, "true or false")
    for key in ("synthetic_train", "synthetic_val", "synthetic_test"):
        if isinstance(params[key], bool) or not isinstance(params[key], int) or params[key] < 1:
            fail(key, "a positive integer")
    if params["subset"] is not None and (isinstance(params["subset"], bool) or not isinstance(params["subset"], int)
                                         or params["subset"] < 7):
        fail("subset", "null or an integer of at least 7 (one image per class)")
    fraction = params["val_fraction"]
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        fail("val_fraction", "a number strictly between 0 and 1")
    balance = params["synthetic_balance"]
    if balance not in ("balanced", "fer2013") and not (isinstance(balance, list) and len(balance) == 7):
        fail("synthetic_balance", "'balanced', 'fer2013' or a list of 7 weights")
    models = params["models"]
    if isinstance(models, str):
        models = params["models"] = [models]
    if not isinstance(models, list) or not models or any(m not in MODEL_REGISTRY for m in models):
        fail("models", f"a non-empty list of registered models ({', '.join(MODEL_REGISTRY)})")
    if len(set(models)) != len(models):
        fail("models", "a list without repeats")
    options = params["model_options"]
    if not isinstance(options, Mapping) or any(k not in MODEL_REGISTRY or not isinstance(v, Mapping)
                                               for k, v in options.items()):
        fail("model_options", f"a mapping from model name ({', '.join(MODEL_REGISTRY)}) to a mapping of options")
    for model, model_options in options.items():
        try:
            check_model_options(model, model_options, where=f"model_options.{model}")
        except ModelConfigError as error:
            raise ParamsError(str(error)) from None
    try:
        AugmentConfig.from_mapping(params["augmentation"])
        TrainConfig.from_mapping(params)
    except (ValueError, TypeError) as error:
        raise ParamsError(str(error)) from None


def parse_override(text: str) -> dict[str, Any]:
    """``key=value`` (value parsed as YAML; ``a.b=value`` sets a nested key) as a one-key mapping."""
    if "=" not in text:
        raise ParamsError(f"override {text!r} must look like name=value (e.g. epochs=2)")
    key, raw = text.split("=", 1)
    key = key.strip()
    try:
        value = load_yaml(raw) if raw.strip() else None
    except yaml.YAMLError as error:
        raise ParamsError(f"override {text!r}: the value is not valid YAML ({error})") from None
    *parents, leaf = key.split(".")
    nested: dict[str, Any] = {leaf: value}
    for parent in reversed(parents):
        nested = {parent: nested}
    return nested


def load_params_file(path: str | Path) -> dict[str, Any]:
    """Read one YAML params file; a missing or malformed file is a :class:`ParamsError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"params file '{path}' does not exist")
    try:
        values = load_yaml(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ParamsError(f"params file '{path}' is not valid YAML: {error}") from None
    if not isinstance(values, dict):
        raise ParamsError(f"params file '{path}' must hold a mapping of name: value, got {type(values).__name__}")
    return values


def resolve_params_files(files: Iterable[str | Path], overrides: Iterable[str] = (),
                         extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Defaults, then each params file, then ``extra``, then ``key=value`` overrides: the resolved params."""
    layers: list[Mapping[str, Any] | None] = []
    for file in files:
        try:
            layers.append(load_params_file(file))
            resolve_params(*layers)  # so that an error names the file that introduced it
        except ParamsError as error:
            raise ParamsError(f"{error} (in {file})" if str(file) not in str(error) else str(error)) from None
    layers.append(extra)
    layers.extend(parse_override(text) for text in overrides)
    return resolve_params(*layers)


def data_source(params: Mapping[str, Any], *, project_root: str | Path = ".") -> tuple[Path | None, str]:
    """Where a run's data comes from: a FER2013 path, or None for the synthetic demo; and how it was chosen."""
    if params["synthetic"]:
        return None, "synthetic data requested (synthetic: true)"
    return discover_data(params["data"], project_root=project_root)


def load_study_data(params: Mapping[str, Any], *, project_root: str | Path = ".") -> tuple[FerDataset, str]:
    """The data set a run uses, and a sentence saying where it came from (loudly, when it is synthetic)."""
    path, how = data_source(params, project_root=project_root)
    if path is None:
        dataset = load_synthetic(params["synthetic_train"], params["synthetic_val"], params["synthetic_test"],
                                 seed=params["seed"], class_balance=params["synthetic_balance"])
        how = f"{how}. {SYNTHETIC_NOTICE}"
    else:
        dataset = load_fer2013(path, val_fraction=params["val_fraction"], seed=params["seed"],
                               resize=params["resize"])
    if params["subset"] is not None:
        dataset = subsample(dataset, params["subset"], seed=params["seed"])
        how = f"{how} (train subset of {len(dataset.train)} images)"
    return dataset, how


def run_model(params: Mapping[str, Any], model_name: str, dataset: FerDataset, model_dir: str | Path,
              ) -> dict[str, Any]:
    """Train one model and evaluate it on val and test (and test with TTA); save metrics and predictions.

    Returns the run's summary (also written to ``metrics.json`` in ``model_dir``). Model selection uses val only.
    """
    model_dir = Path(model_dir)
    if is_finished(model_dir):  # a resumed run whose training had ended: evaluate the saved best model
        result = load_finished(model_dir)
    else:
        result = train_model(dataset, model_name, params, model_dir,
                             model_options=params["model_options"].get(model_name, {}),
                             augmentation=params["augmentation"])
    batch = evaluation_batch_size(params["batch_size"], dataset)
    summary: dict[str, Any] = {
        "model": model_name,
        "synthetic": dataset.is_synthetic,
        "data_source": dataset.source,
        "val_origin": dataset.val_origin,
        "params": int(result.model.count_params()),
        "epochs_run": int(len(result.history)),
        "best_epoch": result.best_epoch,
        "monitor": result.monitor,
        "best_val": result.best_value,
        "train_seconds": result.train_seconds,
        "resumed_from_epoch": result.resumed_from_epoch,
    }
    for split_name, tta in (("val", False), ("test", False), ("test", True)):
        if tta and not params["tta"]:
            continue
        split = dataset.split(split_name)
        metrics, probabilities = evaluate_model(result.model, split, tta=tta, batch_size=batch)
        key = f"{split_name}_tta" if tta else split_name
        summary[key] = metrics
        save_predictions(model_dir / f"predictions_{key}.npz", split, probabilities)
    save_json(summary, model_dir / runs.METRICS_FILE)
    return summary


def headline(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The few numbers a table of runs shows for one model."""
    test = summary["test"]
    row = {"model": summary["model"], "test_accuracy": test["accuracy"], "test_macro_f1": test["macro_f1"],
           "majority_baseline": test["majority_class_accuracy"], "epochs": summary["epochs_run"],
           "best_epoch": summary["best_epoch"], "train_seconds": summary["train_seconds"],
           "collapsed": test["collapse_warning"] is not None}
    if "test_tta" in summary:
        row["test_accuracy_tta"] = summary["test_tta"]["accuracy"]
    return row


def params_from_namespace(namespace: Mapping[str, Any]) -> dict[str, Any]:
    """The study parameters among a notebook's variables (its papermill ``parameters`` cell), resolved."""
    return resolve_params({key: value for key, value in namespace.items() if key in STUDY_DEFAULTS})
