"""The study's two models, built by name from a registry so that params files can refer to them.

* ``basic_cnn``: the paper's CNN (Fig. 1a): stacked convolution blocks with increasing filters, BatchNorm, ReLU,
  max-pooling and dropout, then a ReLU dense head and a 7-way softmax.
* ``resnet50v2``: ``keras.applications.ResNet50V2`` on 48x48 grayscale with a 7-way head. At 48x48 its last feature
  map is 2x2, so ``input_size`` can upsample the input first (e.g. 96).

Every model takes raw 0-255 pixels: it starts with the augmentation stage (rescale to [0, 1], random affine warp in
training only), so augmentation runs on the accelerator inside the compiled graph. ``mixed_precision=True`` builds
the body in bfloat16 with a float32 softmax.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import keras

from fer_lib.core.augment import build_augmentation
from fer_lib.core.labels import IMAGE_SIZE, NUM_CLASSES
from fer_lib.app.params import AugmentConfig, ParamsError, require_config

INPUT_SHAPE = (IMAGE_SIZE, IMAGE_SIZE, 1)


class ModelConfigError(ParamsError):
    """An unknown model name or an invalid model option; the message lists what is accepted."""


@contextlib.contextmanager
def _dtype_policy(mixed_precision: bool) -> Iterator[None]:
    """Build under the bf16 policy when asked, and always restore the caller's policy (no leaked global state)."""
    previous = keras.config.dtype_policy()
    if mixed_precision:
        keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _check_fraction(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ModelConfigError(f"model option {name} must be a number in [0, 1), got {value!r}")


def _check_positive_ints(name: str, values: Sequence[int]) -> None:
    if (isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values)):
        raise ModelConfigError(f"model option {name} must be a non-empty list of positive integers, got {values!r}")


def basic_cnn(inputs: Any, *, filters: Sequence[int] = (64, 128, 256, 512), convs_per_block: int = 2,
              kernel_size: int = 3, dropout: float = 0.25, dense_units: Sequence[int] = (512,),
              dense_dropout: float = 0.5, l2: float = 0.0, bn_momentum: float = 0.9) -> Any:
    """The paper's basic CNN body: one block per entry of ``filters``, then dense ReLU layers; returns features.

    ``bn_momentum`` 0.9 (Keras's default is 0.99) lets BatchNorm's inference statistics settle within the few
    hundred steps of a short run; with 0.99 a 3-epoch model evaluates at chance although it has learned.
    """
    _check_positive_ints("filters", filters)
    _check_positive_ints("dense_units", dense_units)
    _check_fraction("dropout", dropout)
    _check_fraction("dense_dropout", dense_dropout)
    _check_fraction("bn_momentum", bn_momentum)
    if not isinstance(convs_per_block, int) or convs_per_block < 1:
        raise ModelConfigError(f"model option convs_per_block must be a positive integer, got {convs_per_block!r}")
    if len(filters) > 5:
        raise ModelConfigError(f"model option filters has {len(filters)} blocks; at most 5 fit a 48x48 input "
                               f"(each block halves the size)")
    regularizer = keras.regularizers.L2(l2) if l2 else None
    x = inputs
    for block, width in enumerate(filters, start=1):
        for conv in range(1, convs_per_block + 1):
            x = keras.layers.Conv2D(width, kernel_size, padding="same", use_bias=False, kernel_regularizer=regularizer,
                                    name=f"block{block}_conv{conv}")(x)
            x = keras.layers.BatchNormalization(momentum=bn_momentum, name=f"block{block}_bn{conv}")(x)
            x = keras.layers.Activation("relu", name=f"block{block}_relu{conv}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
        x = keras.layers.Dropout(dropout, name=f"block{block}_dropout")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    for index, units in enumerate(dense_units, start=1):
        x = keras.layers.Dense(units, use_bias=False, kernel_regularizer=regularizer, name=f"dense{index}")(x)
        x = keras.layers.BatchNormalization(momentum=bn_momentum, name=f"dense{index}_bn")(x)
        x = keras.layers.Activation("relu", name=f"dense{index}_relu")(x)
        x = keras.layers.Dropout(dense_dropout, name=f"dense{index}_dropout")(x)
    return x


def resnet50v2(inputs: Any, *, input_size: int = IMAGE_SIZE, weights: str | None = None,
               weights_path: str | None = None, dropout: float = 0.0, bn_momentum: float | None = None) -> Any:
    """ResNet50V2 from keras.applications on (optionally upsampled) input; returns pooled features.

    ``weights="imagenet"`` needs ``weights_path``, a local no-top weights file (nothing is downloaded): the grayscale
    input is then replicated to 3 channels and scaled to [-1, 1] as ResNet50V2 expects. ``bn_momentum`` replaces
    keras.applications' BatchNorm momentum (0.99) in every block, e.g. 0.9 for runs of a few hundred steps, whose
    inference statistics would otherwise still be near their initial values (see ``basic_cnn``).
    """
    if not isinstance(input_size, int) or isinstance(input_size, bool) or input_size < 32:
        raise ModelConfigError(f"model option input_size must be an integer of at least 32, got {input_size!r}")
    _check_fraction("dropout", dropout)
    if weights not in (None, "imagenet"):
        raise ModelConfigError(f"model option weights must be null (train from scratch) or 'imagenet', got {weights!r}")
    x = inputs
    if input_size != IMAGE_SIZE:
        x = keras.layers.Resizing(input_size, input_size, interpolation="bilinear", name="upsample")(x)
    channels = 1
    if weights == "imagenet":
        if not weights_path:
            raise ModelConfigError("resnet50v2 with weights='imagenet' needs weights_path, a local file of "
                                   "ResNet50V2 ImageNet no-top weights (resnet50v2_weights_tf_dim_ordering_tf_kernels_"
                                   "notop.h5); nothing is downloaded. Use weights=null to train from scratch.")
        if not os.path.isfile(weights_path):
            raise ModelConfigError(f"weights_path '{weights_path}' does not exist; expected a local ResNet50V2 "
                                   f"ImageNet no-top weights file (.h5)")
        x = keras.layers.Concatenate(axis=-1, name="gray_to_rgb")([x, x, x])
        x = keras.layers.Rescaling(2.0, offset=-1.0, name="to_minus1_1")(x)
        channels = 3
    backbone = keras.applications.ResNet50V2(include_top=False, weights=weights_path if weights else None,
                                             input_shape=(input_size, input_size, channels), pooling="avg")
    if bn_momentum is not None:
        _check_fraction("bn_momentum", bn_momentum)
        for layer in backbone.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = bn_momentum
    x = backbone(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    return x


MODEL_REGISTRY: dict[str, Callable[..., Any]] = {"basic_cnn": basic_cnn, "resnet50v2": resnet50v2}


def check_model_options(name: str, options: Mapping[str, Any], *, where: str | None = None) -> None:
    """Reject an unknown model or option names (values are checked when the model is built).

    ``where`` names the place in a params file (e.g. ``model_options.basic_cnn``) for the message.
    """
    if name not in MODEL_REGISTRY:
        raise ModelConfigError(f"unknown model {name!r}; registered models: {', '.join(MODEL_REGISTRY)}")
    accepted = [p for p in inspect.signature(MODEL_REGISTRY[name]).parameters if p != "inputs"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        place = f"in {where}" if where else f"for model {name!r}"
        raise ModelConfigError(f"unknown option(s) {', '.join(unknown)} {place}; valid: {', '.join(accepted)}")


def build_model(name: str, *, augmentation: AugmentConfig | None = None,
                mixed_precision: bool = False, seed: int | None = None, num_classes: int = NUM_CLASSES,
                **options: Any) -> keras.Model:
    """Build a registered model on 48x48x1 raw pixels, with the augmentation stage first and a float32 softmax.

    ``augmentation`` is an :class:`AugmentConfig` (None: no augmentation, only the rescaling); a mapping is a
    TypeError (build it with ``AugmentConfig.from_mapping``).
    """
    require_config(augmentation, AugmentConfig, "build_model's augmentation", optional=True)
    check_model_options(name, options)
    body = MODEL_REGISTRY[name]
    if seed is not None:
        keras.utils.set_random_seed(seed)
    with _dtype_policy(mixed_precision):
        inputs = keras.Input(INPUT_SHAPE, name="pixels")
        x = build_augmentation(augmentation, seed=seed)(inputs)
        features = body(x, **options)
        outputs = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions")(features)
    return keras.Model(inputs, outputs, name=name)
