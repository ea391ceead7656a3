"""The study's two models, built by name from their typed options (fer_lib.core.config) so params files can name them.

Both take raw 0-255 pixels and start with the augmentation stage, so augmentation runs inside the compiled graph."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import keras

from fer_lib.core.augment import build_augmentation
from fer_lib.core.config import (MODEL_OPTIONS, AugmentConfig, BasicCnnOptions, Config, ResNet50V2Options,
                                 model_options, require_config)
from fer_lib.core.labels import IMAGE_SIZE, NUM_CLASSES

INPUT_SHAPE = (IMAGE_SIZE, IMAGE_SIZE, 1)


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


CNN_BN_MOMENTUM = 0.9  # basic_cnn's BatchNorm momentum unless bn_momentum says otherwise (BasicCnnOptions says why)


def basic_cnn(inputs: Any, options: BasicCnnOptions, bn_momentum: float | None = None) -> Any:
    """The paper's basic CNN body: one block per entry of ``filters``, then dense ReLU layers; returns features."""
    momentum = CNN_BN_MOMENTUM if bn_momentum is None else bn_momentum
    regularizer = keras.regularizers.L2(options.l2) if options.l2 else None
    x = inputs
    for block, width in enumerate(options.filters, start=1):
        for conv in range(1, options.convs_per_block + 1):
            x = keras.layers.Conv2D(width, options.kernel_size, padding="same", use_bias=False,
                                    kernel_regularizer=regularizer, name=f"block{block}_conv{conv}")(x)
            x = keras.layers.BatchNormalization(momentum=momentum, name=f"block{block}_bn{conv}")(x)
            x = keras.layers.Activation("relu", name=f"block{block}_relu{conv}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
        x = keras.layers.Dropout(options.dropout, name=f"block{block}_dropout")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    for index, units in enumerate(options.dense_units, start=1):
        x = keras.layers.Dense(units, use_bias=False, kernel_regularizer=regularizer, name=f"dense{index}")(x)
        x = keras.layers.BatchNormalization(momentum=momentum, name=f"dense{index}_bn")(x)
        x = keras.layers.Activation("relu", name=f"dense{index}_relu")(x)
        x = keras.layers.Dropout(options.dense_dropout, name=f"dense{index}_dropout")(x)
    return x


def resnet50v2(inputs: Any, options: ResNet50V2Options, bn_momentum: float | None = None) -> Any:
    """keras.applications' ResNet50V2 on the input, upsampled to ``input_size`` (its last feature map is 2x2 at
    48x48); with ImageNet weights, gray replicated to RGB in [-1, 1] as it expects. Returns pooled features."""
    x = inputs
    if options.input_size != IMAGE_SIZE:
        x = keras.layers.Resizing(options.input_size, options.input_size, interpolation="bilinear",
                                  name="upsample")(x)
    if options.weights == "imagenet":
        x = keras.layers.Concatenate(axis=-1, name="gray_to_rgb")([x, x, x])
        x = keras.layers.Rescaling(2.0, offset=-1.0, name="to_minus1_1")(x)
    weights = options.weights_path if options.weights else None
    backbone = keras.applications.ResNet50V2(include_top=False, weights=weights, pooling="avg",
                                             input_shape=(options.input_size, options.input_size, x.shape[-1]))
    if bn_momentum is not None:  # None: keras.applications' 0.99
        for layer in backbone.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = bn_momentum
    x = backbone(x)
    if options.dropout:
        x = keras.layers.Dropout(options.dropout, name="head_dropout")(x)
    return x


# one builder per model of fer_lib.core.config.MODEL_OPTIONS (a test checks that the two agree)
BUILDERS: dict[str, Callable[..., Any]] = {"basic_cnn": basic_cnn, "resnet50v2": resnet50v2}


def build_model(name: str, options: Config | None = None, *, augmentation: AugmentConfig | None = None,
                mixed_precision: bool = False, seed: int | None = None,
                bn_momentum: float | None = None) -> keras.Model:
    """Build a registered model on 48x48x1 raw pixels, with the augmentation stage first and a float32 softmax;
    None means the model's default options, only the rescaling, and each model's own BatchNorm momentum."""
    options = model_options(name) if options is None else options
    require_config(options, MODEL_OPTIONS[name], f"build_model's options for {name}")
    require_config(augmentation, AugmentConfig, "build_model's augmentation", optional=True)
    if seed is not None:
        keras.utils.set_random_seed(seed)
    with _dtype_policy(mixed_precision):
        inputs = keras.Input(INPUT_SHAPE, name="pixels")
        x = build_augmentation(augmentation, seed=seed)(inputs)
        features = BUILDERS[name](x, options, bn_momentum)
        outputs = keras.layers.Dense(NUM_CLASSES, activation="softmax", dtype="float32", name="predictions")(features)
    return keras.Model(inputs, outputs, name=name)
