"""The paper's augmentation as one configurable Keras stage that stays XLA-compilable on every backend.

The paper uses Keras's ImageDataGenerator: rescale to [0, 1], random rotation, width/height shift (0.2), zoom, shear
and horizontal flip. Keras 3's RandomRotation/Translation/Zoom/Shear layers set ``supports_jit = False``, which makes
the whole model run eagerly on JAX (orders of magnitude slower), so all geometric changes here are drawn as one
random affine matrix per image and applied with a single ``keras.ops.image.affine_transform`` call. The layer runs
only when ``training=True``; at inference it is the identity.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import keras
import numpy as np
from keras import ops

from fer_lib.core.config import AugmentConfig, require_config


@keras.saving.register_keras_serializable(package="fer_lib")
class RandomAffine(keras.layers.Layer):
    """Random rotation, shift, zoom, shear and horizontal flip as one affine warp per image (XLA-friendly)."""

    def __init__(self, rotation: float = 0.0, width_shift: float = 0.0, height_shift: float = 0.0,
                 zoom: float = 0.0, shear: float = 0.0, horizontal_flip: bool = False, fill_mode: str = "nearest",
                 seed: int | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float32")  # the warp runs in float32 even under a bf16 policy
        super().__init__(**kwargs)
        self.config = AugmentConfig(rotation=rotation, width_shift=width_shift, height_shift=height_shift, zoom=zoom,
                                    shear=shear, horizontal_flip=horizontal_flip, fill_mode=fill_mode)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images: Any, training: bool | None = None) -> Any:
        if not training or self.config.is_identity:
            return images
        batch = ops.shape(images)[0]
        height, width = images.shape[1], images.shape[2]
        transform = self._random_transforms(batch, height, width)
        return ops.image.affine_transform(images, transform, interpolation="bilinear", fill_mode=self.config.fill_mode,
                                          data_format="channels_last")

    def _random_transforms(self, batch: Any, height: int, width: int) -> Any:
        """Per-image [a0, a1, a2, b0, b1, b2, 0, 0] mapping output pixels to input pixels."""
        config = self.config

        def uniform(limit: float) -> Any:
            return keras.random.uniform((batch,), -limit, limit, seed=self.seed_generator, dtype="float32")

        theta = uniform(math.radians(config.rotation))
        shear = uniform(math.radians(config.shear))
        zoom_x = 1.0 + uniform(config.zoom)
        zoom_y = 1.0 + uniform(config.zoom)
        shift_x = uniform(config.width_shift) * width
        shift_y = uniform(config.height_shift) * height
        if config.horizontal_flip:
            coin = keras.random.uniform((batch,), 0.0, 1.0, seed=self.seed_generator, dtype="float32")
            flip = ops.where(coin < 0.5, -1.0, 1.0)
        else:
            flip = ops.ones((batch,), dtype="float32")
        cos, sin = ops.cos(theta), ops.sin(theta)
        # A = rotation @ shear @ diag(zoom_x * flip, zoom_y), shear as in ImageDataGenerator: [[1, -sin s], [0, cos s]]
        a00 = cos * zoom_x * flip
        a01 = (-cos * ops.sin(shear) - sin * ops.cos(shear)) * zoom_y
        a10 = sin * zoom_x * flip
        a11 = (-sin * ops.sin(shear) + cos * ops.cos(shear)) * zoom_y
        center_x, center_y = (width - 1) / 2.0, (height - 1) / 2.0
        a02 = center_x - a00 * center_x - a01 * center_y - shift_x
        a12 = center_y - a10 * center_x - a11 * center_y - shift_y
        zeros = ops.zeros_like(theta)
        return ops.stack([a00, a01, a02, a10, a11, a12, zeros, zeros], axis=1)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **dataclasses.asdict(self.config), "seed": self.seed}


def build_augmentation(config: AugmentConfig | None = None, *, seed: int | None = None,
                       name: str = "preprocess") -> keras.Sequential:
    """Rescale to [0, 1], then (in training only) the random affine warp: the stage every model starts with.

    ``config`` is an :class:`AugmentConfig` (None: the identity warp); a mapping is a TypeError (build it with
    ``AugmentConfig.from_mapping``).
    """
    require_config(config, AugmentConfig, "build_augmentation's config", optional=True)
    if config is None:
        config = AugmentConfig()
    return keras.Sequential(
        [keras.layers.Rescaling(1.0 / 255.0, dtype="float32", name="rescale"),
         RandomAffine(**dataclasses.asdict(config), seed=seed, name="random_affine")],
        name=name,
    )


def augment_preview(images: np.ndarray, config: AugmentConfig | None = None, *,
                    variants: int = 8, seed: int = 0) -> np.ndarray:
    """``variants`` random augmentations of each image, as floats in [0, 1] of shape (n, variants, H, W, C).

    For the notebooks' and widgets' previews: a new ``seed`` draws new augmentations. ``config`` is an
    :class:`AugmentConfig` (None: the identity warp), as for :func:`build_augmentation`.
    """
    require_config(config, AugmentConfig, "augment_preview's config", optional=True)
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise ValueError(f"augment_preview expects images of shape (n, height, width[, channels]), got {images.shape}")
    if not isinstance(variants, int) or variants < 1:
        raise ValueError(f"variants must be a positive integer, got {variants!r}")
    stage = build_augmentation(config, seed=seed)
    repeated = np.repeat(images.astype("float32"), variants, axis=0)
    augmented = np.asarray(keras.ops.convert_to_numpy(stage(repeated, training=True)))
    return np.clip(augmented, 0.0, 1.0).reshape(images.shape[0], variants, *images.shape[1:])
