"""The study's typed configs and the rule of every parameter, in one leaf module without Keras.

Building a config checks every field (:func:`spec`), so a config that exists is valid. Every problem is one
:class:`ParamsError`: ``parameter <name> must be <what is accepted>, got <value>``, named as a params file spells it.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Self

from fer_lib.core.labels import IMAGE_SIZE, NUM_CLASSES


class ParamsError(ValueError):
    """A parameter (in a params file, an override, a notebook or a call) that is unknown or has an invalid value."""


class _Invalid(Exception):
    """Raised by a rule with what it accepts; the config turns it into a ParamsError naming the parameter."""


Rule = Callable[[Any], Any]  # value -> checked (possibly normalised) value, or raises _Invalid(expected)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _rule(expected: str, accepts: Callable[[Any], Any], convert: Callable[[Any], Any] = lambda value: value) -> Rule:
    """A rule that returns ``convert(value)`` for a value that ``accepts``, else refuses it as ``expected`` (also its
    ``__doc__``: :func:`interval` names its ends' rule by it)."""
    def check(value: Any) -> Any:
        if not accepts(value):
            raise _Invalid(expected)
        return convert(value)
    check.__doc__ = expected
    return check


def integer(low: int, high: int | None = None) -> Rule:
    return _rule(f"an integer >= {low}" if high is None else f"an integer in {low}..{high}",
                 lambda value: isinstance(value, int) and not isinstance(value, bool) and value >= low
                 and (high is None or value <= high), int)


def number(low: float, high: float = math.inf, *, open_low: bool = False, open_high: bool = False) -> Rule:
    return _rule(f"a number in {'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}",
                 lambda value: _is_number(value) and (value > low if open_low else value >= low)
                 and (value < high if open_high else value <= high), float)


fraction: Rule = number(0.0, 1.0, open_high=True)  # a share in [0, 1): dropout rates, momentum
boolean: Rule = _rule("true or false", lambda value: isinstance(value, bool))
text: Rule = _rule("a non-empty string", lambda value: isinstance(value, str) and value.strip())


def choice(*options: Any) -> Rule:
    return _rule("one of " + ", ".join("null" if o is None else str(o) for o in options),
                 lambda value: any(value == option and type(value) is type(option) for option in options))


def either(literals: tuple[Any, ...], rule: Rule, expected: str) -> Rule:
    """One of ``literals`` as it is, or a value ``rule`` accepts; anything else is refused as ``expected``."""
    def check(value: Any) -> Any:
        if any(value is None if literal is None else value == literal for literal in literals):
            return value
        try:
            return rule(value)
        except _Invalid:
            raise _Invalid(expected) from None
    return check


def optional(rule: Rule) -> Rule:
    """``rule``, or null."""
    def check(value: Any) -> Any:
        if value is None:
            return None
        try:
            return rule(value)
        except _Invalid as invalid:
            raise _Invalid(f"null or {invalid}") from None
    return check


def numbers(count: int | None = None, *, positive: bool = False, integers: bool = False,
            max_count: int | None = None) -> Rule:
    """A list of numbers (as a tuple): ``count`` of them, or a non-empty list of at most ``max_count``."""
    kind = ("positive " if positive else "") + ("integers" if integers else "numbers")
    expected = f"a list of {count} {kind}" if count else f"a non-empty list of {kind}" + (
        f" (at most {max_count})" if max_count else "")
    return _rule(expected, lambda value: (
        not isinstance(value, (str, bytes)) and isinstance(value, Sequence) and len(value) > 0
        and (count is None or len(value) == count) and (max_count is None or len(value) <= max_count)
        and all(_is_number(v) and (not integers or isinstance(v, int)) and (not positive or v > 0) for v in value)),
        tuple)


def interval(low: float, high: float = math.inf, *, open_low: bool = True, open_high: bool = False) -> Rule:
    """A range ``[lo, hi]`` (as a tuple) with ``lo <= hi``, both in the given bounds."""
    bound = number(low, high, open_low=open_low, open_high=open_high)
    expected = f"a list [low, high] with low <= high, both {bound.__doc__.removeprefix('a ')}"

    def check(value: Any) -> tuple[float, float]:
        try:
            lo, hi = map(bound, numbers(2)(value))
        except (_Invalid, ValueError):
            raise _Invalid(expected) from None
        if lo > hi:
            raise _Invalid(expected)
        return lo, hi
    return check


def spec(default: Any, rule: Rule) -> Any:
    """A dataclass field with its default and the rule every value is checked against."""
    return dataclasses.field(default=default, metadata={"rule": rule})


@dataclasses.dataclass(frozen=True)
class Config:
    """A frozen, self-checking set of parameters; ``section`` prefixes their names in messages."""

    section: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            rule = field.metadata.get("rule", lambda value: value)
            value = getattr(self, field.name)
            try:
                object.__setattr__(self, field.name, rule(value))
            except _Invalid as invalid:
                raise ParamsError(f"parameter {self.section}{field.name} must be {invalid}, got {value!r}") from None
        self.check()

    def check(self) -> None:
        """Rules between fields (each config states its own)."""

    def fail(self, message: str) -> None:
        raise ParamsError(message)

    @classmethod
    def names(cls) -> list[str]:
        return [field.name for field in dataclasses.fields(cls)]

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None, *, ignore_unknown: bool = False) -> Self:
        """Build from a plain mapping (a params file); unknown names are refused with the list of valid ones."""
        if values is not None and not isinstance(values, Mapping):
            raise ParamsError(f"parameter {cls.section.rstrip('.') or 'params'} must be a mapping of name: value, "
                              f"got {values!r}")
        values = dict(values or {})
        unknown = sorted(set(values) - set(cls.names()))
        if unknown and not ignore_unknown:
            where = f" in {cls.section.rstrip('.')}" if cls.section else ""
            raise ParamsError(f"unknown parameter(s) {', '.join(map(str, unknown))}{where}; valid: "
                              f"{', '.join(cls.names())}")
        return cls(**{key: value for key, value in values.items() if key in cls.names()})

    def as_dict(self) -> dict[str, Any]:
        """Plain YAML/JSON types (lists, not tuples)."""
        return {key: list(value) if isinstance(value, tuple) else value
                for key, value in dataclasses.asdict(self).items()}


# --- Data, augmentation, training ----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class DataConfig(Config):
    """Which images a run uses and how its splits are drawn (fer_lib.core.data.load_study_data)."""

    data: str | None = spec(None, optional(text))  # FER2013 path; None: $FER2013_DIR, data/fer2013, else synthetic
    synthetic: bool = spec(False, boolean)  # the synthetic demo faces even when FER2013 is found
    synthetic_train: int = spec(2000, integer(1))
    synthetic_val: int = spec(500, integer(1))
    synthetic_test: int = spec(500, integer(1))
    synthetic_balance: str | list[float] = spec("balanced", either(
        ("balanced", "fer2013"), lambda value: list(numbers(NUM_CLASSES, positive=True)(value)),
        f"'balanced', 'fer2013' or a list of {NUM_CLASSES} positive weights"))
    val_fraction: float = spec(0.1, number(0.0, 1.0, open_low=True, open_high=True))  # of train/, without val/
    subset: int | None = spec(None, optional(integer(NUM_CLASSES)))  # a stratified subset of the training split
    resize: bool = spec(False, boolean)  # resize images that are not 48x48 instead of refusing them
    seed: int = spec(0, integer(0))  # draws the validation split, the subset and the synthetic faces

    def check(self) -> None:
        if self.synthetic and self.data is not None:
            self.fail(f"the params ask for synthetic data (synthetic: true) but also give data '{self.data}'; drop "
                      f"one, e.g. add -p synthetic=false to use the data")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None, *, ignore_unknown: bool = True) -> DataConfig:
        """The data keys of a params mapping; the seed is the first of ``seeds``: every seed sees the same images."""
        values = dict(values or {})
        seeds = values.get("seeds")
        if isinstance(seeds, list) and seeds:
            values["seed"] = seeds[0]
        return super().from_mapping(values, ignore_unknown=ignore_unknown)


@dataclasses.dataclass(frozen=True)
class AugmentConfig(Config):
    """Augmentation ranges, in the units of ImageDataGenerator (degrees, fractions of the image size)."""

    section: ClassVar[str] = "augmentation."
    rotation: float = spec(0.0, number(0.0, 180.0))  # maximum rotation, degrees
    width_shift: float = spec(0.0, fraction)  # maximum horizontal shift, fraction of the width
    height_shift: float = spec(0.0, fraction)  # maximum vertical shift, fraction of the height
    zoom: float = spec(0.0, fraction)  # zoom factor drawn from [1 - zoom, 1 + zoom] per axis
    shear: float = spec(0.0, number(0.0, 90.0, open_high=True))  # maximum shear angle, degrees
    horizontal_flip: bool = spec(False, boolean)
    fill_mode: str = spec("nearest", choice("nearest", "reflect", "constant", "wrap"))
    # A random resized crop (torchvision's RandomResizedCrop) of this share of the area and aspect ratio (width /
    # height), resized to the image. [1, 1]: none.
    crop_scale: tuple[float, float] = spec((1.0, 1.0), interval(0.0, 1.0))
    crop_aspect: tuple[float, float] = spec((1.0, 1.0), interval(0.0))
    # Random erasing (Zhong et al. 2020): with this probability a rectangle of this share of the area and aspect
    # ratio is filled with erasing_value (a pixel value 0-255, or 'random': noise).
    erasing: float = spec(0.0, number(0.0, 1.0))
    erasing_area: tuple[float, float] = spec((0.02, 0.33), interval(0.0, 1.0, open_high=True))
    erasing_aspect: tuple[float, float] = spec((0.3, 3.3), interval(0.0))
    erasing_value: float | str = spec(0.0, either(("random",), number(0.0, 255.0),
                                                  "a pixel value in [0, 255] or 'random'"))

    def check(self) -> None:
        if self.crop_aspect != (1.0, 1.0) and not self.crops:
            self.fail("parameter augmentation.crop_aspect needs augmentation.crop_scale below [1, 1]: a crop of the "
                      "whole image has the image's aspect ratio")

    @property
    def crops(self) -> bool:
        return self.crop_scale != (1.0, 1.0)

    @property
    def is_identity(self) -> bool:
        return not (self.rotation or self.width_shift or self.height_shift or self.zoom or self.shear
                    or self.horizontal_flip or self.crops or self.erasing)


PAPER_AUGMENTATION = AugmentConfig(rotation=10.0, width_shift=0.2, height_shift=0.2, zoom=0.2, shear=10.0,
                                   horizontal_flip=True)
"""The paper's ImageDataGenerator settings (shift 0.2 as stated; rotation, zoom and shear at common values)."""

# The launchers of a multi-machine run, as keras.distribution.initialize (the first) and JAX find them: launcher ->
# (its process count, a variable only a launched process has). Under srun and mpirun JAX gives each process one
# device (its local rank); Keras's own variables leave each all of its machine's.
LAUNCHERS = {"keras": ("KERAS_DISTRIBUTION_NUM_PROCESSES", "KERAS_DISTRIBUTION_PROCESS_ID"),
             "slurm": ("SLURM_NTASKS", "SLURM_STEP_NODELIST"),
             "openmpi": ("OMPI_COMM_WORLD_SIZE", "OMPI_MCA_orte_hnp_uri")}


def launch_from_environment(environ: Mapping[str, str] | None = None) -> tuple[int, str | None]:
    """(processes, launcher) of a multi-machine run as its launcher announces it, or (1, None): no backend needed."""
    environ = os.environ if environ is None else environ
    for launcher, (count, marker) in LAUNCHERS.items():
        text = environ.get(count, "").strip()
        if text.isdigit() and int(text) > 1 and marker in environ:
            return int(text), launcher
    return 1, None


@dataclasses.dataclass(frozen=True)
class TrainConfig(Config):
    """Everything that decides how a model is trained (not which model, nor which data)."""

    epochs: int = spec(30, integer(1))
    batch_size: int = spec(64, integer(1))
    optimizer: str = spec("adam", choice("adam", "adamw", "sgd"))
    learning_rate: float = spec(1e-3, number(0.0, open_low=True))
    weight_decay: float = spec(0.0, number(0.0))
    momentum: float = spec(0.9, fraction)  # sgd
    lr_schedule: str = spec("constant", choice("constant", "cosine", "step"))
    warmup_epochs: float = spec(0.0, number(0.0))
    reduce_lr_on_plateau: bool = spec(False, boolean)  # multiply the rate by plateau_factor when `monitor` has not
    plateau_factor: float = spec(0.5, number(0.0, 1.0, open_low=True, open_high=True))  # improved for
    plateau_patience: int = spec(3, integer(1))  # plateau_patience epochs (Keras's ReduceLROnPlateau)
    clip_norm: float | None = spec(None, optional(number(0.0, open_low=True)))  # clip the gradients' global norm
    decay_kernels_only: bool = spec(False, boolean)  # weight decay on kernels only, not on biases and BatchNorm
    ema: bool = spec(False, boolean)  # validate, select and save an exponential moving average of the weights
    ema_momentum: float = spec(0.999, fraction)  # ... ema_w = m * ema_w + (1 - m) * w after every step
    mixup_alpha: float = spec(0.0, number(0.0))  # mixup (Zhang et al. 2018): Beta(alpha, alpha) mixing; 0: off
    cutmix_alpha: float = spec(0.0, number(0.0))  # cutmix (Yun et al. 2019): a pasted box of Beta(alpha, alpha); 0: off
    mix_probability: float = spec(1.0, number(0.0, 1.0))  # share of batches mixed (with both on: half by each)
    bn_momentum: float | None = spec(None, optional(fraction))  # every BatchNorm of the model; null: the model's own
    label_smoothing: float = spec(0.0, fraction)
    class_weights: str | tuple[float, ...] | None = spec(None, either(
        (None, "balanced"), numbers(NUM_CLASSES, positive=True),
        f"null, 'balanced' or a list of {NUM_CLASSES} positive numbers (csv label order)"))
    early_stopping_patience: int | None = spec(None, optional(integer(1)))
    monitor: str = spec("val_accuracy", choice("val_accuracy", "val_loss"))
    seed: int = spec(0, integer(0))
    mixed_precision: bool = spec(False, boolean)
    jit_compile: bool | str = spec("auto", choice(True, False, "auto"))
    verbose: int = spec(2, integer(0, 2))
    backup_every_epochs: int | None = spec(None, optional(integer(1)))  # the resumable backup at least this often ...
    backup_every_seconds: float = spec(60.0, number(0.0))  # ... and whenever this many seconds passed (0: every epoch)
    distribution: str | int = spec("auto", either(  # keras.distribution.DataParallel over devices (JAX)
        ("auto", "none", "data_parallel"), integer(1),
        "auto, none, data_parallel or a number of devices (an integer >= 1)"))

    def check(self) -> None:
        if self.reduce_lr_on_plateau and self.lr_schedule != "constant":
            self.fail(f"parameter reduce_lr_on_plateau needs lr_schedule 'constant' (it changes the learning rate "
                      f"itself), got lr_schedule {self.lr_schedule!r}")
        if (self.mixup_alpha or self.cutmix_alpha) and self.class_weights is not None:
            self.fail("parameter class_weights must be null with mixup_alpha or cutmix_alpha (a mixed image has two "
                      "classes)")
        if self.warmup_epochs >= self.epochs:
            self.fail(f"parameter warmup_epochs must be below epochs ({self.epochs}), got {self.warmup_epochs}")

    def distribution_devices(self, devices: int, accelerators: int, processes: int = 1, *,
                             backend: str = "jax") -> int:
        """How many of every process's ``devices`` (``accelerators`` of them GPUs or TPUs) the run's DataParallel spans
        (1: none): one rule for the supervising process and the training loop. Only JAX's DataParallel is complete."""
        setting = self.distribution
        if backend != "jax":
            if setting in ("auto", "none", 1):
                return 1
            self.fail(f"parameter distribution must be auto or none on the {backend} backend (a run trains over "
                      f"several devices on JAX: KERAS_BACKEND=jax), got {setting!r}")
        if processes > 1 and setting not in ("auto", "data_parallel"):
            self.fail(f"parameter distribution must be auto or data_parallel in a run of {processes} processes "
                      f"(each trains a share of every batch), got {setting!r}")
        if setting == "none":
            return 1
        if setting == "auto":
            return devices if processes > 1 else (accelerators if accelerators >= 2 else 1)
        if setting == "data_parallel":
            return devices
        if setting > devices:
            self.fail(f"parameter distribution must be at most the {devices} device(s) JAX sees here, got {setting}")
        return setting

    def check_device_count(self, devices: int) -> None:
        """DataParallel splits each batch evenly and pads nothing: the global batch must divide by the devices."""
        if self.batch_size % devices:
            self.fail(f"parameter batch_size must be divisible by the {devices} devices of distribution "
                      f"{self.distribution} (each trains an equal share of a batch), got {self.batch_size}; use e.g. "
                      f"-p batch_size={max(devices, round(self.batch_size / devices) * devices)}")

    def check_training_split(self, n_train: int) -> None:
        """Training uses full batches only: the split must hold at least one."""
        if self.batch_size > n_train:
            self.fail(f"parameter batch_size must be at most the training split's {n_train} images, got "
                      f"{self.batch_size}; use e.g. -p batch_size={max(1, min(n_train, 64))}")


@dataclasses.dataclass(frozen=True)
class EvalConfig(Config):
    """How the test split is scored besides the plain images: test-time averaging of the probabilities."""

    tta: bool = spec(True, boolean)  # also the mean over each image and its mirror (test_tta)
    # also the mean over ten views (test_tta10): the four corner crops and the centre crop of tta_crop pixels, each
    # resized to 48x48, and their mirrors (torchvision's TenCrop, as in Khaireddin & Chen 2021); null: not
    tta_crop: int | None = spec(None, optional(integer(24, 47)))


# --- The models' options (fer_lib.core.models builds each from its own) --------------------------------------------
@dataclasses.dataclass(frozen=True)
class BasicCnnOptions(Config):
    """The paper's basic CNN (Fig. 1a): per filter width ``convs_per_block`` conv-BN-ReLU and a max-pool, then dense
    layers. BatchNorm momentum 0.9 unless ``bn_momentum`` is set: Keras's 0.99 leaves a 3-epoch model at chance."""

    section: ClassVar[str] = "model_options.basic_cnn."
    # each block halves the image: at most five take 48 pixels to 1
    filters: tuple[int, ...] = spec((64, 128, 256, 512), numbers(positive=True, integers=True, max_count=5))
    convs_per_block: int = spec(2, integer(1))
    kernel_size: int = spec(3, integer(1, IMAGE_SIZE))
    dropout: float = spec(0.25, fraction)
    dense_units: tuple[int, ...] = spec((512,), numbers(positive=True, integers=True))
    dense_dropout: float = spec(0.5, fraction)
    l2: float = spec(0.0, number(0.0))


@dataclasses.dataclass(frozen=True)
class ResNet50V2Options(Config):
    """``keras.applications.ResNet50V2`` on (optionally upsampled) 48x48 input: at 48 its last map is 2x2.
    ``weights: imagenet`` needs ``weights_path``, a local no-top weights file (nothing is downloaded)."""

    section: ClassVar[str] = "model_options.resnet50v2."
    input_size: int = spec(IMAGE_SIZE, integer(32))
    weights: str | None = spec(None, choice(None, "imagenet"))
    weights_path: str | None = spec(None, optional(text))
    dropout: float = spec(0.0, fraction)

    def check(self) -> None:
        if self.weights == "imagenet" and not self.weights_path:
            self.fail("parameter model_options.resnet50v2.weights_path must be a local file of ResNet50V2 ImageNet "
                      "no-top weights (resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5) when weights is "
                      "'imagenet'; nothing is downloaded. Use weights: null to train from scratch")
        if self.weights_path and not os.path.isfile(self.weights_path):
            self.fail(f"parameter model_options.resnet50v2.weights_path must be an existing file, got "
                      f"'{self.weights_path}' (it does not exist)")


MODEL_OPTIONS: dict[str, type[Config]] = {"basic_cnn": BasicCnnOptions, "resnet50v2": ResNet50V2Options}
"""The study's models by name, each with its options (fer_lib.core.models has a builder for each)."""


def model_options(name: str, values: Mapping[str, Any] | None = None) -> Config:
    """The typed options of model ``name`` from a mapping (``model_options.<name>`` of a params file)."""
    if name not in MODEL_OPTIONS:
        raise ParamsError(f"unknown model {name!r}; registered models: {', '.join(MODEL_OPTIONS)}")
    if values is not None and not isinstance(values, Mapping):
        raise ParamsError(f"parameter model_options.{name} must be a mapping of option: value, got {values!r}")
    return MODEL_OPTIONS[name].from_mapping(values)


def require_config(value: Any, config_type: type | tuple[type, ...], argument: str, *,
                   optional: bool = False) -> None:
    """Code further in takes typed configs only: anything else is a TypeError naming the argument and the remedy."""
    if isinstance(value, config_type) or (optional and value is None):
        return
    names = " or ".join(t.__name__ for t in (config_type if isinstance(config_type, tuple) else (config_type,)))
    article = "an" if names[0] in "AEIOU" else "a"
    raise TypeError(f"{argument} must be {article} {names}{' or None' if optional else ''}, got "
                    f"{type(value).__name__}; build it from a mapping with {names.split(' or ')[0]}.from_mapping "
                    f"(or resolve a params mapping with fer_lib.app.params.resolve_params first)")
