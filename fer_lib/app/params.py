"""The study's parameters: the single list of their names and defaults, params files, overrides, one validation.

A params mapping is flat and YAML-friendly (``params/*.yaml``); :func:`resolve_params` checks it in full at the
boundary through the typed configs of fer_lib.core.config, without Keras, before anything runs.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from fer_lib.core.records import project_path
from fer_lib.core.config import (MODEL_OPTIONS, PAPER_AUGMENTATION, AugmentConfig, DataConfig, EvalConfig,
                                 ParamsError, TrainConfig, model_options)

__all__ = ["STUDY_DEFAULTS", "ParamsError", "for_notebook", "load_params_file", "load_yaml", "parse_override",
           "resolve_params", "resolve_params_files", "seed_folder", "seed_list", "valid_names"]

STUDY_DEFAULTS: dict[str, Any] = {
    "name": "study",  # the run folder is outputs/<YYYYmmdd-HHMMSS>-<name>
    **{key: value for key, value in DataConfig().as_dict().items() if key != "seed"},  # its seed: the first of seeds
    "models": ["basic_cnn", "resnet50v2"],
    "model_options": {},  # {model name: {option: value}}
    "augmentation": PAPER_AUGMENTATION.as_dict(),
    **EvalConfig().as_dict(),  # test-time averaging: flip (tta), ten views (tta_crop)
    "seeds": None,  # train every model once per seed (a list); null: once, with `seed`
    **TrainConfig().as_dict(),
}
NESTED = ("augmentation", "model_options")  # merged key by key across layers, not replaced


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
            if key in NESTED and isinstance(value, Mapping):
                merged = dict(params[key])
                for sub_key, sub_value in value.items():
                    both_mappings = isinstance(sub_value, Mapping) and isinstance(merged.get(sub_key), Mapping)
                    merged[sub_key] = {**merged[sub_key], **sub_value} if both_mappings else copy.deepcopy(sub_value)
                params[key] = merged
            else:
                params[key] = copy.deepcopy(value)
    _validate(params)
    return params


def _validate(params: dict[str, Any]) -> None:
    """Every value, through the typed configs; the few rules between them here."""
    def fail(name: str, expected: str) -> None:
        raise ParamsError(f"parameter {name} must be {expected}, got {params[name]!r}")

    if not isinstance(params["name"], str) or not params["name"].strip():
        fail("name", "a non-empty string")
    models = params["models"] = [params["models"]] if isinstance(params["models"], str) else params["models"]
    if not isinstance(models, list) or not models or any(m not in MODEL_OPTIONS for m in models) \
            or len(set(models)) != len(models):
        fail("models", f"a non-empty list without repeats of registered models ({', '.join(MODEL_OPTIONS)})")
    if not isinstance(params["model_options"], Mapping):
        fail("model_options", f"a mapping from model name ({', '.join(MODEL_OPTIONS)}) to a mapping of options")
    for model, options in params["model_options"].items():
        if model not in MODEL_OPTIONS:
            fail("model_options", f"a mapping from model name ({', '.join(MODEL_OPTIONS)}) to a mapping of options")
        model_options(model, options)
    seeds = params["seeds"] = [params["seed"]] if params["seeds"] is None else params["seeds"]
    if (not isinstance(seeds, list) or not seeds or len(set(map(repr, seeds))) != len(seeds)
            or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds)):
        fail("seeds", "null or a non-empty list of distinct integers >= 0 (e.g. [0, 1, 2])")
    if params["seed"] not in seeds:  # `seeds` decides; `seed` is the one being trained (the first, unless set)
        params["seed"] = seeds[0]
    DataConfig.from_mapping(params)
    EvalConfig.from_mapping(params, ignore_unknown=True)
    AugmentConfig.from_mapping(params["augmentation"])
    TrainConfig.from_mapping(params, ignore_unknown=True)


def seed_list(params: Mapping[str, Any]) -> list[int]:
    """The seeds of params: ``seeds``, or ``[seed]`` (also for the params.yaml of a run made before ``seeds``)."""
    return [int(s) for s in (params.get("seeds") or [params.get("seed", 0)])]


def seed_folder(params: Mapping[str, Any]) -> int | None:
    """The seed whose sub-folder a model of these params trains in; None: one seed, its models in ``models/``."""
    return int(params["seed"]) if len(seed_list(params)) > 1 else None


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


def override_text(value: Any) -> str:
    """A value as the one-line YAML of a ``key=value`` override, which ``parse_override`` reads back as equal."""
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("...").strip()


def parse_override(text: str) -> dict[str, Any]:
    """``key=value`` (value parsed as YAML; ``a.b=value`` sets a nested key) as a one-key mapping."""
    if "=" not in text:
        raise ParamsError(f"override {text!r} must look like name=value (e.g. epochs=2)")
    key, raw = text.split("=", 1)
    try:
        value = load_yaml(raw) if raw.strip() else None
    except yaml.YAMLError as error:
        raise ParamsError(f"override {text!r}: the value is not valid YAML ({' '.join(str(error).split())})") from None
    *parents, leaf = key.strip().split(".")
    nested: dict[str, Any] = {leaf: value}
    for parent in reversed(parents):
        nested = {parent: nested}
    return nested


def load_params_file(path: str | Path) -> dict[str, Any]:
    """Read one YAML params file; a missing or malformed file is a :class:`ParamsError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"params file '{path}' does not exist" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        values = load_yaml(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ParamsError(f"params file '{path}' is not valid YAML: {' '.join(str(error).split())}") from None
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
    return resolve_params(*layers, extra, *(parse_override(text) for text in overrides))


def for_notebook(params_file: str | Path | None, overrides: Mapping[str, Any] | None,
                 namespace: Mapping[str, Any]) -> dict[str, Any]:
    """A notebook's params: defaults, ``params_file`` (a run by hand's cheap defaults, relative to the project), then
    ``overrides`` (the runner passes every resolved parameter here), then study parameters papermill injected."""
    file_layer = [load_params_file(project_path(params_file, "params"))] if params_file else []
    return resolve_params(*file_layer, dict(overrides or {}),
                          {key: value for key, value in namespace.items() if key in STUDY_DEFAULTS})
