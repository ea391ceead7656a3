"""The paper's augmentation as one configurable Keras stage that stays XLA-compilable on every backend.

The paper uses Keras's ImageDataGenerator: rescale to [0, 1], random rotation, width/height shift (0.2), zoom, shear
and horizontal flip. Keras 3's RandomRotation/Translation/Zoom/Shear layers set ``supports_jit = False``, which makes
the whole model run eagerly on JAX (orders of magnitude slower), so all geometric changes here are drawn as one
random affine matrix per image and applied with a single ``keras.ops.image.affine_transform`` call; a random
resized crop (torchvision's RandomResizedCrop) is one more factor of that matrix. Random erasing is a second layer
that fills a random rectangle through a mask (fixed shapes, no dynamic slicing). Both run only when
``training=True``; at inference they are the identity.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
from keras import ops

from fer_lib.core.config import AugmentConfig, require_config


class _AugmentLayer(keras.layers.Layer):
    """A layer configured by the options of an :class:`AugmentConfig` (its saved config) and a seed."""

    SEED_OFFSET = 0  # added to the seed: each layer draws its own random stream

    def __init__(self, seed: int | None = None, **kwargs: Any) -> None:
        options = {key: kwargs.pop(key) for key in AugmentConfig.names() if key in kwargs}
        kwargs.setdefault("dtype", "float32")  # the warp runs in float32 even under a bf16 policy
        super().__init__(**kwargs)
        self.config = AugmentConfig(**options)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(None if seed is None else seed + self.SEED_OFFSET)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **self.config.as_dict(), "seed": self.seed}


@keras.saving.register_keras_serializable(package="fer_lib")
class RandomAffine(_AugmentLayer):
    """Random rotation, shift, zoom, shear and horizontal flip as one affine warp per image (XLA-friendly)."""

    def call(self, images: Any, training: bool | None = None) -> Any:
        config = self.config
        if not training or not (config.rotation or config.width_shift or config.height_shift or config.zoom
                                or config.shear or config.horizontal_flip or config.crops):
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
        crop_x, crop_y, crop_w, crop_h = self._random_crops(batch, width, height)
        # The crop is applied to the warped image: input = crop_centre + S_crop (A (output - centre) - shift), with
        # S_crop = diag(crop_w / width, crop_h / height) (no crop: S_crop = 1, crop_centre = centre).
        a00, a01, a10, a11 = a00 * crop_w, a01 * crop_w, a10 * crop_h, a11 * crop_h
        a02 = crop_x - a00 * center_x - a01 * center_y - crop_w * shift_x
        a12 = crop_y - a10 * center_x - a11 * center_y - crop_h * shift_y
        zeros = ops.zeros_like(theta)
        return ops.stack([a00, a01, a02, a10, a11, a12, zeros, zeros], axis=1)

    def _random_crops(self, batch: Any, width: int, height: int) -> tuple[Any, Any, Any, Any]:
        """Per image: the crop's centre (pixels) and its size as a share of the width and height.

        As torchvision's RandomResizedCrop: the area share s ~ U(crop_scale), the aspect ratio r (width / height)
        log-uniform in crop_aspect, the crop's width sqrt(s r) and height sqrt(s / r) (of the image's), placed
        uniformly inside the image. Where torchvision redraws a crop that does not fit (10 tries), r is clipped to
        [s, 1 / s] here, so every crop fits and keeps the drawn area.
        """
        config = self.config
        center_x, center_y = (width - 1) / 2.0, (height - 1) / 2.0
        if not config.crops:
            ones = ops.ones((batch,), dtype="float32")
            return ones * center_x, ones * center_y, ones, ones

        def uniform(low: float, high: float) -> Any:
            return keras.random.uniform((batch,), low, high, seed=self.seed_generator, dtype="float32")

        share = uniform(*config.crop_scale)
        log_low, log_high = math.log(config.crop_aspect[0]), math.log(config.crop_aspect[1])
        ratio = ops.clip(ops.exp(uniform(log_low, log_high)), share, 1.0 / share)
        crop_w, crop_h = ops.sqrt(share * ratio), ops.sqrt(share / ratio)
        crop_x = center_x + (uniform(-0.5, 0.5) * (1.0 - crop_w)) * width
        crop_y = center_y + (uniform(-0.5, 0.5) * (1.0 - crop_h)) * height
        return crop_x, crop_y, crop_w, crop_h


@keras.saving.register_keras_serializable(package="fer_lib")
class RandomErasing(_AugmentLayer):
    """Random erasing (Zhong et al. 2020) as torchvision's RandomErasing draws it, on [0, 1] images.

    With probability ``erasing`` per image, a rectangle of area share a ~ U(erasing_area) and aspect ratio r (height /
    width, torchvision's) log-uniform in erasing_aspect, clipped to [a, 1 / a] so it fits (torchvision redraws up to
    10 times instead), is placed uniformly inside the image and filled with ``erasing_value`` / 255 or uniform noise.
    """

    SEED_OFFSET = 1

    def call(self, images: Any, training: bool | None = None) -> Any:
        config = self.config
        if not training or not config.erasing:
            return images
        batch, height, width = ops.shape(images)[0], images.shape[1], images.shape[2]

        def uniform(low: float, high: float) -> Any:
            return keras.random.uniform((batch, 1, 1, 1), low, high, seed=self.seed_generator, dtype="float32")

        share = uniform(*config.erasing_area)
        log_low, log_high = (math.log(v) for v in config.erasing_aspect)
        ratio = ops.clip(ops.exp(uniform(log_low, log_high)), share, 1.0 / share)
        box_h, box_w = ops.sqrt(share * ratio) * height, ops.sqrt(share / ratio) * width
        top, left = uniform(0.0, 1.0) * (height - box_h), uniform(0.0, 1.0) * (width - box_w)
        rows = ops.reshape(ops.arange(height, dtype="float32"), (1, height, 1, 1)) + 0.5
        cols = ops.reshape(ops.arange(width, dtype="float32"), (1, 1, width, 1)) + 0.5
        inside = (rows >= top) & (rows < top + box_h) & (cols >= left) & (cols < left + box_w)
        chosen = uniform(0.0, 1.0) < config.erasing
        if config.erasing_value == "random":
            fill = keras.random.uniform(ops.shape(images), 0.0, 1.0, seed=self.seed_generator, dtype="float32")
        else:
            fill = ops.full_like(images, config.erasing_value / 255.0)
        return ops.where(inside & chosen, fill, images)


def build_augmentation(config: AugmentConfig | None = None, *, seed: int | None = None,
                       name: str = "preprocess") -> keras.Sequential:
    """Rescale to [0, 1], then (in training only) the random affine warp and erasing: the stage every model starts
    with. ``config`` is an :class:`AugmentConfig` (None: the identity; a mapping is a TypeError: build it with
    ``AugmentConfig.from_mapping``)."""
    require_config(config, AugmentConfig, "build_augmentation's config", optional=True)
    options = (config or AugmentConfig()).as_dict()
    return keras.Sequential([keras.layers.Rescaling(1.0 / 255.0, dtype="float32", name="rescale"),
                             RandomAffine(**options, seed=seed, name="random_affine"),
                             RandomErasing(**options, seed=seed, name="random_erasing")], name=name)


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
