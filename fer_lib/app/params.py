"""The study's parameters: the single list of their names and defaults, their typed configs, and one validation.

A params mapping is flat and YAML-friendly (see ``params/*.yaml``): data keys, the list of models, per-model options,
augmentation ranges (:class:`AugmentConfig`) and training keys (:class:`TrainConfig`). :data:`STUDY_DEFAULTS` is the
only list of names: a new parameter is added there (and to its config class), and the runner, the notebooks
(:func:`for_notebook`) and the params files see it. :func:`resolve_params` checks a mapping completely at the boundary,
before anything runs; every problem is a :class:`ParamsError` whose message names the parameter and what it accepts.
Code further in receives the typed configs.

Nothing here imports Keras at module level (the runner and the reports read params without starting a backend); the
model options are checked against the model registry, which does, only when a mapping is validated.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from fer_lib.core.labels import NUM_CLASSES

OPTIMIZERS = ("adam", "adamw", "sgd")
LR_SCHEDULES = ("constant", "cosine", "step")
MONITORS = ("val_accuracy", "val_loss")
FILL_MODES = ("nearest", "reflect", "constant", "wrap")


class ParamsError(ValueError):
    """A parameter (in a params file, an override, a notebook or a call) that is unknown or has an invalid value."""


TrainConfigError = ParamsError  # the name train.py's callers know


def _require_int(name: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ParamsError(f"parameter {name} must be an integer >= {minimum}, got {value!r}")


def _require_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ParamsError(f"parameter {name} must be one of {', '.join(choices)}, got {value!r}")


def _require_number(name: str, value: Any, *, low: float, high: float = math.inf, low_inclusive: bool = True,
                    high_inclusive: bool = True) -> None:
    ok = isinstance(value, (int, float, np.floating)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value >= low if low_inclusive else value > low) and (value <= high if high_inclusive else value < high)
    if not ok:
        interval = f"{'[' if low_inclusive else '('}{low}, {high}{']' if high_inclusive else ')'}"
        raise ParamsError(f"parameter {name} must be a number in {interval}, got {value!r}")




@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Augmentation ranges, in the units of ImageDataGenerator (degrees, fractions of the image size)."""

    rotation: float = 0.0  # maximum rotation, degrees
    width_shift: float = 0.0  # maximum horizontal shift, fraction of the width
    height_shift: float = 0.0  # maximum vertical shift, fraction of the height
    zoom: float = 0.0  # zoom factor drawn from [1 - zoom, 1 + zoom] per axis
    shear: float = 0.0  # maximum shear angle, degrees
    horizontal_flip: bool = False
    fill_mode: str = "nearest"

    def __post_init__(self) -> None:
        for name in ("rotation", "width_shift", "height_shift", "zoom", "shear"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ParamsError(f"augmentation parameter {name} must be a non-negative number, got {value!r}")
        for name in ("width_shift", "height_shift", "zoom"):
            if getattr(self, name) >= 1:
                raise ParamsError(f"augmentation parameter {name} must be below 1 (a fraction), got {getattr(self, name)}")
        if self.rotation > 180 or self.shear >= 90:
            raise ParamsError(f"augmentation rotation must be at most 180 and shear below 90 degrees, got "
                             f"rotation={self.rotation}, shear={self.shear}")
        if not isinstance(self.horizontal_flip, bool):
            raise ParamsError(f"augmentation parameter horizontal_flip must be true or false, got {self.horizontal_flip!r}")
        if self.fill_mode not in FILL_MODES:
            raise ParamsError(f"augmentation parameter fill_mode must be one of {', '.join(FILL_MODES)}, "
                             f"got {self.fill_mode!r}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> AugmentConfig:
        """Build from a plain mapping (a params file), rejecting unknown names with the list of valid ones."""
        values = dict(values or {})
        valid = [field.name for field in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(valid))
        if unknown:
            raise ParamsError(f"unknown augmentation parameter(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
        return cls(**values)

    @property
    def is_identity(self) -> bool:
        return not (self.rotation or self.width_shift or self.height_shift or self.zoom or self.shear
                    or self.horizontal_flip)


PAPER_AUGMENTATION = AugmentConfig(rotation=10.0, width_shift=0.2, height_shift=0.2, zoom=0.2, shear=10.0,
                                   horizontal_flip=True)
"""The paper's ImageDataGenerator settings (shift 0.2 as stated; rotation, zoom and shear at common values)."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that decides how a model is trained (not which model, nor which data)."""

    epochs: int = 30
    batch_size: int = 64
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    lr_schedule: str = "constant"
    warmup_epochs: float = 0.0
    reduce_lr_on_plateau: bool = False
    label_smoothing: float = 0.0
    class_weights: str | tuple[float, ...] | None = None  # None, "balanced" or 7 weights in csv label order
    early_stopping_patience: int | None = None
    monitor: str = "val_accuracy"
    seed: int = 0
    mixed_precision: bool = False
    jit_compile: bool | str = "auto"
    verbose: int = 2
    backup_every_epochs: int | None = None  # write the resumable backup at least every this many epochs ...
    backup_every_seconds: float = 60.0  # ... and whenever this many seconds have passed since the last one (0: every epoch)

    def __post_init__(self) -> None:
        _require_int("epochs", self.epochs, minimum=1)
        _require_int("batch_size", self.batch_size, minimum=1)
        _require_int("seed", self.seed, minimum=0)
        _require_int("verbose", self.verbose, minimum=0)
        _require_choice("optimizer", self.optimizer, OPTIMIZERS)
        _require_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _require_choice("monitor", self.monitor, MONITORS)
        _require_number("learning_rate", self.learning_rate, low=0.0, low_inclusive=False)
        _require_number("weight_decay", self.weight_decay, low=0.0)
        _require_number("momentum", self.momentum, low=0.0, high=1.0, high_inclusive=False)
        _require_number("warmup_epochs", self.warmup_epochs, low=0.0)
        _require_number("label_smoothing", self.label_smoothing, low=0.0, high=1.0, high_inclusive=False)
        _require_number("backup_every_seconds", self.backup_every_seconds, low=0.0)
        if self.backup_every_epochs is not None:
            _require_int("backup_every_epochs", self.backup_every_epochs, minimum=1)
        for name in ("reduce_lr_on_plateau", "mixed_precision"):
            if not isinstance(getattr(self, name), bool):
                raise ParamsError(f"parameter {name} must be true or false, got {getattr(self, name)!r}")
        if self.early_stopping_patience is not None:
            _require_int("early_stopping_patience", self.early_stopping_patience, minimum=1)
        if self.jit_compile not in (True, False, "auto"):
            raise ParamsError(f"parameter jit_compile must be true, false or 'auto', "
                                   f"got {self.jit_compile!r}")
        if self.reduce_lr_on_plateau and self.lr_schedule != "constant":
            raise ParamsError(f"reduce_lr_on_plateau needs lr_schedule 'constant' (it changes the learning rate "
                                   f"itself), got lr_schedule {self.lr_schedule!r}")
        if self.warmup_epochs >= self.epochs:
            raise ParamsError(f"warmup_epochs ({self.warmup_epochs}) must be below epochs ({self.epochs})")
        weights = self.class_weights
        if weights is not None and weights != "balanced":
            if (isinstance(weights, str) or not isinstance(weights, Sequence) or len(weights) != NUM_CLASSES
                    or not all(isinstance(w, (int, float)) and not isinstance(w, bool) and w > 0 for w in weights)):
                raise ParamsError(f"parameter class_weights must be null, 'balanced' or a list of "
                                       f"{NUM_CLASSES} positive numbers (csv label order), got {weights!r}")
            object.__setattr__(self, "class_weights", tuple(float(w) for w in weights))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> TrainConfig:
        """Take the training keys of a params mapping; unknown keys are the caller's to check (see fer_lib.app.params)."""
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in names})

    def as_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        if isinstance(values["class_weights"], tuple):
            values["class_weights"] = list(values["class_weights"])
        return values


def require_config(value: Any, config_type: type, argument: str, *, optional: bool = False) -> None:
    """Code further in takes typed configs only (mappings are converted once, at the boundary).

    Anything else than a ``config_type`` (or None when ``optional``) is a :class:`TypeError` that names the argument,
    e.g. ``argument="train_model's params"``, and says how to build the config from a mapping.
    """
    if isinstance(value, config_type) or (optional and value is None):
        return
    name = config_type.__name__
    accepted = f"{'an' if name[0] in 'AEIOU' else 'a'} {name}" + (" or None" if optional else "")
    raise TypeError(f"{argument} must be {accepted}, got {type(value).__name__}; build it from a mapping with "
                    f"{name}.from_mapping(...) (or resolve a params mapping with fer_lib.app.params.resolve_params first)")


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
    "seeds": None,  # train every model once per seed (a list); null: once, with `seed`
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
    from fer_lib.core.models import MODEL_REGISTRY, check_model_options  # imports Keras: only when validating models
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
        check_model_options(model, model_options, where=f"model_options.{model}")
    seeds = params["seeds"]
    if seeds is None:
        seeds = params["seeds"] = [params["seed"]]
    if (not isinstance(seeds, list) or not seeds or len(set(seeds)) != len(seeds)
            or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds)):
        fail("seeds", "null or a non-empty list of distinct integers >= 0 (e.g. [0, 1, 2])")
    if params["seed"] not in seeds:  # `seeds` decides; `seed` is the one being trained (the first, unless set)
        params["seed"] = seeds[0]
    AugmentConfig.from_mapping(params["augmentation"])
    TrainConfig.from_mapping(params)


def seed_list(params: Mapping[str, Any]) -> list[int]:
    """The seeds of params: ``seeds``, or ``[seed]`` (also for the params.yaml of a run made before ``seeds``)."""
    return [int(s) for s in (params.get("seeds") or [params.get("seed", 0)])]


def several_seeds(params: Mapping[str, Any]) -> bool:
    """True when the run trains every model once per seed (each seed in its own sub-folder of the run)."""
    return len(seed_list(params)) > 1


def seed_folder(params: Mapping[str, Any]) -> int | None:
    """The seed whose sub-folder a model of these params trains in (fer_lib.app.runs.model_dir); None: one seed."""
    return int(params["seed"]) if several_seeds(params) else None


def data_seed(params: Mapping[str, Any]) -> int:
    """The seed that draws the data (validation carved from train, a train subset, the synthetic faces): the first
    of ``seeds``, so every seed of a run trains, selects and is tested on the same images (paired comparisons)."""
    return seed_list(params)[0]


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


def for_notebook(params_file: str | Path | None, overrides: Mapping[str, Any] | None,
                 namespace: Mapping[str, Any]) -> dict[str, Any]:
    """A notebook's resolved params: defaults, then ``params_file``, then ``overrides``, then any study parameter
    that papermill injected as a variable (``-p epochs 5``).

    The runner passes every resolved parameter in ``overrides`` (and no file); a notebook run by hand takes its cheap
    defaults from ``params_file`` (``params/notebook.yaml``), found beside the project when given relatively.
    """
    layers: list[Mapping[str, Any] | None] = []
    if params_file:
        path = Path(params_file)
        if not path.is_absolute() and not path.exists():
            from fer_lib.app.runs import project_root

            path = project_root() / "params" / path.name
        layers.append(load_params_file(path))
    layers.append(dict(overrides or {}))
    layers.append({key: value for key, value in namespace.items() if key in STUDY_DEFAULTS})
    return resolve_params(*layers)
