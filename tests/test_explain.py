"""fer_lib.analysis.explain: occlusion maps checked on numpy "models" whose answer is known (no Keras, no training).

The toy model's probability of class 0 depends only on the mean brightness of the image's top-left 8x8 corner, so
the exact map is known: covering the corner lowers it in proportion to the corner pixels covered, covering anything
else changes nothing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fer_lib.analysis.results import load_run_results
from fer_lib.core import records
from fer_lib.app import runs
from fer_lib.analysis.explain import (choose_per_class, class_mean_maps, mean_maps_by_class, occlusion_positions,
                             occlusion_sensitivity, run_occlusion)
from fer_lib.core.labels import NUM_CLASSES

try:  # see test_widgets.py
    from fixtures_runs import make_crafted_run, make_crafted_seed_run
except ImportError:  # pragma: no cover
    from tests.fixtures_runs import make_crafted_run, make_crafted_seed_run

SLOPE = 0.8  # p(class 0) = 0.1 + SLOPE * (mean of the top-left 8x8 corner) / 255


def corner_model(images: np.ndarray) -> np.ndarray:
    """A 'model' that only looks at the top-left 8x8 corner: p(class 0) grows linearly with its brightness."""
    images = np.asarray(images, dtype=np.float64)
    corner = images[:, :8, :8].reshape(len(images), -1).mean(axis=1) / 255.0
    p0 = 0.1 + SLOPE * corner
    rest = np.repeat(((1.0 - p0) / (NUM_CLASSES - 1))[:, None], NUM_CLASSES - 1, axis=1)
    return np.concatenate([p0[:, None], rest], axis=1)


def faces(n: int = 3, seed: int = 0) -> np.ndarray:
    """48x48x1 uint8 images, random except a white top-left corner."""
    images = np.random.default_rng(seed).integers(0, 200, size=(n, 48, 48, 1), dtype=np.uint8)
    images[:, :8, :8] = 255
    return images


def test_the_map_is_the_known_answer_on_a_model_that_looks_at_one_corner() -> None:
    images = faces()
    maps = occlusion_sensitivity(corner_model, images, np.zeros(3, dtype=int), patch=8, stride=4, fill=0)
    assert maps.shape == (3, 48, 48)
    # pixel (0, 0) is covered only by the patch at (0, 0), which hides the whole (white) corner
    assert maps[:, 0, 0] == pytest.approx(SLOPE)
    # pixel (4, 4): patches at (0,0), (0,4), (4,0), (4,4) hide 64, 32, 32 and 16 corner pixels
    assert maps[:, 4, 4] == pytest.approx(SLOPE * (64 + 32 + 32 + 16) / 64 / 4)
    # no patch covering a pixel at row >= 12 or column >= 12 touches the corner: exactly no drop
    assert np.all(maps[:, 12:, :] == 0) and np.all(maps[:, :, 12:] == 0)
    assert np.all(maps[:, :8, :8] > 0.2)


def test_default_fill_is_each_images_mean_grey() -> None:
    images = faces(2)
    maps = occlusion_sensitivity(corner_model, images, [0, 0])
    means = images.reshape(2, -1).mean(axis=1)
    assert maps[:, 0, 0] == pytest.approx(SLOPE * (255 - np.rint(means)) / 255)
    constant = occlusion_sensitivity(corner_model, images, [0, 0], fill=127.5)
    assert constant[:, 0, 0] == pytest.approx(SLOPE * (255 - 128) / 255)  # rounded to the uint8 grey 128


def test_a_class_other_than_the_one_looked_at_drops_the_other_way() -> None:
    maps = occlusion_sensitivity(corner_model, faces(1), [3], fill=0)
    assert maps[0, 0, 0] == pytest.approx(-SLOPE / (NUM_CLASSES - 1))  # p(class 3) rises when the corner darkens


def test_batching_and_shapes_do_not_change_the_maps() -> None:
    images = faces(5).astype(np.float32)  # float pixels work too
    calls: list[int] = []

    def counted(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        return corner_model(batch)

    whole = occlusion_sensitivity(counted, images, np.zeros(5, dtype=int), fill=0)
    assert len(calls) == 1 and calls[0] == 5 * (11 * 11 + 1)  # one call: every occluded copy and the originals
    calls.clear()
    pieces = occlusion_sensitivity(counted, images[..., 0], np.zeros(5, dtype=int), fill=0, max_batch=300)
    assert len(calls) == 3 and np.allclose(whole, pieces)  # 2 images (244 copies) per call; (n, H, W) input
    assert occlusion_sensitivity(corner_model, images[:0], np.zeros(0, dtype=int)).shape == (0, 48, 48)


def test_patch_positions_cover_the_border() -> None:
    assert occlusion_positions(48, 8, 4).tolist() == list(range(0, 41, 4))
    assert occlusion_positions(48, 10, 4).tolist() == [0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 38]
    maps = occlusion_sensitivity(corner_model, faces(1), [0], patch=10, stride=4)
    assert np.isfinite(maps).all()  # every pixel, up to the last row and column, is covered


@pytest.mark.parametrize("kwargs, name", [({"patch": 0}, "patch"), ({"patch": 49}, "patch"),
                                          ({"patch": 2.5}, "patch"), ({"stride": 0}, "stride"),
                                          ({"patch": 4, "stride": 5}, "stride"), ({"fill": "grey"}, "fill"),
                                          ({"max_batch": 0}, "max_batch")])
def test_bad_arguments_name_the_parameter(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        occlusion_sensitivity(corner_model, faces(1), [0], **kwargs)


def test_bad_labels_and_predictions_are_errors() -> None:
    with pytest.raises(ValueError, match="labels"):
        occlusion_sensitivity(corner_model, faces(2), [0])
    with pytest.raises(ValueError, match="labels"):
        occlusion_sensitivity(corner_model, faces(1), [7])
    with pytest.raises(ValueError, match="images"):
        occlusion_sensitivity(corner_model, np.zeros((2, 48)), [0, 0])
    with pytest.raises(ValueError, match="predict must return"):
        occlusion_sensitivity(lambda x: np.ones(len(x)), faces(1), [0])


# --------------------------------------------------------------------------------------------------------------------
# Per class
# --------------------------------------------------------------------------------------------------------------------


def test_choose_per_class_is_seeded_and_takes_only_eligible_images() -> None:
    labels = np.arange(70) % NUM_CLASSES
    eligible = labels != 2
    chosen = choose_per_class(labels, eligible, 3, seed=1)
    assert [len(c) for c in chosen] == [3, 3, 0, 3, 3, 3, 3]
    assert all((labels[c] == code).all() and eligible[c].all() for code, c in enumerate(chosen))
    again = choose_per_class(labels, eligible, 3, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(chosen, again))
    other = choose_per_class(labels, eligible, 3, seed=2)
    assert any(not np.array_equal(a, b) for a, b in zip(chosen, other))
    with pytest.raises(ValueError, match="per_class"):
        choose_per_class(labels, eligible, 0)


def test_mean_maps_by_class() -> None:
    maps = np.stack([np.full((2, 2), v) for v in (1.0, 3.0, 5.0)])
    means, counts = mean_maps_by_class(maps, np.array([0, 0, 4]))
    assert counts.tolist() == [2, 0, 0, 0, 1, 0, 0]
    assert np.all(means[0] == 2.0) and np.all(means[4] == 5.0) and np.isnan(means[1]).all()


def test_class_mean_maps_average_only_correct_images() -> None:
    images = np.concatenate([faces(6), faces(6, seed=1)])
    labels = np.array([0] * 6 + [3] * 6)
    images[6:, :8, :8] = 0  # class-3 images: a black corner, so the corner model gets them wrong (class 0 ...)
    predicted = corner_model(images).argmax(axis=1)
    assert (predicted[:6] == 0).all() and (predicted[6:] != 3).all()
    result = class_mean_maps(corner_model, images, labels, per_class=4, fill=0)
    assert result.counts.tolist() == [4, 0, 0, 0, 0, 0, 0]
    assert result.maps[0, 0, 0] == pytest.approx(SLOPE) and np.isnan(result.maps[3]).all()
    assert len(result.indices[0]) == 4 and set(result.indices[0]) <= set(range(6))
    given = class_mean_maps(corner_model, images, labels, predicted=labels, per_class=2, fill=0)
    assert given.counts[3] == 2  # predictions passed in are believed


# --------------------------------------------------------------------------------------------------------------------
# A run folder (crafted predictions, a numpy model instead of best.keras)
# --------------------------------------------------------------------------------------------------------------------


class CornerKerasLike:
    """Stands in for a loaded Keras model: ``predict`` as Keras calls it."""

    def predict(self, images: np.ndarray, batch_size: int = 32, verbose: int = 0) -> np.ndarray:
        return corner_model(images)


def test_run_occlusion_on_a_run_folder(tmp_path: Path) -> None:
    run_dir = make_crafted_run(tmp_path, {1: 0, 4: 6})  # disgust -> angry, sad -> neutral, the rest right
    (records.model_dir(run_dir, "basic_cnn") / records.BEST_MODEL_FILE).write_bytes(b"stand-in")
    loaded: list[Path] = []

    def load(path: Path) -> CornerKerasLike:
        loaded.append(path)
        return CornerKerasLike()

    result = run_occlusion(load_run_results(run_dir), per_class=2, examples=3, patch=12, stride=12, load_model=load)
    assert loaded == [records.model_dir(run_dir, "basic_cnn") / records.BEST_MODEL_FILE]
    model = result.models["basic_cnn"]
    assert model.class_counts.tolist() == [2, 0, 2, 2, 0, 2, 2]  # no correct disgust or sad image
    assert np.isnan(model.class_maps[1]).all() and np.isfinite(model.class_maps[0]).all()
    assert result.class_maps["basic_cnn"].shape == (NUM_CLASSES, 48, 48)
    assert len(result.example_positions) == 3 and len(set(result.example_labels.tolist())) == 3
    assert not set(result.example_labels.tolist()) & {1, 4}
    assert result.example_maps["basic_cnn"].shape == (3, 48, 48)
    assert result.example_images.shape == (3, 48, 48, 1) and result.synthetic
    assert np.allclose(result.example_probabilities["basic_cnn"],
                       corner_model(result.example_images)[np.arange(3), result.example_labels])
    assert result.mean_faces.shape == (NUM_CLASSES, 48, 48) and np.isfinite(result.mean_faces).all()
    again = run_occlusion(load_run_results(run_dir), per_class=2, examples=3, patch=12, stride=12, load_model=load)
    assert np.array_equal(again.example_positions, result.example_positions)  # seeded: the same faces
    assert "patch" in result.describe() and "basic_cnn" in result.describe()
    with pytest.raises(ValueError, match="resnet50v2"):
        run_occlusion(load_run_results(run_dir), models=["resnet50v2"], load_model=load)


def test_run_occlusion_explains_one_seed_of_a_several_seed_run(tmp_path: Path) -> None:
    run_dir = make_crafted_seed_run(tmp_path, seeds=(0, 1))
    for seed in (0, 1):
        for model in ("basic_cnn", "resnet50v2"):
            (records.model_dir(run_dir, model, seed) / records.BEST_MODEL_FILE).write_bytes(b"stand-in")
    loaded: list[Path] = []

    def load(path: Path) -> CornerKerasLike:
        loaded.append(path)
        return CornerKerasLike()

    results = load_run_results(run_dir)
    first = run_occlusion(results, per_class=1, examples=1, patch=24, stride=24, load_model=load)
    assert first.model_seed == 0 and list(first.models) == ["basic_cnn", "resnet50v2"]
    assert loaded == [records.model_dir(run_dir, m, 0) / records.BEST_MODEL_FILE for m in ("basic_cnn", "resnet50v2")]
    loaded.clear()
    second = run_occlusion(results, model_seed=1, per_class=1, examples=1, patch=24, stride=24, load_model=load)
    assert second.model_seed == 1 and all(path.parts[-4] == "seed-1" for path in loaded)
    assert "training seed 1" in second.describe()
    with pytest.raises(ValueError, match="model_seed"):
        run_occlusion(results, model_seed=7, load_model=load)


def test_keras_is_imported_only_inside_functions() -> None:
    """Reading a run must not start a backend: explain's module-level imports are numpy and fer_lib only."""
    import ast

    import fer_lib.analysis.explain

    tree = ast.parse(Path(fer_lib.analysis.explain.__file__).read_text())
    top = {alias.name.split(".")[0] for node in tree.body if isinstance(node, ast.Import) for alias in node.names}
    top |= {node.module.split(".")[0] for node in tree.body if isinstance(node, ast.ImportFrom) and node.module}
    assert not top & {"keras", "tensorflow", "jax", "torch"}, top
