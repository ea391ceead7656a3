"""fer_lib.core.data: real FER2013 in both layouts, honest splits, the cache, and a clear error for every bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fer_lib.core import data
from fer_lib.core.data import FerDataError, load_fer2013
from fer_lib.core.labels import EMOTIONS, FER2013_TRAIN_COUNTS

FER2013_TEST_COUNTS = {"angry": 467, "disgust": 56, "fear": 496, "happy": 895, "sad": 653, "surprise": 415,
                       "neutral": 607}


# --- tiny sources written by the tests themselves ----------------------------------------------------------------


def pixels_text(value: int = 128, count: int = 2304) -> str:
    return " ".join([str(value)] * count)


def write_csv(path: Path, rows: list[tuple[object, str, str]], columns: tuple[str, ...] = ("emotion", "pixels", "Usage")
              ) -> Path:
    pd.DataFrame(rows, columns=list(columns)).to_csv(path, index=False)
    return path


def good_rows() -> list[tuple[object, str, str]]:
    rows = []
    for usage in ("Training", "PublicTest", "PrivateTest"):
        rows += [(code, pixels_text(10 * code + 5), usage) for code in range(7)]
    return rows


def write_image(path: Path, size: tuple[int, int] = (48, 48), value: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size[::-1], value, dtype=np.uint8)).save(path)
    return path


def make_folders(root: Path, splits: tuple[str, ...] = ("train", "test"), per_class: int = 3) -> Path:
    for split in splits:
        for code, name in enumerate(EMOTIONS):
            for i in range(per_class):
                write_image(root / split / name / f"{split}_{name}_{i}.png", value=code * 30 + i)
    return root


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


# --- real data ------------------------------------------------------------------------------------------------------


@pytest.mark.real_data
def test_real_fer2013_counts_and_label_order(tmp_path: Path, fer2013_dir: Path) -> None:
    dataset = load_fer2013(fer2013_dir, cache_dir=tmp_path)
    train_and_val = np.concatenate([dataset.train.labels, dataset.val.labels])
    assert train_and_val.size == 28_709
    assert dict(zip(EMOTIONS, np.bincount(train_and_val, minlength=7).tolist())) == FER2013_TRAIN_COUNTS
    assert len(dataset.test) == 3_589
    assert dict(zip(EMOTIONS, np.bincount(dataset.test.labels, minlength=7).tolist())) == FER2013_TEST_COUNTS
    # labels follow the csv's order, not alphabetical folder order (alphabetical would put neutral at 4)
    for split in dataset.splits.values():
        folder_class = np.array([Path(i).parts[1] for i in split.ids])
        assert (np.array(EMOTIONS)[split.labels] == folder_class).all()
    # validation is carved from train/ only, never from test/
    assert all(i.startswith("train/") for i in dataset.val.ids)
    assert not set(dataset.val.ids) & set(dataset.train.ids)
    assert all(i.startswith("test/") for i in dataset.test.ids)
    assert dataset.train.images.shape[1:] == (48, 48, 1) and dataset.train.images.dtype == np.uint8
    summary = data.summarize(dataset)
    assert summary.counts.loc["total"].sum() == 28_709 + 3_589
    assert summary.majority.loc["test", "majority_class"] == "happy"
    assert summary.majority.loc["test", "majority_accuracy"] == pytest.approx(895 / 3589)


@pytest.mark.real_data
def test_same_images_written_to_csv_load_identically(tmp_path: Path, fer2013_dir: Path) -> None:
    """A small fer2013.csv made from real images loads exactly like the same images in the folder layout."""
    source = fer2013_dir
    folders = tmp_path / "folders"
    for split, take in (("train", 12), ("val", 4), ("test", 4)):
        origin = "test" if split == "test" else "train"
        offset = 20 if split == "val" else 0  # val images are different train images
        for name in EMOTIONS:
            for file in sorted((source / origin / name).iterdir())[offset:offset + take]:
                target = folders / split / name / file.name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(file, target)
    from_folders = load_fer2013(folders, cache_dir=tmp_path / "cache")

    usage = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}
    rows = []
    for split in ("train", "val", "test"):  # the csv lists the images in the folder loader's order
        for image_id in from_folders.split(split).ids:
            file = folders / image_id
            pixels = np.asarray(Image.open(file).convert("L")).ravel()
            rows.append((EMOTIONS.index(file.parent.name), " ".join(map(str, pixels)), usage[split]))
    csv_file = write_csv(tmp_path / "fer2013.csv", rows)
    from_csv = load_fer2013(csv_file, cache_dir=tmp_path / "cache")

    assert from_csv.layout == "csv" and from_folders.layout == "folders"
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(from_csv.split(split).images, from_folders.split(split).images)
        np.testing.assert_array_equal(from_csv.split(split).labels, from_folders.split(split).labels)
    assert from_csv.val_origin == "PublicTest" and from_folders.val_origin == "val/"
    # a folder holding fer2013.csv is accepted too
    np.testing.assert_array_equal(load_fer2013(tmp_path, cache_dir=tmp_path / "cache").train.images,
                                  from_csv.train.images)


# --- layouts, splits and the cache ---------------------------------------------------------------------------------


def test_csv_layout_splits_by_usage(tmp_path: Path, cache: Path) -> None:
    dataset = load_fer2013(write_csv(tmp_path / "fer2013.csv", good_rows()), cache_dir=cache)
    assert [len(dataset.split(s)) for s in ("train", "val", "test")] == [7, 7, 7]
    assert dataset.train.labels.tolist() == list(range(7))
    assert int(dataset.train.images[3, 0, 0, 0]) == 35


def test_folder_layout_is_case_insensitive_and_carves_stratified_validation(tmp_path: Path, cache: Path) -> None:
    root = make_folders(tmp_path / "fer", per_class=10)
    (root / "train" / "happy").rename(root / "train" / "Happy")
    dataset = load_fer2013(root, cache_dir=cache, val_fraction=0.2, seed=3)
    assert len(dataset.val) == 14 and len(dataset.train) == 56
    assert np.bincount(dataset.val.labels, minlength=7).tolist() == [2] * 7
    assert "carved 20%" in dataset.val_origin
    again = load_fer2013(root, cache_dir=cache, val_fraction=0.2, seed=3)
    assert again.val.ids.tolist() == dataset.val.ids.tolist()
    other_seed = load_fer2013(root, cache_dir=cache, val_fraction=0.2, seed=4)
    assert other_seed.val.ids.tolist() != dataset.val.ids.tolist()


def test_val_folder_is_used_when_present(tmp_path: Path, cache: Path) -> None:
    dataset = load_fer2013(make_folders(tmp_path / "fer", splits=("train", "val", "test")), cache_dir=cache)
    assert dataset.val_origin == "val/" and len(dataset.train) == 21 and len(dataset.val) == 21


def test_cache_is_used_and_invalidated_by_a_changed_source(tmp_path: Path, cache: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_folders(tmp_path / "fer")
    first = load_fer2013(root, cache_dir=cache)
    assert list(cache.glob("*.npz"))

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded although the cache was valid")

    monkeypatch.setattr(data, "_decode_image", no_decoding)
    cached = load_fer2013(root, cache_dir=cache)
    np.testing.assert_array_equal(cached.train.images, first.train.images)

    monkeypatch.undo()
    write_image(root / "train" / "angry" / "train_angry_0.png", value=250)  # the source changes
    changed = load_fer2013(root, cache_dir=cache)
    assert changed.fingerprint != first.fingerprint
    assert 250 in changed.train.images[changed.train.labels == 0] or 250 in changed.val.images


def test_summary_and_majority_baseline() -> None:
    assert data.majority_class_accuracy(np.array([3, 3, 3, 1])) == 0.75
    dataset = data.load_synthetic(70, 14, 28, seed=1)
    summary = data.summarize(dataset)
    assert summary.counts.loc["total", "train"] == 70
    assert list(summary.majority.index) == ["train", "val", "test"]
    assert dataset.is_synthetic and "synthetic" in dataset.source


def test_subsample_is_stratified(tmp_path: Path, cache: Path) -> None:
    dataset = load_fer2013(make_folders(tmp_path / "fer", per_class=10), cache_dir=cache)
    small = data.subsample(dataset, 21, seed=0)
    assert np.bincount(small.train.labels, minlength=7).tolist() == [3] * 7
    assert len(small.test) == len(dataset.test)
    with pytest.raises(FerDataError, match="subset must be an integer of at least 7"):
        data.subsample(dataset, 3)


def test_discover_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FER2013_DIR", raising=False)
    assert data.discover_data(None, project_root=tmp_path)[0] is None
    (tmp_path / "data" / "fer2013").mkdir(parents=True)
    assert data.discover_data(None, project_root=tmp_path)[0] == tmp_path / "data" / "fer2013"
    monkeypatch.setenv("FER2013_DIR", str(tmp_path / "elsewhere"))
    with pytest.raises(FerDataError, match="FER2013_DIR points to .*elsewhere.* does not exist"):
        data.discover_data(None, project_root=tmp_path)
    with pytest.raises(FerDataError, match="data folder .*nowhere.* does not exist"):
        data.discover_data(tmp_path / "nowhere")


# --- every bad input has a clear error ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad_row", "message"),
    [
        ((0, "1 2 x 4", "Training"), r"line 2: pixels must be 2304 integers 0-255 separated by spaces, got '1 2 x 4'"),
        ((0, "one two", "Training"), r"line 2: pixels must be 2304 integers"),
        ((0, "1,2,3", "Training"), r"line 2: pixels must be 2304 integers"),
        ((0, pixels_text(count=2303), "Training"), r"line 2: pixels holds 2303 values, expected 2304"),
        ((0, pixels_text(value=300), "Training"), r"line 2: pixel value 300 is outside 0-255"),
        ((7, pixels_text(), "Training"), r"line 2: emotion '7' is not an integer code 0-6"),
        (("angry", pixels_text(), "Training"), r"line 2: emotion 'angry' is not an integer code 0-6"),
        ((-1, pixels_text(), "Training"), r"line 2: emotion '-1' is not an integer code 0-6"),
        ((0, pixels_text(), "Validation"), r"line 2: unknown Usage 'Validation'; expected one of Training, "
                                           r"PublicTest, PrivateTest"),
    ],
)
def test_bad_csv_rows_name_file_line_and_expectation(tmp_path: Path, cache: Path, bad_row: tuple, message: str
                                                      ) -> None:
    csv_file = write_csv(tmp_path / "fer2013.csv", [bad_row, *good_rows()])
    with pytest.raises(FerDataError, match=message) as error:
        load_fer2013(csv_file, cache_dir=cache)
    assert str(csv_file) in str(error.value)


def test_missing_csv_columns(tmp_path: Path, cache: Path) -> None:
    csv_file = write_csv(tmp_path / "fer2013.csv", [(0, pixels_text())], columns=("emotion", "pixels"))
    with pytest.raises(FerDataError, match=r"fer2013.csv: missing column\(s\) Usage; expected columns emotion, "
                                           r"pixels, Usage, found emotion, pixels"):
        load_fer2013(csv_file, cache_dir=cache)


def test_empty_split_in_csv(tmp_path: Path, cache: Path) -> None:
    rows = [row for row in good_rows() if row[2] != "PrivateTest"]
    with pytest.raises(FerDataError, match=r"the test split is empty \(no rows with Usage PrivateTest\)"):
        load_fer2013(write_csv(tmp_path / "fer2013.csv", rows), cache_dir=cache)


def test_empty_split_in_folders(tmp_path: Path, cache: Path) -> None:
    root = make_folders(tmp_path / "fer", splits=("train",))
    for name in EMOTIONS:
        (root / "test" / name).mkdir(parents=True)
    with pytest.raises(FerDataError, match=r"the test split is empty \(no images in test/\)"):
        load_fer2013(root, cache_dir=cache)


def test_unknown_class_folder(tmp_path: Path, cache: Path) -> None:
    root = make_folders(tmp_path / "fer")
    write_image(root / "train" / "happpy" / "x.png")
    with pytest.raises(FerDataError, match=r"unknown class folder '.*train/happpy': expected one of angry, disgust, "
                                           r"fear, happy, sad, surprise, neutral \(case-insensitive\)"):
        load_fer2013(root, cache_dir=cache)


def test_corrupt_image(tmp_path: Path, cache: Path) -> None:
    root = make_folders(tmp_path / "fer")
    broken = root / "test" / "sad" / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    with pytest.raises(FerDataError, match=r"'.*test/sad/broken.jpg' is corrupt or unreadable as an image"):
        load_fer2013(root, cache_dir=cache)


def test_truncated_image(tmp_path: Path, cache: Path) -> None:
    root = make_folders(tmp_path / "fer")
    good = write_image(root / "train" / "fear" / "noise.jpg")
    noisy = np.random.default_rng(0).integers(0, 255, (48, 48), dtype=np.uint8)
    Image.fromarray(noisy).save(good, quality=95)
    good.write_bytes(good.read_bytes()[:200])
    with pytest.raises(FerDataError, match=r"noise.jpg' is corrupt or unreadable"):
        load_fer2013(root, cache_dir=cache)


def test_non_image_file(tmp_path: Path, cache: Path) -> None:
    root = make_folders(tmp_path / "fer")
    (root / "train" / "angry" / "notes.txt").write_text("hello")
    with pytest.raises(FerDataError, match=r"notes.txt' is not an image file: expected one of .jpg"):
        load_fer2013(root, cache_dir=cache)


def test_image_that_is_not_48x48_fails_unless_resize(tmp_path: Path, cache: Path) -> None:
    root = make_folders(tmp_path / "fer")
    write_image(root / "train" / "happy" / "big.png", size=(64, 60), value=77)
    with pytest.raises(FerDataError, match=r"big.png' is 64x60, expected 48x48; pass resize=True"):
        load_fer2013(root, cache_dir=cache)
    dataset = load_fer2013(root, cache_dir=cache, resize=True)
    big = [i for i, name in enumerate(np.concatenate([dataset.train.ids, dataset.val.ids])) if "big.png" in name]
    assert len(big) == 1
    images = np.concatenate([dataset.train.images, dataset.val.images])
    assert images[big[0]].shape == (48, 48, 1) and int(images[big[0]].mean()) == 77


def test_path_that_does_not_exist_lists_layouts_and_source(tmp_path: Path) -> None:
    with pytest.raises(FerDataError) as error:
        load_fer2013(tmp_path / "missing")
    message = str(error.value)
    assert "missing" in message and "does not exist" in message
    assert "fer2013.csv with columns emotion, pixels, Usage" in message
    assert "train/<class>/*.jpg" in message
    assert "Kaggle" in message


def test_folder_without_any_layout(tmp_path: Path) -> None:
    (tmp_path / "stuff").mkdir()
    with pytest.raises(FerDataError, match="holds neither fer2013.csv nor a train/ folder; accepted layouts"):
        load_fer2013(tmp_path / "stuff")


def test_bad_val_fraction(tmp_path: Path) -> None:
    with pytest.raises(FerDataError, match="val_fraction must be strictly between 0 and 1, got 1.5"):
        load_fer2013(make_folders(tmp_path / "fer"), val_fraction=1.5)


def test_first_of_each_class() -> None:
    assert data.first_of_each_class(np.array([3, 0, 3, 6, 0])).tolist() == [1, 0, 3]


# --- data bundles (the offline GPU bundle's data) -------------------------------------------------------------------


def assert_same_dataset(left: data.FerDataset, right: data.FerDataset) -> None:
    for split in data.SPLITS:
        a, b = left.split(split), right.split(split)
        assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
        assert a.ids.tolist() == b.ids.tolist()


def test_a_bundle_of_a_folder_layout_loads_as_the_folders_do(tmp_path: Path, cache: Path) -> None:
    source = make_folders(tmp_path / "fer", per_class=4)
    for code, name in enumerate(EMOTIONS):  # JPEG files travel byte for byte
        Image.fromarray(np.random.default_rng(code).integers(0, 255, (48, 48), dtype=np.uint8)).save(
            source / "train" / name / f"photo_{code}.jpg", quality=75)
    bundle = data.write_bundle(source, tmp_path / "out" / "fer2013.npz")
    assert data.detect_layout(bundle) == ("bundle", bundle)
    loaded = load_fer2013(bundle, cache_dir=cache, seed=3)
    assert loaded.layout == "bundle" and loaded.val_origin.startswith("carved 10% of train/")
    assert_same_dataset(loaded, load_fer2013(source, cache_dir=cache, seed=3))
    assert (tmp_path / "out").iterdir().__next__().name == "fer2013.npz"  # no temporary file left behind


def test_a_bundle_of_a_csv_keeps_its_three_splits(tmp_path: Path, cache: Path) -> None:
    source = write_csv(tmp_path / "fer2013.csv", good_rows())
    bundle = data.write_bundle(source, tmp_path / "fer2013.npz")
    loaded = load_fer2013(bundle, cache_dir=cache)
    assert loaded.val_origin == "the bundle's val split"
    assert_same_dataset(loaded, load_fer2013(source, cache_dir=cache))


def test_a_file_that_is_not_a_bundle_is_named(tmp_path: Path, cache: Path) -> None:
    other = tmp_path / "weights.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(FerDataError, match=r"weights.npz' is not a fer-study data bundle"):
        load_fer2013(other, cache_dir=cache)
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not a zip file")
    with pytest.raises(FerDataError, match=r"broken.npz' cannot be read as a data bundle"):
        load_fer2013(broken, cache_dir=cache)
    with pytest.raises(FerDataError, match="neither a .csv nor a data bundle"):
        load_fer2013(write_image(tmp_path / "face.png"), cache_dir=cache)
