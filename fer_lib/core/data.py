"""Load FER2013 from any of its real layouts (:data:`ACCEPTED_LAYOUTS`) into train / val / test arrays.

Labels follow the csv's order, never alphabetical folder order; validation is never taken from test (without a val
split it is carved from train); decoded arrays are cached by a fingerprint of the source, so a changed one is decoded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from fer_lib.core.config import DataConfig, require_config
from fer_lib.core.labels import EMOTIONS, IMAGE_SIZE, NUM_CLASSES

SPLITS: tuple[str, ...] = ("train", "val", "test")
CSV_USAGE_TO_SPLIT: dict[str, str] = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
CSV_COLUMNS: tuple[str, ...] = ("emotion", "pixels", "Usage")
IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".pgm")
PIXELS_PER_IMAGE = IMAGE_SIZE * IMAGE_SIZE
CACHE_FORMAT_VERSION = "1"
FER2013_SOURCE_HINT = ("FER2013 is available for research use from the Kaggle challenge 'Challenges in "
                       "Representation Learning: Facial Expression Recognition Challenge' (fer2013.csv) or its folder "
                       "re-packaging 'FER-2013' (train/<class>/*.jpg, test/<class>/*.jpg).")
ACCEPTED_LAYOUTS = ("accepted layouts: (1) fer2013.csv with columns emotion, pixels, Usage, or a folder holding it; "
                    "(2) a folder with train/<class>/*.jpg|png and test/<class>/... (optional val/), class folders "
                    "named " + ", ".join(EMOTIONS) + "; (3) a fer-study data bundle (.npz, see `make gpu-bundle`)")
BUNDLE_FORMAT = "fer-study-data-bundle/1"


class FerDataError(ValueError):
    """Input data that does not match an accepted FER2013 layout; the message names the file, row or folder."""


@dataclasses.dataclass(frozen=True)
class Split:
    """One split: uint8 images (n, 48, 48, 1), int64 labels in csv order, and an id per image (file or csv row)."""

    name: str
    images: np.ndarray
    labels: np.ndarray
    ids: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, indices: np.ndarray) -> Split:
        """A new split holding only the given positions (used for carving and subsetting)."""
        return Split(self.name, self.images[indices], self.labels[indices], self.ids[indices])


@dataclasses.dataclass(frozen=True)
class FerDataset:
    """Train / val / test splits plus where they came from, so every result can name its data."""

    train: Split
    val: Split
    test: Split
    source: str
    layout: str  # "csv", "folders", "bundle" or "synthetic"
    val_origin: str  # how validation was obtained, e.g. "carved 10% of train/ (stratified, seed 0)"
    fingerprint: str
    is_synthetic: bool = False

    def split(self, name: str) -> Split:
        if name not in SPLITS:
            raise KeyError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)}")
        return getattr(self, name)

    @property
    def splits(self) -> dict[str, Split]:
        return {name: self.split(name) for name in SPLITS}


@dataclasses.dataclass(frozen=True)
class DataSummary:
    """Counts per class per split and each split's majority-class accuracy (the baseline a model must beat)."""

    counts: pd.DataFrame  # index: EMOTIONS + "total"; columns: splits
    majority: pd.DataFrame  # index: splits; columns: majority_class, majority_accuracy


# --- Public entry points ----------------------------------------------------------------------------------------------
def load_fer2013(path: str | os.PathLike[str], *, val_fraction: float = 0.1, seed: int = 0, resize: bool = False,
                 cache_dir: str | os.PathLike[str] | None = None) -> FerDataset:
    """Load FER2013 from ``path`` (a csv, a folder or a bundle), cached under ``cache_dir`` (default
    :func:`default_cache_dir`); ``val_fraction`` and ``seed`` only carve validation for a source without one."""
    if not 0.0 < float(val_fraction) < 1.0:
        raise FerDataError(f"val_fraction must be strictly between 0 and 1, got {val_fraction!r}")
    layout, root = detect_layout(Path(path).expanduser())
    fingerprint = source_fingerprint(layout, root, resize=resize)
    raw = _read_cache(cache_dir, fingerprint)
    if raw is None:
        raw = {"csv": _read_csv, "folders": _read_folders, "bundle": _read_bundle}[layout](root, resize=resize)
        _write_cache(cache_dir, fingerprint, raw)
    return _assemble(raw, layout=layout, root=root, fingerprint=fingerprint, val_fraction=val_fraction, seed=seed)


def detect_layout(path: Path) -> tuple[str, Path]:
    """``(layout, path)`` for ``path``: the csv file, the folder or the bundle to read, or a clear FerDataError."""
    if not path.exists():
        raise FerDataError(f"FER2013 data not found at '{path}': the path does not exist. {ACCEPTED_LAYOUTS}. "
                           f"{FER2013_SOURCE_HINT}")
    if path.is_file():
        layout = {".csv": "csv", ".npz": "bundle"}.get(path.suffix.lower())
        if layout is None:
            raise FerDataError(f"'{path}' is a file but neither a .csv nor a data bundle (.npz); {ACCEPTED_LAYOUTS}")
        return layout, path
    if (path / "fer2013.csv").is_file():
        return "csv", path / "fer2013.csv"
    if (path / "train").is_dir():
        return "folders", path
    raise FerDataError(f"'{path}' holds neither fer2013.csv nor a train/ folder; {ACCEPTED_LAYOUTS}. "
                       f"{FER2013_SOURCE_HINT}")


def summarize(dataset: FerDataset) -> DataSummary:
    """Counts per class per split, and the accuracy of always predicting each split's most frequent class."""
    counts = pd.DataFrame({name: np.bincount(split.labels, minlength=NUM_CLASSES)
                           for name, split in dataset.splits.items()}, index=pd.Index(EMOTIONS, name="class"))
    majority = pd.DataFrame({"majority_class": counts.idxmax(), "majority_accuracy": [
        majority_class_accuracy(split.labels) for split in dataset.splits.values()]})
    counts.loc["total"] = counts.sum()
    return DataSummary(counts=counts, majority=majority.rename_axis("split"))


def majority_class_accuracy(labels: np.ndarray) -> float:
    """Accuracy of a model that always predicts the most frequent label: the floor any real result must clear."""
    labels = np.asarray(labels)
    if labels.size == 0:
        raise FerDataError("majority_class_accuracy needs at least one label")
    return float(np.bincount(labels, minlength=NUM_CLASSES).max() / labels.size)


def first_of_each_class(labels: np.ndarray) -> np.ndarray:
    """Position of the first image of every class present, in csv label order (for previews and grids)."""
    return np.unique(np.asarray(labels), return_index=True)[1].astype(np.int64)  # unique sorts: label order


def subsample(dataset: FerDataset, n_train: int, *, seed: int = 0) -> FerDataset:
    """A stratified, seeded subset of ``n_train`` training images (val and test untouched), for quick runs."""
    if not isinstance(n_train, (int, np.integer)) or n_train < NUM_CLASSES:
        raise FerDataError(f"subset must be an integer of at least {NUM_CLASSES}, got {n_train!r}")
    if n_train >= len(dataset.train):
        return dataset
    keep, _ = _stratified_partition(dataset.train.labels, n_train, seed)
    return dataclasses.replace(dataset, train=dataset.train.take(np.sort(keep)))


def source_fingerprint(layout: str, root: Path, *, resize: bool = False) -> str:
    """A hash of every source file's name, size and modification time (cheap, and changes when the data does)."""
    digest = hashlib.sha256(f"{CACHE_FORMAT_VERSION}|{layout}|resize={resize}|{root.resolve()}".encode())
    files = [root] if layout in ("csv", "bundle") else sorted(p for p in root.rglob("*") if p.is_file())
    for file in files:
        stat = file.stat()
        digest.update(f"{file.relative_to(root) if file != root else file.name}|{stat.st_size}|{stat.st_mtime_ns}\n"
                      .encode())
    return digest.hexdigest()[:20]


# --- The readers: each returns {split: (images uint8 (n,48,48,1), labels int64 (n,), ids str (n,))} ------------------
RawSplits = dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]


def _read_csv(csv_file: Path, *, resize: bool) -> RawSplits:
    try:
        frame = pd.read_csv(csv_file, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as error:
        raise FerDataError(f"{csv_file}: cannot be parsed as a csv file ({error})") from None
    missing = [column for column in CSV_COLUMNS if column not in frame.columns]
    if missing:
        raise FerDataError(f"{csv_file}: missing column(s) {', '.join(missing)}; expected columns "
                           f"{', '.join(CSV_COLUMNS)}, found {', '.join(map(str, frame.columns)) or 'none'}")
    line_numbers = np.arange(len(frame)) + 2  # 1-based, after the header line

    def check(good: pd.Series | np.ndarray, problem: Callable[[int], str]) -> None:
        """Raise at the first row where ``good`` is False, naming the file, the line and ``problem(row)``."""
        bad = np.flatnonzero(~np.asarray(good))
        if bad.size:
            raise FerDataError(f"{csv_file}, line {line_numbers[bad[0]]}: {problem(int(bad[0]))}")

    emotion = pd.to_numeric(frame["emotion"].str.strip(), errors="coerce")
    codes = ", ".join(f"{i} {e}" for i, e in enumerate(EMOTIONS))
    check(emotion.isin(range(NUM_CLASSES)),
          lambda row: f"emotion {frame['emotion'].iloc[row]!r} is not an integer code 0-{NUM_CLASSES - 1} ({codes})")
    usage = frame["Usage"].str.strip()
    check(usage.isin(CSV_USAGE_TO_SPLIT.keys()),
          lambda row: f"unknown Usage {frame['Usage'].iloc[row]!r}; expected one of {', '.join(CSV_USAGE_TO_SPLIT)}")
    pixels = frame["pixels"].str.strip()
    check(pixels.str.fullmatch(r"\d+(?:\s+\d+)*"),
          lambda row: f"pixels must be {PIXELS_PER_IMAGE} integers 0-255 separated by spaces, got "
                      f"{_preview(frame['pixels'].iloc[row])}")
    counts = pixels.str.count(r"\d+").to_numpy()
    if not resize:
        check(counts == PIXELS_PER_IMAGE, lambda row: f"pixels holds {counts[row]} values, expected "
                                                      f"{PIXELS_PER_IMAGE} (a {IMAGE_SIZE}x{IMAGE_SIZE} image)")

    images = np.empty((len(frame), IMAGE_SIZE, IMAGE_SIZE, 1), dtype=np.uint8)
    for row, text in enumerate(pixels):
        values = np.array(text.split(), dtype=np.int64)
        if values.max() > 255:
            raise FerDataError(f"{csv_file}, line {line_numbers[row]}: pixel value {values.max()} is outside 0-255")
        if values.size != PIXELS_PER_IMAGE:  # only reached with resize=True: square images of another size
            side = int(round(values.size ** 0.5))
            if side * side != values.size:
                raise FerDataError(f"{csv_file}, line {line_numbers[row]}: {values.size} pixel values do not form a "
                                   f"square image, expected {PIXELS_PER_IMAGE}")
            values = np.asarray(_resized(Image.fromarray(values.reshape(side, side).astype(np.uint8))))
        images[row, :, :, 0] = values.reshape(IMAGE_SIZE, IMAGE_SIZE)

    labels = emotion.to_numpy().astype(np.int64)
    ids = np.array([f"{csv_file.name}:line{n}" for n in line_numbers])
    in_split = {split: (usage == usage_name).to_numpy() for usage_name, split in CSV_USAGE_TO_SPLIT.items()}
    return {split: (images[rows], labels[rows], ids[rows]) for split, rows in in_split.items()}


def _read_folders(root: Path, *, resize: bool) -> RawSplits:
    raw: RawSplits = {}
    for split in SPLITS:
        if not (root / split).is_dir():
            if split == "val":
                continue
            raise FerDataError(f"'{root}' has no {split}/ folder; {ACCEPTED_LAYOUTS}")
        files = _split_folder_files(root / split)
        images = np.empty((len(files), IMAGE_SIZE, IMAGE_SIZE, 1), dtype=np.uint8)
        for index, (file, _) in enumerate(files):
            images[index, :, :, 0] = _decode_image(file, resize=resize)
        labels = np.array([code for _, code in files], dtype=np.int64)
        raw[split] = (images, labels, np.array([str(file.relative_to(root)) for file, _ in files]))
    return raw


def _split_folder_files(folder: Path) -> list[tuple[Path, int]]:
    """The image files of one split folder with their label codes, in a fixed order (class folders, then names)."""
    codes = {name: code for code, name in enumerate(EMOTIONS)}
    files: list[tuple[Path, int]] = []
    for entry in sorted(entry for entry in folder.iterdir() if not entry.name.startswith(".")):
        if not entry.is_dir():
            raise FerDataError(f"unexpected file '{entry}' in {folder}: expected one sub-folder per class "
                               f"({', '.join(EMOTIONS)})")
        code = codes.get(entry.name.lower())
        if code is None:
            raise FerDataError(f"unknown class folder '{entry}': expected one of {', '.join(EMOTIONS)} "
                               f"(case-insensitive)")
        files.extend((file, code) for file in sorted(entry.iterdir()) if not file.name.startswith("."))
    return files


def _decode_image(file: Path, *, resize: bool, encoded: bytes | None = None) -> np.ndarray:
    """Decode one image file (or its ``encoded`` bytes, named ``file`` in messages) to 48x48 uint8 grayscale."""
    if encoded is None and file.suffix.lower() not in IMAGE_SUFFIXES:
        raise FerDataError(f"'{file}' is not an image file: expected one of {', '.join(IMAGE_SUFFIXES)}")
    try:
        with Image.open(file if encoded is None else io.BytesIO(encoded)) as opened:
            image = opened.convert("L")  # convert() reads every pixel: a truncated file fails here
    except (OSError, ValueError) as error:  # PIL raises UnidentifiedImageError (an OSError) or OSError when truncated
        raise FerDataError(f"'{file}' is corrupt or unreadable as an image ({type(error).__name__}: {error})") from None
    if image.size != (IMAGE_SIZE, IMAGE_SIZE):
        if not resize:
            raise FerDataError(f"'{file}' is {image.size[0]}x{image.size[1]}, expected {IMAGE_SIZE}x{IMAGE_SIZE}; "
                               f"pass resize=True to resize such images")
        image = _resized(image)
    return np.asarray(image, dtype=np.uint8)


def _resized(image: Image.Image) -> Image.Image:
    return image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)


def _preview(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


# --- Data bundles: a whole source in one compressed file, for machines without the original (the offline GPU bundle)
def write_bundle(source: str | os.PathLike[str], destination: str | os.PathLike[str]) -> Path:
    """Pack a csv or folder source into one ``.npz`` that :func:`load_fer2013` reads: images stay encoded (files
    byte for byte, csv pixels as PNG), each split with its ids, labels and its pixels' SHA-256, checked on reading."""
    layout, root = detect_layout(Path(source).expanduser())
    if layout == "bundle":
        raise FerDataError(f"'{root}' is already a data bundle")
    arrays: dict[str, np.ndarray] = {"format": np.array(BUNDLE_FORMAT), "source": np.array(str(root)),
                                     "source_layout": np.array(layout)}
    decoded = _read_folders(root, resize=False) if layout == "folders" else _read_csv(root, resize=False)
    for split, (images, labels, ids) in decoded.items():
        if layout == "folders":
            encoded = [file.read_bytes() for file, _ in _split_folder_files(root / split)]
        else:
            encoded = []
            for image in images:
                buffer = io.BytesIO()
                Image.fromarray(image[:, :, 0]).save(buffer, format="PNG", optimize=True)
                encoded.append(buffer.getvalue())
        arrays.update(_pack_split(split, encoded, images, labels, ids))
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=destination.parent, suffix=".npz.tmp", delete=False) as handle:
        np.savez_compressed(handle, **arrays)
    os.replace(handle.name, destination)
    return destination


def _pack_split(split: str, encoded: list[bytes], images: np.ndarray, labels: np.ndarray,
                ids: np.ndarray) -> dict[str, np.ndarray]:
    offsets = np.cumsum([0, *map(len, encoded)], dtype=np.int64)
    return {f"{split}_encoded": np.frombuffer(b"".join(encoded), dtype=np.uint8), f"{split}_offsets": offsets,
            f"{split}_labels": labels, f"{split}_ids": ids,
            f"{split}_pixels_sha256": np.array(hashlib.sha256(images.tobytes()).hexdigest())}


def _read_bundle(file: Path, *, resize: bool) -> RawSplits:
    try:
        with np.load(file, allow_pickle=False) as stored:
            contents = {name: stored[name] for name in stored.files}
    except (OSError, ValueError) as error:
        raise FerDataError(f"'{file}' cannot be read as a data bundle ({error})") from None
    if str(contents.get("format", "")) != BUNDLE_FORMAT:
        raise FerDataError(f"'{file}' is not a fer-study data bundle (expected format {BUNDLE_FORMAT!r}, got "
                           f"{str(contents.get('format', 'none'))!r}); make one with `make gpu-bundle`")
    raw: RawSplits = {}
    for split in (split for split in SPLITS if f"{split}_encoded" in contents):
        blob, offsets = contents[f"{split}_encoded"].tobytes(), contents[f"{split}_offsets"]
        ids = contents[f"{split}_ids"]
        images = np.empty((len(ids), IMAGE_SIZE, IMAGE_SIZE, 1), dtype=np.uint8)
        for index, name in enumerate(ids):
            images[index, :, :, 0] = _decode_image(Path(f"{file}:{name}"), resize=resize,
                                                   encoded=blob[offsets[index]:offsets[index + 1]])
        if hashlib.sha256(images.tobytes()).hexdigest() != str(contents[f"{split}_pixels_sha256"]):
            # What the source's files decode to on this machine; another libjpeg can differ by a grey level.
            warnings.warn(f"{file}: the decoded {split} pixels differ from those of the machine that made the "
                          f"bundle (another JPEG decoder); they are what the source's files decode to here",
                          stacklevel=2)
        raw[split] = (images, contents[f"{split}_labels"].astype(np.int64), ids)
    if "train" not in raw or "test" not in raw:
        raise FerDataError(f"'{file}': a data bundle needs train and test splits, found {', '.join(raw) or 'none'}")
    return raw


# --- Splits, validation carving and the cache -------------------------------------------------------------------------
def _assemble(raw: RawSplits, *, layout: str, root: Path, fingerprint: str, val_fraction: float,
              seed: int) -> FerDataset:
    splits = {name: Split(name, *arrays) for name, arrays in raw.items()}
    for name in ("train", "test"):
        if len(splits[name]) == 0:
            usage = next(usage for usage, split in CSV_USAGE_TO_SPLIT.items() if split == name)
            where = {"csv": f"no rows with Usage {usage}", "folders": f"no images in {name}/",
                     "bundle": f"no {name} images in the bundle"}[layout]
            raise FerDataError(f"'{root}': the {name} split is empty ({where})")
    if "val" in splits and len(splits["val"]) > 0:
        val_origin = {"csv": "PublicTest", "folders": "val/", "bundle": "the bundle's val split"}[layout]
    else:
        if layout == "csv":
            raise FerDataError(f"'{root}': the val split is empty (no rows with Usage PublicTest)")
        n_val = int(round(len(splits["train"]) * val_fraction))
        if n_val < 1 or n_val >= len(splits["train"]):
            raise FerDataError(f"'{root}': train/ holds {len(splits['train'])} images, too few to carve a validation "
                               f"split of val_fraction {val_fraction:g} from it (it would hold {n_val}); add images, "
                               f"a val/ folder, or change val_fraction")
        val_idx, train_idx = _stratified_partition(splits["train"].labels, n_val, seed)
        splits["val"] = dataclasses.replace(splits["train"].take(np.sort(val_idx)), name="val")
        splits["train"] = splits["train"].take(np.sort(train_idx))
        val_origin = f"carved {val_fraction:.0%} of train/ (stratified, seed {seed})"
    return FerDataset(**splits, source=str(root), layout=layout, val_origin=val_origin, fingerprint=fingerprint)


def _stratified_partition(labels: np.ndarray, n_first: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a stratified, seeded draw of ``n_first`` items, and of the rest."""
    from sklearn.model_selection import train_test_split

    counts = np.bincount(labels, minlength=NUM_CLASSES)
    # sklearn cannot stratify a class with a single image, nor draw fewer items than there are classes: then the
    # draw is plain random (only tiny hand-made sets get here; FER2013's smallest class has 436 images)
    stratify = labels if counts[counts > 0].min() >= 2 and n_first >= np.count_nonzero(counts) else None
    first, rest = train_test_split(np.arange(len(labels)), train_size=n_first, random_state=seed, stratify=stratify)
    return first, rest


def default_cache_dir() -> Path:
    return Path(os.environ.get("FER_STUDY_CACHE", Path.home() / ".cache" / "fer-study"))


def _cache_file(cache_dir: str | os.PathLike[str] | None, fingerprint: str) -> Path:
    return Path(cache_dir if cache_dir is not None else default_cache_dir()) / f"fer2013-{fingerprint}.npz"


def _read_cache(cache_dir: str | os.PathLike[str] | None, fingerprint: str) -> RawSplits | None:
    try:
        with np.load(_cache_file(cache_dir, fingerprint), allow_pickle=False) as stored:
            return {split: (stored[f"{split}_images"], stored[f"{split}_labels"], stored[f"{split}_ids"])
                    for split in SPLITS if f"{split}_images" in stored.files}
    except (OSError, ValueError, KeyError):  # a missing or damaged cache is rebuilt, never trusted
        return None


def _write_cache(cache_dir: str | os.PathLike[str] | None, fingerprint: str, raw: RawSplits) -> None:
    file = _cache_file(cache_dir, fingerprint)
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        arrays = {f"{split}_{part}": array for split, split_arrays in raw.items()
                  for part, array in zip(("images", "labels", "ids"), split_arrays)}
        with tempfile.NamedTemporaryFile(dir=file.parent, suffix=".npz.tmp", delete=False) as handle:
            np.savez(handle, **arrays)
        os.replace(handle.name, file)
    except OSError:  # a read-only or full cache location only costs speed
        pass


# --- Synthetic data and data discovery --------------------------------------------------------------------------------
SYNTHETIC_NOTICE = ("SYNTHETIC DATA: these results come from fer_lib's generated cartoon faces, not from FER2013, and "
                    "say nothing about real facial expression recognition. To use real data, download FER2013 ("
                    + FER2013_SOURCE_HINT + ") and pass --data DIR, set FER2013_DIR, or place it in data/fer2013.")


def load_synthetic(n_train: int = 2000, n_val: int = 500, n_test: int = 500, *, seed: int = 0,
                   class_balance: str | list[float] = "balanced") -> FerDataset:
    """A :class:`FerDataset` of synthetic faces (see :mod:`fer_lib.core.synthetic`), marked as synthetic everywhere."""
    from fer_lib.core.synthetic import make_synthetic_faces

    splits = {}
    for offset, (name, n) in enumerate((("train", n_train), ("val", n_val), ("test", n_test))):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise FerDataError(f"synthetic_{name} must be a positive integer, got {n!r}")
        images, labels = make_synthetic_faces(int(n), seed=seed * 1000 + offset, class_balance=class_balance)
        splits[name] = Split(name, images, labels, np.array([f"synthetic-{name}-{i}" for i in range(n)]))
    fingerprint = hashlib.sha256(f"synthetic|{n_train}|{n_val}|{n_test}|{seed}|{class_balance}".encode()).hexdigest()
    return FerDataset(**splits, source=f"synthetic (fer_lib.core.synthetic, seed {seed}, balance {class_balance})",
                      layout="synthetic", val_origin="generated separately (synthetic)",
                      fingerprint=fingerprint[:20], is_synthetic=True)


def discover_data(explicit: str | os.PathLike[str] | None = None, *,
                  project_root: str | os.PathLike[str] = ".") -> tuple[Path | None, str]:
    """Where FER2013 is, and how it was chosen: ``explicit`` (must exist), else ``$FER2013_DIR``, else
    ``data/fer2013``; None (run on synthetic data) if nowhere."""
    if explicit is not None and str(explicit) != "":
        path = Path(explicit).expanduser()
        if not path.exists():
            raise FerDataError(f"data folder '{path}' does not exist. {ACCEPTED_LAYOUTS}. {FER2013_SOURCE_HINT}")
        return path, f"given explicitly: {path}"
    if from_env := os.environ.get("FER2013_DIR"):
        path = Path(from_env).expanduser()
        if not path.exists():
            raise FerDataError(f"FER2013_DIR points to '{path}', which does not exist. {FER2013_SOURCE_HINT}")
        return path, f"from FER2013_DIR: {path}"
    default = Path(project_root) / "data" / "fer2013"
    if default.exists():
        return default, f"found in {default}"
    return None, "no FER2013 found (--data, FER2013_DIR, data/fer2013): using the synthetic demo data"


def data_source(config: DataConfig, *, project_root: str | os.PathLike[str] = ".") -> tuple[Path | None, str]:
    """Where a run's data comes from: a FER2013 path, or None for the synthetic demo; and how it was chosen."""
    if config.synthetic:
        return None, "synthetic data requested (synthetic: true)"
    return discover_data(config.data, project_root=project_root)


def load_study_data(config: DataConfig, *, project_root: str | os.PathLike[str] = ".") -> tuple[FerDataset, str]:
    """The data set a run uses and where it came from (loudly when synthetic); every problem of the data is a
    :class:`FerDataError` naming it, which the runner raises before it makes a run folder."""
    require_config(config, DataConfig, "load_study_data's config")
    path, how = data_source(config, project_root=project_root)
    if path is None:
        dataset = load_synthetic(config.synthetic_train, config.synthetic_val, config.synthetic_test,
                                 seed=config.seed, class_balance=config.synthetic_balance)
        how = f"{how}. {SYNTHETIC_NOTICE}"
    else:
        dataset = load_fer2013(path, val_fraction=config.val_fraction, seed=config.seed, resize=config.resize)
    if config.subset is not None:
        dataset = subsample(dataset, config.subset, seed=config.seed)
        how = f"{how} (train subset of {len(dataset.train)} images)"
    return dataset, how
