"""fer_lib.core.models: the registry, both architectures, options, mixed precision and ImageNet-weights handling."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from fer_lib.core.config import MODEL_OPTIONS, BasicCnnOptions, ParamsError, ResNet50V2Options, model_options
from fer_lib.core.models import BUILDERS, build_model

pytestmark = pytest.mark.backend


def test_every_model_with_options_has_a_builder() -> None:
    assert set(MODEL_OPTIONS) == set(BUILDERS) == {"basic_cnn", "resnet50v2"}


def test_basic_cnn_is_the_papers_shape_and_configurable() -> None:
    model = build_model("basic_cnn")
    assert model.input_shape == (None, 48, 48, 1) and model.output_shape == (None, 7)
    conv_widths = [layer.filters for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert conv_widths == [64, 64, 128, 128, 256, 256, 512, 512]
    kinds = {type(layer).__name__ for layer in model.layers}
    assert {"BatchNormalization", "MaxPooling2D", "Dropout", "Dense", "Sequential"} <= kinds
    small = build_model("basic_cnn", BasicCnnOptions(filters=(8, 16), convs_per_block=1, dense_units=(32, 16),
                                                     dropout=0.1))
    assert [layer.filters for layer in small.layers if isinstance(layer, keras.layers.Conv2D)] == [8, 16]
    assert [layer.units for layer in small.layers if isinstance(layer, keras.layers.Dense)] == [32, 16, 7]
    probabilities = keras.ops.convert_to_numpy(small(np.zeros((2, 48, 48, 1), "float32")))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_resnet50v2_with_and_without_upsampling() -> None:
    plain = build_model("resnet50v2")
    backbone = plain.get_layer("resnet50v2")
    assert backbone.input_shape == (None, 48, 48, 1) and plain.output_shape == (None, 7)
    upsampled = build_model("resnet50v2", ResNet50V2Options(input_size=96))
    assert upsampled.get_layer("resnet50v2").input_shape == (None, 96, 96, 1)
    assert upsampled.get_layer("upsample") is not None


def test_mixed_precision_uses_bf16_body_and_float32_softmax_without_leaking_the_policy() -> None:
    model = build_model("basic_cnn", BasicCnnOptions(filters=(8,), dense_units=(8,)), mixed_precision=True)
    assert model.get_layer("block1_conv1").dtype_policy.name == "mixed_bfloat16"
    assert model.get_layer("predictions").dtype_policy.name == "float32"
    out = model(np.zeros((1, 48, 48, 1), "float32"))
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    assert keras.config.dtype_policy().name == "float32"


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("vgg", {}, "unknown model 'vgg'; registered models: basic_cnn, resnet50v2"),
        ("basic_cnn", {"filter": [8]}, r"unknown parameter\(s\) filter in model_options.basic_cnn; valid: filters"),
        ("basic_cnn", {"filters": []}, r"model_options.basic_cnn.filters must be a non-empty list of positive int"),
        ("basic_cnn", {"filters": "abc"}, r"model_options.basic_cnn.filters must be a non-empty list"),
        ("basic_cnn", {"dropout": 1.5}, r"model_options.basic_cnn.dropout must be a number in \[0, 1\)"),
        ("basic_cnn", {"filters": [8] * 6}, r"filters must be a non-empty list of positive integers \(at most 5\)"),
        ("resnet50v2", {"input_size": 16}, r"model_options.resnet50v2.input_size must be an integer >= 32"),
        ("resnet50v2", {"weights": "places365"}, r"weights must be one of null, imagenet"),
        ("resnet50v2", {"weights": "imagenet"}, r"weights_path must be a local file .* nothing is downloaded"),
        ("resnet50v2", {"weights": "imagenet", "weights_path": "/nope.h5"}, r"got '/nope.h5' \(it does not exist\)"),
    ],
)
def test_bad_model_options_fail_clearly_without_keras(name: str, options: dict, message: str) -> None:
    with pytest.raises(ParamsError, match=message):
        model_options(name, options)


def test_build_model_takes_typed_options_only() -> None:
    with pytest.raises(TypeError, match="build_model's options for basic_cnn must be a BasicCnnOptions"):
        build_model("basic_cnn", {"filters": [8]})


@pytest.mark.slow
def test_imagenet_weights_load_from_a_local_file(tmp_path: Path) -> None:
    """A local no-top weights file is used as is (grayscale replicated to 3 channels); nothing is downloaded."""
    reference = keras.applications.ResNet50V2(include_top=False, weights=None, input_shape=(64, 64, 3),
                                              pooling="avg")
    marker = [np.full_like(w, 0.01 * (i % 7)) for i, w in enumerate(reference.get_weights())]
    reference.set_weights(marker)
    weights_file = tmp_path / "resnet50v2_notop.weights.h5"
    reference.save_weights(weights_file)
    model = build_model("resnet50v2", ResNet50V2Options(input_size=64, weights="imagenet",
                                                        weights_path=str(weights_file)))
    loaded = model.get_layer("resnet50v2").get_weights()
    assert all(np.allclose(a, b) for a, b in zip(loaded, marker))
    assert model.get_layer("gray_to_rgb") is not None
