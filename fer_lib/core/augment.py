"""The paper's augmentation (ImageDataGenerator's) as one configurable Keras stage, XLA-compilable on every backend.

Keras 3's RandomRotation/Translation/Zoom/Shear set ``supports_jit = False`` (the whole model then runs eagerly on
JAX), so every geometric change, crops included, is one random affine matrix per image; erasing fills a mask.
Training only."""

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

    def _uniform(self, shape: Any, low: float, high: float) -> Any:
        return keras.random.uniform(shape, low, high, seed=self.seed_generator, dtype="float32")

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
        transform = self._random_transforms(ops.shape(images)[0], images.shape[1], images.shape[2])
        return ops.image.affine_transform(images, transform, interpolation="bilinear", fill_mode=config.fill_mode,
                                          data_format="channels_last")

    def _random_transforms(self, batch: Any, height: int, width: int) -> Any:
        """Per-image [a0, a1, a2, b0, b1, b2, 0, 0] mapping output pixels to input pixels."""
        config = self.config

        def uniform(limit: float) -> Any:
            return self._uniform((batch,), -limit, limit)

        theta = uniform(math.radians(config.rotation))
        shear = uniform(math.radians(config.shear))
        zoom_x = 1.0 + uniform(config.zoom)
        zoom_y = 1.0 + uniform(config.zoom)
        shift_x = uniform(config.width_shift) * width
        shift_y = uniform(config.height_shift) * height
        flip = ops.ones((batch,), dtype="float32")
        if config.horizontal_flip:
            flip = ops.where(self._uniform((batch,), 0.0, 1.0) < 0.5, -1.0, 1.0)
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
        """Per image, torchvision's RandomResizedCrop: its centre (pixels) and size (shares of width and height);
        where torchvision redraws a crop that does not fit, the aspect ratio is clipped to [s, 1 / s] so it fits."""
        config = self.config
        center_x, center_y = (width - 1) / 2.0, (height - 1) / 2.0
        if not config.crops:
            ones = ops.ones((batch,), dtype="float32")
            return ones * center_x, ones * center_y, ones, ones

        share = self._uniform((batch,), *config.crop_scale)
        log_low, log_high = math.log(config.crop_aspect[0]), math.log(config.crop_aspect[1])
        ratio = ops.clip(ops.exp(self._uniform((batch,), log_low, log_high)), share, 1.0 / share)
        crop_w, crop_h = ops.sqrt(share * ratio), ops.sqrt(share / ratio)
        crop_x = center_x + (self._uniform((batch,), -0.5, 0.5) * (1.0 - crop_w)) * width
        crop_y = center_y + (self._uniform((batch,), -0.5, 0.5) * (1.0 - crop_h)) * height
        return crop_x, crop_y, crop_w, crop_h


@keras.saving.register_keras_serializable(package="fer_lib")
class RandomErasing(_AugmentLayer):
    """Random erasing (Zhong et al. 2020) as torchvision's RandomErasing draws it, on [0, 1] images; the aspect ratio
    is clipped so the box fits where torchvision redraws it, and it is filled with ``erasing_value`` / 255 or noise."""

    SEED_OFFSET = 1

    def call(self, images: Any, training: bool | None = None) -> Any:
        config = self.config
        if not training or not config.erasing:
            return images
        batch, height, width = ops.shape(images)[0], images.shape[1], images.shape[2]

        def uniform(low: float, high: float) -> Any:
            return self._uniform((batch, 1, 1, 1), low, high)

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
            fill = self._uniform(ops.shape(images), 0.0, 1.0)
        else:
            fill = ops.full_like(images, config.erasing_value / 255.0)
        return ops.where(inside & chosen, fill, images)


def build_augmentation(config: AugmentConfig | None = None, *, seed: int | None = None,
                       name: str = "preprocess") -> keras.Sequential:
    """Rescale to [0, 1], then (in training only) the random affine warp and erasing: the stage every model starts
    with (``config`` None: the identity; a mapping is a TypeError: build it with ``AugmentConfig.from_mapping``)."""
    require_config(config, AugmentConfig, "build_augmentation's config", optional=True)
    options = (config or AugmentConfig()).as_dict()
    return keras.Sequential([keras.layers.Rescaling(1.0 / 255.0, dtype="float32", name="rescale"),
                             RandomAffine(**options, seed=seed, name="random_affine"),
                             RandomErasing(**options, seed=seed, name="random_erasing")], name=name)


def augment_preview(images: np.ndarray, config: AugmentConfig | None = None, *,
                    variants: int = 8, seed: int = 0) -> np.ndarray:
    """``variants`` random augmentations of each image, as floats in [0, 1] of shape (n, variants, H, W, C), for the
    notebooks' and widgets' previews (a new ``seed`` draws new ones; ``config`` as for :func:`build_augmentation`)."""
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
