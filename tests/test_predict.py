"""``fer-study predict`` and fer_lib.app.predict: faces found in real photos, cropped as FER2013 shows faces, classified
by a run's trained model(s), annotated copies and predictions.json written; and every user error.

The photos are scikit-image's sample photos, which its wheel ships (``skimage/data/astronaut.png``: one face;
``rocket.jpg``: none), so nothing is downloaded. The run is a tiny finished run (one basic_cnn with 8 filters, one
epoch on 98 synthetic images: a few seconds), made once for the module.
"""

from __future__ import annotations

import importlib.resources
import dataclasses
import json
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fer_lib.core import records
from fer_lib.app import cli, predict, runs
from fer_lib.core.labels import EMOTIONS, IMAGE_SIZE, NUM_CLASSES
from fer_lib.core.evaluate import top_k

try:  # see test_widgets.py
    from fixtures_runs import make_finished_run, make_run_without_models
except ImportError:  # pragma: no cover
    from tests.fixtures_runs import make_finished_run, make_run_without_models

TINY_RUN = {"name": "predict-test", "synthetic_train": 70, "synthetic_val": 14, "synthetic_test": 14,
            "model_options": {"basic_cnn": {"filters": [8], "dense_units": [16]}}}


def sample(name: str) -> Path:
    pytest.importorskip("skimage", reason="scikit-image (the `dev` extra) ships the sample photos")
    path = Path(str(importlib.resources.files("skimage.data") / name))
    assert path.is_file(), f"{name} is not inside the installed scikit-image wheel"
    return path


@pytest.fixture(scope="module")
def astronaut() -> Path:
    return sample("astronaut.png")


@pytest.fixture(scope="module")
def rocket() -> Path:
    return sample("rocket.jpg")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_finished_run(tmp_path_factory.mktemp("predict") / "outputs", TINY_RUN)


def run_cli(args: Sequence[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = cli.main(list(args))
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert lines[0].startswith("fer-study: error: ")
    return lines[0]


class FakeModel:
    """Stands in for a Keras model: ``predict`` answers fixed probabilities for every image (and counts calls)."""

    def __init__(self, probabilities: Sequence[float]) -> None:
        self.row = np.asarray(probabilities, dtype=np.float64)
        self.batches: list[tuple[int, ...]] = []

    def predict(self, images: np.ndarray, batch_size: int, verbose: int = 0) -> np.ndarray:
        self.batches.append(images.shape)
        return np.tile(self.row, (len(images), 1))


def one_hot(index: int, weight: float = 1.0) -> list[float]:
    row = np.full(NUM_CLASSES, (1 - weight) / (NUM_CLASSES - 1))
    row[index] = weight
    return list(row)


# --------------------------------------------------------------------------------------------------------------------
# Pure steps
# --------------------------------------------------------------------------------------------------------------------


def test_average_probabilities_over_seeds_then_models() -> None:
    a_seed0, a_seed1 = np.array([one_hot(3)]), np.array([one_hot(0)])  # model a: half happy, half angry
    b = np.array([one_hot(6)])
    ensemble, means = predict.average_probabilities({"a": [a_seed0, a_seed1], "b": [b]})
    np.testing.assert_allclose(means["a"][0], (np.array(one_hot(3)) + one_hot(0)) / 2)
    # every model weighs the same, whatever its number of seeds
    np.testing.assert_allclose(ensemble[0], [0.25, 0, 0, 0.25, 0, 0, 0.5])
    np.testing.assert_allclose(ensemble.sum(axis=1), 1.0)
    with pytest.raises(ValueError, match="no model probabilities"):
        predict.average_probabilities({})
    with pytest.raises(ValueError, match="model 'a'"):
        predict.average_probabilities({"a": [np.zeros((1, 3))]})


def test_classify_faces_pads_batches_and_averages_the_ensemble() -> None:
    happy, sad = FakeModel(one_hot(3, 0.8)), FakeModel(one_hot(4, 0.6))
    faces = np.zeros((3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    probabilities, per_model = predict.classify_faces(faces, {"cnn": [happy], "resnet": [sad]})
    assert probabilities.shape == (3, NUM_CLASSES) and set(per_model) == {"cnn", "resnet"}
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    assert EMOTIONS[int(probabilities[0].argmax())] == "happy"
    np.testing.assert_allclose(probabilities[0][3], (0.8 + 0.4 / 6) / 2)
    assert happy.batches == [(4, IMAGE_SIZE, IMAGE_SIZE, 1)]  # 3 faces in one batch padded to 4
    predict.classify_faces(faces[:1], {"cnn": [happy]}, tta=True)
    assert happy.batches[-2:] == [(1, IMAGE_SIZE, IMAGE_SIZE, 1)] * 2  # the face and its mirror
    empty, _ = predict.classify_faces(faces[:0], {"cnn": [happy]})
    assert empty.shape == (0, NUM_CLASSES)
    with pytest.raises(ValueError, match="faces must have shape"):
        predict.classify_faces(np.zeros((1, 32, 32)), {"cnn": [happy]})


def test_top_k_and_face_record() -> None:
    face = predict.Face(box=predict.Box(1, 2, 30, 40), crop=predict.Box(-3, 0, 44, 44), at_border=True,
                        probabilities=np.array([0.05, 0.0, 0.1, 0.6, 0.05, 0.15, 0.05]))
    assert face.emotion == "happy" and face.probability == pytest.approx(0.6)
    assert [name for name, _ in face.top3] == ["happy", "surprise", "fear"]
    record = json.loads(json.dumps(dataclasses.asdict(face), default=list))  # as predictions.json holds it
    assert record["box"] == [1, 2, 30, 40] and record["crop"][0] == -3 and record["at_border"] is True
    assert record["probabilities"] == pytest.approx([0.05, 0.0, 0.1, 0.6, 0.05, 0.15, 0.05])
    assert [name for name, _ in record["top3"]] == ["happy", "surprise", "fear"]
    with pytest.raises(ValueError, match="probabilities must hold 7 values"):
        top_k([0.5, 0.5])


def test_a_photo_whose_name_holds_a_colon_is_described_by_its_own_result() -> None:
    face = predict.Face(box=predict.Box(0, 0, 48, 48), probabilities=np.array([0.05, 0.0, 0.1, 0.6, 0.05, 0.15, 0.05]))
    none = predict.PhotoResult(source="holiday: beach.png")
    one = predict.PhotoResult(source="a: b.jpg", faces=[face])
    skipped = predict.PhotoResult(source="c: d.png", error="cannot identify image file")
    assert predict.photo_text(none) == "no face found"
    assert predict.photo_line(none) == "holiday: beach.png: no face found"
    assert predict.photo_text(one) == "1 face: #1 happy 0.60 (surprise 0.15, fear 0.10)"
    assert predict.photo_line(skipped) == "c: d.png: skipped: cannot identify image file"


def test_crop_face_pads_at_the_border_and_keeps_the_face_centred() -> None:
    gray = np.zeros((100, 120), dtype=np.uint8)
    gray[:, :60] = 200  # left half bright
    gray[0, :] = 50  # top row darker: the padding above must repeat it
    crop = predict.crop_face(gray, (-10, -10, 40, 40), margin=0.25)  # a face cut by the top-left corner
    assert crop.shape == (IMAGE_SIZE, IMAGE_SIZE) and crop.dtype == np.uint8
    assert crop[0, 0] == 50 and crop[-1, 0] == 200  # padded by repeating the edge, not black
    inside = predict.crop_face(gray, (10, 20, 30, 30), margin=0.0)
    assert (inside == 200).all()
    far = predict.crop_face(gray, (100, 80, 40, 40), margin=0.5)  # bottom-right corner, mostly outside
    assert far.shape == (IMAGE_SIZE, IMAGE_SIZE)
    assert predict.crop_box((10, 10, 20, 30), margin=0.1) == (2, 7, 36, 36)  # square on the larger side, centred
    with pytest.raises(ValueError, match="margin must be >= 0"):
        predict.crop_box((0, 0, 10, 10), margin=-0.1)
    assert predict.clip_box((-5, 90, 20, 20), 120, 100) == (0, 90, 15, 10)


def test_detect_faces_in_real_photos(astronaut: Path, rocket: Path) -> None:
    import cv2

    _, gray = predict.load_photo(astronaut)
    boxes = predict.detect_faces(gray)
    assert len(boxes) == 1
    x, y, w, h = boxes[0]
    assert 150 < x < 210 and 40 < y < 100 and 70 < w < 120  # the astronaut's face (about 178, 67, 93, 93)
    assert predict.detect_faces(predict.load_photo(rocket)[1]) == []
    # a big photo is downscaled for detection, and the box comes back in its own pixels
    big = cv2.resize(gray, (2048, 2048), interpolation=cv2.INTER_LINEAR)
    big_boxes = predict.detect_faces(big)
    assert any(abs(bx - 4 * x) < 40 and abs(by - 4 * y) < 40 and abs(bw - 4 * w) < 60 for bx, by, bw, _ in big_boxes)
    # a face cut by the photo's top-left edge is still found, and its box extends past the edge
    cut = gray[y + 10:, x + 10:]
    cut_boxes = predict.detect_faces(cut)
    assert any(bx < 0 and by < 0 for bx, by, _, _ in cut_boxes), cut_boxes
    strict = predict.detect_faces(cut, min_neighbors=8)  # stricter: fewer boxes, the face still among them
    assert len(strict) <= len(cut_boxes) and any(bx < 0 and by < 0 for bx, by, _, _ in strict), strict


def test_load_photo_errors_name_the_file_and_exif_turns_photos_upright(tmp_path: Path, rocket: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    with pytest.raises(predict.PhotoError, match=r"'.*notes.txt' is not a readable image"):
        predict.load_photo(text)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(rocket.read_bytes()[:3000])
    with pytest.raises(predict.PhotoError, match="truncated.jpg' is not a readable image"):
        predict.load_photo(truncated)
    with pytest.raises(predict.PhotoError, match="'upload.png' is not a readable image"):
        predict.load_photo(b"\x89PNG broken", "upload.png")
    rotated = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees to show upright
    Image.new("RGB", (60, 40), (200, 10, 10)).save(rotated, exif=exif)
    rgb, gray = predict.load_photo(rotated)
    assert rgb.shape == (60, 40, 3) and gray.shape == (60, 40)
    _, from_bytes = predict.load_photo(rocket.read_bytes(), "rocket.jpg")
    assert from_bytes.shape == predict.load_photo(rocket)[1].shape


def test_find_photos(tmp_path: Path, astronaut: Path) -> None:
    folder = tmp_path / "album"
    (folder / "nested").mkdir(parents=True)
    shutil.copy(astronaut, folder / "b.png")
    shutil.copy(astronaut, folder / "A.JPG")  # the suffix decides, in any case
    (folder / "readme.txt").write_text("x")
    shutil.copy(astronaut, folder / "nested" / "c.png")  # sub-folders are not searched
    (tmp_path / "empty").mkdir()
    found, problems = predict.find_photos([folder, astronaut, tmp_path / "empty"])
    assert [p.name for p in found] == ["A.JPG", "b.png", "astronaut.png"]
    assert len(problems) == 1 and "holds no photo" in problems[0].error
    with pytest.raises(predict.PredictError, match="no such file or folder: .*missing.jpg"):
        predict.find_photos([astronaut, tmp_path / "missing.jpg"])


def test_annotate_draws_boxes_and_leaves_the_photo_alone() -> None:
    rgb = np.full((200, 300, 3), 255, dtype=np.uint8)
    face = predict.Face(box=(100, 80, 60, 60), probabilities=np.array(one_hot(3, 0.9)))
    top_face = predict.Face(box=(0, 0, 50, 50), probabilities=np.array(one_hot(4, 0.5)))  # label inside the box
    drawn = predict.annotate(rgb, [face, top_face])
    assert drawn.shape == rgb.shape and (rgb == 255).all()
    assert tuple(drawn[110, 100]) == predict.EMOTION_COLORS["happy"]  # the box's left edge
    assert (drawn[60:80, 100:140] != 255).any()  # the label above the box
    assert tuple(drawn[30, 0]) == predict.EMOTION_COLORS["sad"]
    assert predict.face_label(1, face) == "1: happy 0.90"


def test_annotated_names_never_collide(tmp_path: Path) -> None:
    taken: set[str] = set()
    (tmp_path / "z.jpg").write_bytes(b"")  # already in the folder
    names = [predict.annotated_name(s, tmp_path, taken)
             for s in ("a/x.png", "b/x.png", "x.jpeg", "y.webp", "predictions", "z.jpg")]
    assert names == ["x.png", "x-2.png", "x.jpg", "y.jpg", "predictions.jpg", "z-2.jpg"]


def test_run_warnings_say_synthetic_and_collapsed(tmp_path: Path) -> None:
    folder = tmp_path / "models" / "basic_cnn"
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"synthetic": True, "test": {"collapse_warning": "collapsed: x"}}))
    warnings = predict.run_warnings({"basic_cnn": [folder / "best.keras"]})
    assert "SYNTHETIC" in warnings[0] and "collapsed: x" in warnings[1]
    (folder / "metrics.json").write_text(json.dumps({"synthetic": False, "test": {"collapse_warning": None}}))
    assert predict.run_warnings({"basic_cnn": [folder / "best.keras"]}) == []


# --------------------------------------------------------------------------------------------------------------------
# With a trained run
# --------------------------------------------------------------------------------------------------------------------


def test_predict_photos_on_real_photos(run_dir: Path, astronaut: Path, rocket: Path) -> None:
    predictions = predict.predict_photos(run_dir, [astronaut, rocket])
    assert predictions.out_dir.parent == run_dir / predict.PREDICTIONS_DIR
    assert predictions.out_dir.name.endswith("-basic_cnn")
    face_photo, empty_photo = predictions.photos
    assert face_photo.status == "ok" and len(face_photo.faces) == 1
    assert empty_photo.status == "no_face" and empty_photo.faces == []
    assert predictions.exit_code == 0
    face = face_photo.faces[0]
    assert face.probabilities.shape == (NUM_CLASSES,) and face.probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    for photo in predictions.photos:  # both photos get an annotated copy (the one without a face unchanged)
        assert photo.annotated is not None and photo.annotated.is_file()
        with Image.open(photo.annotated) as image:
            assert image.size == photo.size
    assert face_photo.annotated.name == "astronaut.png" and empty_photo.annotated.name == "rocket.jpg"

    record = json.loads(predictions.json_path.read_text())
    assert record["model"] == "ensemble" and list(record["models"]) == ["basic_cnn"]
    assert record["summary"] == {"photos": 2, "faces": 1, "no_face": [str(rocket)], "skipped": []}
    assert any("SYNTHETIC" in warning for warning in record["warnings"])
    face_record = record["photos"][0]["faces"][0]
    assert len(face_record["box"]) == 4 and record["class_names"] == list(EMOTIONS)
    assert sum(face_record["probabilities"]) == pytest.approx(1.0, abs=1e-4)
    assert len(face_record["top3"]) == 3 and face_record["top3"][0][0] == face_record["emotion"] == face.emotion
    assert record["photos"][1] == {"source": str(rocket), "status": "no_face", "size": [640, 427],
                                   "annotated": str(empty_photo.annotated), "faces": [], "error": None}
    # a second call never overwrites the first
    again = predict.predict_photos(run_dir, [rocket])
    assert again.out_dir != predictions.out_dir and predictions.json_path.is_file()


def test_uploads_whole_image_and_several_seeds(run_dir: Path, astronaut: Path, tmp_path: Path) -> None:
    # a several-seed run: seeds/seed-<s>/models/basic_cnn/ (copies of the trained model), averaged per model
    seeded = tmp_path / "seeded"
    seeded.mkdir()
    shutil.copy(run_dir / records.PARAMS_FILE, seeded / records.PARAMS_FILE)
    for seed in (0, 1):
        shutil.copytree(records.model_dir(run_dir, "basic_cnn"), records.model_dir(seeded, "basic_cnn", seed),
                        ignore=shutil.ignore_patterns("*.npz", "*.png"))
    predictor = predict.Predictor(seeded, "basic_cnn", whole_image=True)
    assert [len(paths) for paths in predictor.model_files.values()] == [2]
    assert predictor.description == "basic_cnn (2 seeds)"
    face_crop = predict.crop_face(predict.load_photo(astronaut)[1], (177, 67, 93, 93))
    buffer = Image.fromarray(face_crop)
    upload = tmp_path / "face.png"
    buffer.save(upload)
    predictions = predict.predict_photos(seeded, [("face.png", upload.read_bytes())], predictor=predictor,
                                         out=tmp_path / "out")
    (photo,) = predictions.photos
    assert photo.source == "face.png" and len(photo.faces) == 1 and photo.faces[0].box == (0, 0, 48, 48)
    assert (tmp_path / "out" / "face.png").is_file() and (tmp_path / "out" / predict.PREDICTIONS_FILE).is_file()
    with pytest.raises(predict.PredictError, match="already holds predictions.json"):
        predict.predict_photos(seeded, [astronaut], predictor=predictor, out=tmp_path / "out")


# --------------------------------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------------------------------


def test_cli_predict(run_dir: Path, astronaut: Path, rocket: Path, tmp_path: Path,
                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code, stdout, stderr = run_cli(["predict", str(run_dir), str(astronaut), str(rocket), "--out", str(out)], capsys)
    assert code == 0, stderr
    lines = stdout.splitlines()
    assert lines[0] == f"basic_cnn of run {run_dir.name}"
    assert lines[1].startswith(f"{astronaut}: 1 face: #1 ")
    assert lines[2] == f"{rocket}: no face found"  # reported, not an error
    assert lines[3] == f"2 photos, 1 face (1 photo without a face): annotated photos and predictions.json in {out}"
    assert "fer-study: warning: basic_cnn trained on SYNTHETIC cartoon faces" in stderr
    assert "error" not in stderr
    assert sorted(p.name for p in out.iterdir()) == ["astronaut.png", "predictions.json", "rocket.jpg"]


def test_cli_no_face_only_is_not_an_error(run_dir: Path, rocket: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, stderr = run_cli(["predict", str(run_dir), str(rocket), "--out", str(tmp_path / "o")], capsys)
    assert code == 0 and f"{rocket}: no face found" in stdout and "error" not in stderr


def test_cli_unreadable_files_are_named_and_skipped(run_dir: Path, astronaut: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a photo")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    out = tmp_path / "out"
    code, stdout, stderr = run_cli(["predict", str(run_dir), str(notes), str(astronaut), str(broken),
                                    "--out", str(out)], capsys)
    assert code == 1
    errors = [line for line in stderr.splitlines() if line.startswith("fer-study: error: ")]
    assert len(errors) == 2
    assert f"'{notes}' is not a readable image" in errors[0] and errors[0].endswith("; skipped")
    assert f"'{broken}' is not a readable image" in errors[1]
    assert f"{astronaut}: 1 face" in stdout and "2 files skipped" in stdout  # the good photo is still done
    record = json.loads((out / "predictions.json").read_text())
    assert record["summary"]["skipped"] == [str(notes), str(broken)]
    assert [p["status"] for p in record["photos"]] == ["error", "ok", "error"]


def run_without_weights(run_dir: Path, tmp_path: Path) -> Path:
    """A copy of a finished run without its best.keras (as runs brought back from a GPU machine are)."""
    copy = tmp_path / "no-weights"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("best.keras", "predictions"))
    return copy


@pytest.mark.parametrize("case", ["not_a_run", "missing_run", "no_models", "no_weights", "unknown_model",
                                  "missing_photo", "predictions_exist", "negative_margin", "min_neighbors"])
def test_cli_user_errors_are_one_line_and_exit_2(case: str, run_dir: Path, astronaut: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    used = tmp_path / "used"
    used.mkdir()
    (used / "predictions.json").write_text("{}")
    args, expected = {
        "not_a_run": ([str(folder), str(astronaut)], re.escape(f"'{folder}' is not a run folder (no params.yaml")),
        "missing_run": ([str(tmp_path / "nope"), str(astronaut)], "run folder '.*nope' does not exist"),
        "no_models": ([str(make_run_without_models(tmp_path / "outputs")), str(astronaut)],
                      "has no trained model .*fer-study resume"),
        "no_weights": ([str(run_without_weights(run_dir, tmp_path)), str(astronaut)],
                       r"no trained model to predict with: its models \(basic_cnn\) were evaluated but their "
                       r"best.keras files are not in the run folder"),
        "unknown_model": ([str(run_dir), str(astronaut), "--model", "vgg16"],
                          "--model 'vgg16' is not a trained model of run .*; choose one of: basic_cnn, ensemble"),
        "missing_photo": ([str(run_dir), str(tmp_path / "missing.jpg")], "no such file or folder: .*missing.jpg"),
        "predictions_exist": ([str(run_dir), str(astronaut), "--out", str(used)], "already holds predictions.json"),
        "negative_margin": ([str(run_dir), str(astronaut), "--margin", "-1"], "--margin must be >= 0"),
        "min_neighbors": ([str(run_dir), str(astronaut), "--min-neighbors", "0"], "--min-neighbors must be >= 1"),
    }[case]
    predictions_before = sorted((run_dir / predict.PREDICTIONS_DIR).glob("*"))
    code, stdout, stderr = run_cli(["predict", *args], capsys)
    assert code == 2, (stdout, stderr)
    assert re.search(expected, one_error_line(stderr)), stderr
    assert sorted((run_dir / predict.PREDICTIONS_DIR).glob("*")) == predictions_before  # nothing written


# --------------------------------------------------------------------------------------------------------------------
# 04_predict: its parameters and its upload view (driven without a browser; tests/test_browser.py uses a real one)
# --------------------------------------------------------------------------------------------------------------------


def test_notebook_choice(run_dir: Path, astronaut: Path, tmp_path: Path) -> None:
    empty = tmp_path / "outputs"
    empty.mkdir()
    nothing = predict.notebook_choice(None, None, outputs_dir=empty)  # a fresh clone: no run, no error
    assert nothing.run_dir is None and nothing.photos == []
    assert "No run folder with a trained model" in nothing.message and predict.notebook_predict(nothing) is None
    default = predict.notebook_choice(None, None, outputs_dir=run_dir.parent)
    assert default.run_dir == run_dir and default.photos == [astronaut]
    assert "astronaut.png (scikit-image's sample photo)" in default.message
    given = predict.notebook_choice(str(run_dir), [str(astronaut)])
    assert given.photos == [astronaut]
    with pytest.raises(predict.PredictError, match="no such file or folder"):
        predict.notebook_choice(run_dir, tmp_path / "nope.jpg")
    with pytest.raises(predict.PredictError, match="is not a run folder"):
        predict.notebook_choice(empty, None)


def test_predict_view_uploads(run_dir: Path, astronaut: Path, tmp_path: Path) -> None:
    from fer_lib.app.predict_view import PredictView, uploaded_files

    (tmp_path / "outputs").mkdir()
    idle = PredictView(outputs_dir=tmp_path / "outputs")
    assert idle.run_dir is None and idle.upload.disabled and "No run folder" in idle.message.value

    view = PredictView(run_dir)
    assert view.run_dir == run_dir.resolve() and view.model == "basic_cnn"  # one model: no ensemble to offer
    assert list(view.model_dropdown.options) == ["basic_cnn"]
    files = uploaded_files(({"name": "me.png", "content": memoryview(astronaut.read_bytes()), "type": "image/png"},
                            {"name": "notes.txt", "content": memoryview(b"not a photo")}))
    assert [name for name, _ in files] == ["me.png", "notes.txt"]
    predictions = view.predict_uploads(files)
    assert [p.status for p in predictions.photos] == ["ok", "error"]
    assert predictions.out_dir.parent == run_dir.resolve() / predict.PREDICTIONS_DIR
    result, error = view.results.children
    assert "fer-predict-result" in result._dom_classes and "fer-predict-error" in error._dom_classes
    assert "notes.txt" in error.children[0].value and "1 file skipped" in view.message.value
    assert view.predict_uploads([]) is None
