"""fer_lib.core.augment: the paper's augmentation as one XLA-compilable layer, same behaviour on TF and JAX.

Marked ``backend``: ``make test`` runs these on the TensorFlow backend and again under ``KERAS_BACKEND=jax``.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from fer_lib.core.augment import RandomAffine, augment_preview, build_augmentation
from fer_lib.core.config import PAPER_AUGMENTATION, AugmentConfig, BasicCnnOptions

pytestmark = pytest.mark.backend


def square_images(n: int = 8) -> np.ndarray:
    images = np.zeros((n, 48, 48, 1), dtype="float32")
    images[:, 10:22, 6:18] = 255.0  # an off-centre bright square: asymmetric, so a flip is visible
    return images


def run(stage: keras.Model, images: np.ndarray, training: bool) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(stage(images, training=training)))


def test_rescales_to_unit_range_and_is_identity_at_inference() -> None:
    images = square_images()
    stage = build_augmentation(PAPER_AUGMENTATION, seed=0)
    np.testing.assert_allclose(run(stage, images, training=False), images / 255.0, atol=1e-6)
    augmented = run(stage, images, training=True)
    assert augmented.min() >= 0.0 and augmented.max() <= 1.0 + 1e-6
    assert not np.allclose(augmented, images / 255.0)


def test_identity_config_changes_nothing_in_training() -> None:
    images = square_images()
    np.testing.assert_allclose(run(build_augmentation(AugmentConfig()), images, training=True), images / 255.0,
                               atol=1e-6)


def test_horizontal_flip_mirrors_exactly_about_half_the_images() -> None:
    images = square_images(64)
    out = run(build_augmentation(AugmentConfig(horizontal_flip=True), seed=1), images, training=True)
    mirrored = np.array([np.allclose(o, i[:, ::-1] / 255.0, atol=1e-5) for o, i in zip(out, images)])
    unchanged = np.array([np.allclose(o, i / 255.0, atol=1e-5) for o, i in zip(out, images)])
    assert (mirrored | unchanged).all()
    assert 16 <= mirrored.sum() <= 48


def test_width_shift_moves_content_horizontally_within_range() -> None:
    images = square_images(32)
    out = run(build_augmentation(AugmentConfig(width_shift=0.2), seed=2), images, training=True)
    columns = np.arange(48)

    def centre_x(image: np.ndarray) -> float:
        mass = image[..., 0].sum(axis=0)
        return float((mass * columns).sum() / mass.sum())

    shifts = np.array([centre_x(o) - centre_x(i) for o, i in zip(out, images / 255.0)])
    assert np.abs(shifts).max() <= 0.2 * 48 + 1.0
    assert np.abs(shifts).max() > 2.0  # something did move
    rows = np.arange(48)
    vertical = [float((o[..., 0].sum(axis=1) * rows).sum() / o[..., 0].sum()) for o in out]
    assert np.allclose(vertical, 15.5, atol=0.6)  # ... and only horizontally


def test_rotation_and_zoom_keep_the_object_roughly_intact() -> None:
    images = square_images(16)
    config = AugmentConfig(rotation=15, zoom=0.1, shear=10)
    out = run(build_augmentation(config, seed=3), images, training=True)
    mass_ratio = out.sum(axis=(1, 2, 3)) / (images / 255.0).sum(axis=(1, 2, 3))
    assert np.all((mass_ratio > 0.6) & (mass_ratio < 1.6))


def test_seeded_layers_are_reproducible() -> None:
    images = square_images()
    first = run(build_augmentation(PAPER_AUGMENTATION, seed=5), images, training=True)
    second = run(build_augmentation(PAPER_AUGMENTATION, seed=5), images, training=True)
    np.testing.assert_allclose(first, second, atol=1e-6)


def test_preview_returns_variants_and_new_seeds_draw_new_augmentations() -> None:
    images = square_images(2)[..., 0]  # (n, h, w) is accepted too
    preview = augment_preview(images, PAPER_AUGMENTATION, variants=3, seed=0)
    assert preview.shape == (2, 3, 48, 48, 1)
    assert not np.allclose(preview[0, 0], preview[0, 1])
    assert not np.allclose(preview, augment_preview(images, PAPER_AUGMENTATION, variants=3, seed=1))
    with pytest.raises(ValueError, match="variants must be a positive integer"):
        augment_preview(images, variants=0)


def test_augmentation_functions_take_an_augment_config_only() -> None:
    """Mappings are converted at the boundary (AugmentConfig.from_mapping); further in they are a TypeError."""
    from fer_lib.core.models import build_model

    mapping = {"rotation": 10.0}
    message = r"must be an AugmentConfig or None, got dict; build it from a mapping with AugmentConfig\.from_mapping"
    with pytest.raises(TypeError, match="build_augmentation's config " + message):
        build_augmentation(mapping)
    with pytest.raises(TypeError, match="augment_preview's config " + message):
        augment_preview(square_images(1), mapping)
    with pytest.raises(TypeError, match="build_model's augmentation " + message):
        build_model("basic_cnn", augmentation=mapping)
    assert build_augmentation(AugmentConfig.from_mapping(mapping)).get_layer("random_affine").config.rotation == 10.0


def test_layer_survives_serialisation() -> None:
    layer = RandomAffine(rotation=5, horizontal_flip=True, seed=1)
    clone = RandomAffine.from_config(layer.get_config())
    assert clone.config == layer.config


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"rotation": -1}, r"parameter augmentation.rotation must be a number in \[0, 180\], got -1"),
        ({"width_shift": 1.5}, r"parameter augmentation.width_shift must be a number in \[0, 1\), got 1.5"),
        ({"zoom": "lots"}, r"parameter augmentation.zoom must be a number in \[0, 1\), got 'lots'"),
        ({"horizontal_flip": "yes"}, "parameter augmentation.horizontal_flip must be true or false"),
        ({"fill_mode": "mirror"}, "fill_mode must be one of nearest, reflect, constant, wrap"),
        ({"rotate": 10}, r"unknown parameter\(s\) rotate in augmentation; valid: rotation, width_shift"),
    ],
)
def test_bad_augmentation_parameters(values: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AugmentConfig.from_mapping(values)


def test_jit_compiles_on_jax_with_augmentation_inside_the_model() -> None:
    """On JAX the compiled model, augmentation included, runs with jit (Keras's own layers would switch it off)."""
    if keras.backend.backend() != "jax":
        pytest.skip("runs under KERAS_BACKEND=jax (make test runs the backend-marked tests there too)")
    from fer_lib.core.models import build_model

    def compiled_jit(model: keras.Model) -> bool:
        model.compile(optimizer="adam", loss="categorical_crossentropy", jit_compile="auto")
        x = square_images(8)
        y = np.eye(7, dtype="float32")[np.arange(8) % 7]
        model.train_on_batch(x, y)  # runs the (jitted or eager) train step once
        return bool(model.jit_compile)

    ours = build_model("basic_cnn", BasicCnnOptions(filters=(8,), dense_units=(8,)), augmentation=PAPER_AUGMENTATION)
    assert any(isinstance(layer, RandomAffine) for layer in ours.get_layer("preprocess").layers)
    assert compiled_jit(ours)

    # The check can fail: Keras's RandomRotation makes the same model run eagerly.
    inputs = keras.Input((48, 48, 1))
    x = keras.layers.RandomRotation(0.1)(inputs)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(7, activation="softmax")(x)
    assert not compiled_jit(keras.Model(inputs, outputs))


# --- the strong protocol's augmentation: random erasing and the random resized crop ------------------------------


def test_random_erasing_stays_inside_its_area_bounds_and_leaves_the_rest_alone() -> None:
    """Each erased image has one filled rectangle of 2-33% of the image (up to pixel rounding) and nothing else
    changed; about ``erasing`` of the images are erased."""
    config = AugmentConfig(erasing=0.5, erasing_area=(0.02, 0.33), erasing_aspect=(0.3, 3.3), erasing_value=255.0)
    images = np.zeros((200, 48, 48, 1), dtype="float32")  # black: an erased pixel (255) is unmistakable
    erased = run(build_augmentation(config, seed=3), images, training=True) > 0.5
    shares = erased.mean(axis=(1, 2, 3))
    hit = shares > 0
    assert 0.35 < hit.mean() < 0.65
    assert shares[hit].min() >= 0.02 - 2 * 49 / 48 ** 2 and shares[hit].max() <= 0.33 + 2 * 49 / 48 ** 2
    for mask in erased[hit][..., 0]:  # the changed pixels form exactly their bounding rectangle
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        assert mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all() and mask.sum() == len(rows) * len(cols)
    assert not run(build_augmentation(config, seed=3), images, training=False).any(), "inference: the identity"
    noise = run(build_augmentation(AugmentConfig(erasing=1.0, erasing_value="random"), seed=1), images, True)
    assert len(np.unique(noise)) > 100  # filled with noise, not one grey


def test_random_resized_crop_zooms_into_a_crop_of_the_drawn_area() -> None:
    """crop_scale [0.5, 0.5], square crops: each output row spans sqrt(0.5) of the input's columns, inside it."""
    columns = np.tile(np.arange(48, dtype="float32"), (48, 1))[None, :, :, None].repeat(16, axis=0)  # value = column
    seen = run(build_augmentation(AugmentConfig(crop_scale=(0.5, 0.5)), seed=2), columns, training=True) * 255.0
    spans = seen[:, 24, -1, 0] - seen[:, 24, 0, 0]
    np.testing.assert_allclose(spans, np.sqrt(0.5) * 47, atol=0.05)
    assert seen.min() >= -1e-3 and seen.max() <= 47 + 1e-3 and len(np.unique(np.round(seen[:, 24, 0, 0]))) > 4
    with pytest.raises(ValueError, match=r"crop_aspect needs augmentation.crop_scale"):
        AugmentConfig(crop_aspect=(0.75, 1.33))
    with pytest.raises(ValueError, match=r"augmentation.crop_scale must be a list \[low, high\]"):
        AugmentConfig(crop_scale=(0.8, 1.2))
