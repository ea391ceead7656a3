"""The ``fer-study`` command: user errors, the runner's bookkeeping (with stand-in notebooks), ``list``, and one real
end-to-end run of ``params/smoke.yaml`` (marked slow + notebooks).

The stand-in notebooks are three tiny notebooks with the real ones' parameter names that record what they were given
and write the files a finished model leaves; they make the runner's tests take seconds instead of minutes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import nbformat
import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from fer_lib.core import records
from fer_lib import __version__
from fer_lib.app import cli, runner, runs
from fer_lib.core.config import DataConfig
from fer_lib.core.data import SYNTHETIC_NOTICE
from fer_lib.core.labels import EMOTIONS

REPO_ROOT = Path(__file__).resolve().parent.parent
SMOKE = REPO_ROOT / "params" / "smoke.yaml"
FER_STUDY = Path(sys.executable).with_name("fer-study")
TINY = ["-p", "synthetic_train=20", "-p", "synthetic_val=10", "-p", "synthetic_test=10", "-p", "batch_size=8"]


def run_cli(args: Sequence[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``fer-study ARGS`` in this process: exit code, stdout, stderr."""
    try:
        code = cli.main(list(args))
    except SystemExit as stop:  # argparse's own usage errors
        code = stop.code if isinstance(stop.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_no_run_folder(out: Path) -> None:
    assert not out.exists() or not any(out.iterdir()), f"a run folder was created: {list(out.iterdir())}"


def assert_one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert lines[0].startswith("fer-study: error: ")
    return lines[0]


# --------------------------------------------------------------------------------------------------------------------
# Stand-in notebooks and a stand-in project (so data discovery cannot see the real repository's data/)
# --------------------------------------------------------------------------------------------------------------------


def _notebook(parameters: str, *cells: str) -> nbformat.NotebookNode:
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    first = nbformat.v4.new_code_cell(parameters)
    first.metadata["tags"] = ["parameters"]
    notebook.cells = [first, *(nbformat.v4.new_code_cell(cell) for cell in cells)]
    return notebook


RECORD = ("import json, pathlib\n"
          "given = {{k: v for k, v in {{**dict(globals()), **globals().get('overrides', {{}})}}.items() "
          "if k in {names!r}}}\n"
          "pathlib.Path(run_dir, {file!r}).write_text(json.dumps(given))")

FAKE_TRAIN = """\
import json, pathlib
epochs, synthetic = overrides.get('epochs', 2), overrides.get('synthetic', True)
folder = pathlib.Path(run_dir, 'models', model)
folder.mkdir(parents=True)
if epochs == 99:
    raise ValueError('stand-in training failed on purpose')
if epochs == 98:  # the study's own divergence stop, as train_model's loop calls it after a NaN epoch
    from fer_lib.core.config import TrainConfig
    from fer_lib.core.train import StopOnDivergence
    StopOnDivergence(model, TrainConfig(epochs=3, learning_rate=1e9)).on_epoch_end(0, {'loss': float('nan')})
test = {'accuracy': 0.5, 'macro_f1': 0.4, 'majority_class_accuracy': 0.25, 'collapse_warning': None}
(folder / 'metrics.json').write_text(json.dumps({'model': model, 'synthetic': synthetic, 'epochs_run': epochs,
                                                 'best_epoch': epochs, 'best_val': 0.5 + epochs / 100, 'train_seconds': 1.5,
                                                 'test': test}))
(folder / 'train_config.json').write_text(json.dumps({'data': {'fingerprint': 'stand-in'}}))"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in project: notebooks/ with the three stand-in notebooks; no data/ unless a test adds it."""
    root = tmp_path / "project"
    notebooks = root / "notebooks"
    notebooks.mkdir(parents=True)
    nbformat.write(_notebook("run_dir = None\nparams_file = None\noverrides = {}",
                             RECORD.format(names=("run_dir", "synthetic", "seed", "data", "epochs"),
                                           file="given_01.json")),
                   notebooks / "01_explore_data.ipynb")
    nbformat.write(_notebook("model = 'basic_cnn'\nrun_dir = None\nparams_file = None\noverrides = {}",
                             RECORD.format(names=("run_dir", "model", "epochs", "batch_size", "synthetic", "data"),
                                           file="given_02_{}.json").replace("'given_02_{}.json'",
                                                                            "f'given_02_{model}.json'"),
                             FAKE_TRAIN),
                   notebooks / "02_train.ipynb")
    nbformat.write(_notebook("run_dir = None", RECORD.format(names=("run_dir", "epochs"), file="given_03.json"),
                             "print('compared')"),
                   notebooks / "03_compare.ipynb")
    monkeypatch.setattr(runner, "DEFAULT_NOTEBOOKS_DIR", notebooks)
    monkeypatch.delenv("FER2013_DIR", raising=False)
    return root


def tiny_fer2013_folders(root: Path) -> Path:
    """A miniature FER2013 in the folder layout (2 train and 1 test image per class), read-only in spirit."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 2), ("test", 1)):
        for emotion in EMOTIONS:
            folder = root / split / emotion
            folder.mkdir(parents=True)
            for index in range(count):
                Image.fromarray(rng.integers(0, 256, (48, 48), dtype=np.uint8)).save(folder / f"{index}.png")
    return root


def only_run(out: Path) -> Path:
    folders = records.list_runs(out)
    assert len(folders) == 1, folders
    return folders[0]


# --------------------------------------------------------------------------------------------------------------------
# User errors: exit code 2, one line, nothing written
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make_args", "expected"),
    [
        (lambda tmp: ["--params", str(_file(tmp, "typo.yaml", "epoch: 2\n"))],
         r"unknown parameter(s) epoch; valid parameters: "),
        (lambda tmp: ["-p", "epoch=2"], "unknown parameter(s) epoch; valid parameters: "),
        (lambda tmp: ["--params", str(tmp / "missing.yaml")], "missing.yaml' does not exist"),
        (lambda tmp: ["--data", str(tmp / "no-such-folder")], "no-such-folder' does not exist"),
        (lambda tmp: ["--data", str(_folder(tmp, "empty"))], "holds neither fer2013.csv nor a train/ folder"),
        (lambda tmp: ["-p", "epochs=-1"], "epochs must be an integer >= 1, got -1"),
        (lambda tmp: ["-p", "val_fraction=1.5"], "parameter val_fraction must be a number in (0, 1), got 1.5"),
        (lambda tmp: ["-p", "models=[vgg16]"], "models must be a non-empty list without repeats of registered models"),
        (lambda tmp: ["-p", "augmentation.rotaton=5"], "rotaton"),
        (lambda tmp: ["-p", "model_options.basic_cnn.filter=[8]"],
         "unknown parameter(s) filter in model_options.basic_cnn; valid: filters"),
        (lambda tmp: ["-p", "epochs"], "must look like name=value"),
        (lambda tmp: ["--params", str(SMOKE), "--data", str(_folder(tmp, "somewhere"))],
         "synthetic data (synthetic: true) but also give data"),
    ],
    ids=["typo-in-file", "typo-override", "missing-params-file", "missing-data-folder", "data-folder-not-fer2013",
         "negative-epochs", "val-fraction", "unknown-model", "nested-typo", "unknown-model-option",
         "override-without-value", "synthetic-and-data"],
)
def test_user_errors_exit_2_with_one_line_and_no_run_folder(
        make_args: Callable[[Path], list[str]], expected: str, project: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "outputs"
    code, stdout, err = run_cli(["run", *make_args(tmp_path), "--out", str(out)], capsys)
    assert code == 2
    assert expected in assert_one_line_error(err)
    assert_no_run_folder(out)


def _file(folder: Path, name: str, text: str) -> Path:
    (folder / name).write_text(text)
    return folder / name


def _folder(parent: Path, name: str) -> Path:
    (parent / name).mkdir(exist_ok=True)
    return parent / name


def _csv(folder: Path, rows: list[str]) -> Path:
    """A fer2013.csv with one good row per usage and the given extra rows."""
    good = " ".join(["128"] * 2304)
    body = [f"3,{good},{usage}" for usage in ("Training",) * 14 + ("PublicTest",) * 7 + ("PrivateTest",) * 7]
    return _file(folder, "fer2013.csv", "emotion,pixels,Usage\n" + "\n".join(body + rows) + "\n")


def _folders_with(tmp: Path, change: Callable[[Path], None]) -> Path:
    root = tiny_fer2013_folders(tmp / "fer2013")
    change(root)
    return root


def _corrupt_jpeg(root: Path) -> None:
    (root / "train" / "happy" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")


BAD_INPUTS = {  # issue "A fresh machine ...", point 3: each refused before any run folder exists
    "epochs=0": (lambda tmp: ["-p", "epochs=0"], "parameter epochs must be an integer >= 1, got 0"),
    "batch_size=-1": (lambda tmp: ["-p", "batch_size=-1"], "parameter batch_size must be an integer >= 1, got -1"),
    "learning_rate=fast": (lambda tmp: ["-p", "learning_rate=fast"],
                           "parameter learning_rate must be a number in (0, inf], got 'fast'"),
    "params-path-is-a-folder": (lambda tmp: ["--params", str(tmp)], "does not exist (it is a folder)"),
    "params-file-holds-a-list": (lambda tmp: ["--params", str(_file(tmp, "list.yaml", "- epochs: 2\n"))],
                                 "must hold a mapping of name: value, got list"),
    "broken-yaml": (lambda tmp: ["--params", str(_file(tmp, "broken.yaml", "epochs: [2\n"))], "is not valid YAML"),
    "seeds=[0,0]": (lambda tmp: ["-p", "seeds=[0,0]"], "parameter seeds must be null or a non-empty list of distinct"),
    "val_fraction=1": (lambda tmp: ["-p", "val_fraction=1"], "parameter val_fraction must be a number in (0, 1)"),
    "dropout=2": (lambda tmp: ["-p", "model_options.basic_cnn.dropout=2"],
                  "parameter model_options.basic_cnn.dropout must be a number in [0, 1), got 2"),
    "filters=abc": (lambda tmp: ["-p", "model_options.basic_cnn.filters=abc"],
                    "parameter model_options.basic_cnn.filters must be a non-empty list of positive integers"),
    "input_size=20": (lambda tmp: ["-p", "model_options.resnet50v2.input_size=20"],
                      "parameter model_options.resnet50v2.input_size must be an integer >= 32, got 20"),
    "csv-usage": (lambda tmp: ["--data", str(_csv(tmp, ["3," + " ".join(["1"] * 2304) + ",Validation"]))],
                  "fer2013.csv, line 30: unknown Usage 'Validation'; expected one of Training, PublicTest, "
                  "PrivateTest"),
    "csv-2303-pixels": (lambda tmp: ["--data", str(_csv(tmp, ["3," + " ".join(["1"] * 2303) + ",Training"]))],
                        "fer2013.csv, line 30: pixels holds 2303 values, expected 2304"),
    "folders-without-test": (lambda tmp: ["--data", str(_folders_with(tmp, lambda r: shutil.rmtree(r / "test")))],
                             "has no test/ folder"),
    "class-folder-contempt": (lambda tmp: ["--data", str(_folders_with(
        tmp, lambda r: shutil.copytree(r / "train" / "sad", r / "train" / "contempt")))],
        "unknown class folder '"),
    "corrupt-jpeg": (lambda tmp: ["--data", str(_folders_with(tmp, _corrupt_jpeg))],
                     "broken.jpg' is corrupt or unreadable as an image"),
    "too-few-to-carve-validation": (lambda tmp: ["--data", str(_folders_with(
        tmp, lambda r: [p.unlink() for p in r.glob("train/*/1.png")])), "-p", "val_fraction=0.05"],
        "train/ holds 7 images, too few to carve a validation split of val_fraction 0.05 from it"),
    "batch-larger-than-the-training-split": (lambda tmp: ["-p", "synthetic=true", "-p", "synthetic_train=20"],
                                             "parameter batch_size must be at most the training split's 20 images"),
    "out-below-a-file": (lambda tmp: ["-p", "synthetic=true", "--out", str(_file(tmp, "a-file", "x") / "runs")],
                         "cannot be created: "),
}


@pytest.mark.parametrize(("make_args", "expected"), BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_every_bad_input_is_refused_before_a_run_folder_exists(
        make_args: Callable[[Path], list[str]], expected: str, project: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FER_STUDY_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "outputs"
    args = make_args(tmp_path)
    code, stdout, err = run_cli(["run", *args, *([] if "--out" in args else ["--out", str(out)])], capsys)
    assert code == 2, err
    assert expected in assert_one_line_error(err)
    assert_no_run_folder(out)


def test_a_good_dataset_is_decoded_once_for_the_check_and_the_notebooks(project: Path, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The runner's up-front check decodes FER2013 into the loader's cache; the notebooks then read the cache."""
    from fer_lib.core import data

    root = tiny_fer2013_folders(tmp_path / "fer2013")
    monkeypatch.setenv("FER_STUDY_CACHE", str(tmp_path / "cache"))
    decoded: list[Path] = []
    decode = data._decode_image
    monkeypatch.setattr(data, "_decode_image", lambda file, **kw: decoded.append(file) or decode(file, **kw))
    plan = runner.prepare_run([], ["batch_size=8"], data=str(root))
    assert len(decoded) == 21 and plan["data"]["images"] == {"train": 13, "val": 1, "test": 7}
    dataset, _ = data.load_study_data(DataConfig.from_mapping(plan["params"]))  # as 01 and 02 load it
    assert len(decoded) == 21 and dataset.fingerprint == plan["data"]["fingerprint"]


def test_fer2013_dir_pointing_nowhere_is_a_user_error(project: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FER2013_DIR", str(tmp_path / "gone"))
    out = tmp_path / "outputs"
    code, _, err = run_cli(["run", "--out", str(out)], capsys)
    assert code == 2
    assert "FER2013_DIR points to" in assert_one_line_error(err)
    assert_no_run_folder(out)


def test_missing_notebooks_are_reported_before_any_run_folder(project: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    (project / "notebooks" / "02_train.ipynb").unlink()
    out = tmp_path / "outputs"
    code, _, err = run_cli(["run", "-p", "synthetic=true", "--out", str(out)], capsys)
    assert code == 2
    assert "02_train.ipynb not found" in assert_one_line_error(err)
    assert_no_run_folder(out)


def test_console_script_user_error_is_one_clean_line(tmp_path: Path) -> None:
    """The installed command, as a user runs it: exit code 2 and one line on stderr (no traceback, no TF noise)."""
    assert FER_STUDY.is_file(), "fer-study is not installed in this environment: pip install -e '.[tf,jax,dev]'"
    typo = _file(tmp_path, "typo.yaml", "name: x\nlearning_rte: 0.01\n")
    out = tmp_path / "outputs"
    done = subprocess.run([str(FER_STUDY), "run", "--params", str(typo), "--out", str(out)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    line = assert_one_line_error(done.stderr)
    assert "learning_rte" in line and "learning_rate" in line and "typo.yaml" in line
    assert done.stdout == ""
    assert_no_run_folder(out)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["--version"], capsys)
    assert code == 0 and out.strip() == f"fer-study {__version__}"


def test_a_command_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli([], capsys)
    assert code == 2 and "COMMAND" in err


# --------------------------------------------------------------------------------------------------------------------
# The runner, with stand-in notebooks
# --------------------------------------------------------------------------------------------------------------------


def test_run_records_everything_and_identical_runs_never_overwrite(project: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "outputs"
    args = ["run", "-p", "synthetic=false", *TINY, "-p", "epochs=3", "--name", "same", "--out", str(out)]
    first = run_cli(args, capsys)
    second = run_cli(args, capsys)
    for code, stdout, err in (first, second):
        assert code == 0, err
        assert SYNTHETIC_NOTICE[:60] in " ".join(err.split())  # no FER2013 anywhere: loudly synthetic
        assert "run complete" in stdout

    folders = records.list_runs(out)
    assert len(folders) == 2 and folders[0] != folders[1]
    assert all(folder.name.split("-", 2)[2].startswith("same") for folder in folders)
    assert records.read_params(folders[0]) == records.read_params(folders[1])

    run_dir = folders[0]
    params = records.read_params(run_dir)
    assert params["synthetic"] is True and params["epochs"] == 3 and params["name"] == "same"
    for name in ("01_explore_data.ipynb", "02_train-basic_cnn.ipynb", "02_train-resnet50v2.ipynb",
                 "03_compare.ipynb"):
        assert (run_dir / "notebooks" / name).is_file()
    assert (run_dir / "report.html").read_text().count("compared") >= 1

    # what each notebook was given
    absolute = str(run_dir.resolve())
    assert json.loads((run_dir / "given_01.json").read_text()) == {"run_dir": absolute, "synthetic": True,
                                                                   "seed": 0, "data": None, "epochs": 3}
    for model in ("basic_cnn", "resnet50v2"):
        given = json.loads((run_dir / f"given_02_{model}.json").read_text())
        assert given == {"run_dir": absolute, "model": model, "epochs": 3, "batch_size": 8, "synthetic": True,
                         "data": None}
    assert json.loads((run_dir / "given_03.json").read_text()) == {"run_dir": absolute}

    manifest = runs.read_manifest(run_dir)
    assert manifest["status"] == "complete" and manifest["error"] is None
    assert manifest["started"] <= manifest["finished"] and manifest["seconds"] > 0
    assert manifest["data"]["synthetic"] is True and manifest["data"]["notice"] == SYNTHETIC_NOTICE
    assert len(manifest["data"]["fingerprint"]) == 20
    assert manifest["backend"] in ("tensorflow", "jax", "torch", "numpy")
    assert manifest["versions"]["keras"] and manifest["python"] == sys.version.split()[0]
    assert manifest["device"]["summary"] and manifest["device"]["cpu_count"]
    lock = manifest["lock"]  # whether the run's environment has the committed lock's versions
    assert lock["lock"] == "requirements/lock.txt" and isinstance(lock["matches"], bool) and lock["checked"] > 100
    assert set(manifest["git"]) >= {"commit", "dirty"}
    assert [(n["notebook"], n["model"], n["status"]) for n in manifest["notebooks"]] == [
        ("01_explore_data", None, "complete"), ("02_train", "basic_cnn", "complete"),
        ("02_train", "resnet50v2", "complete"), ("03_compare", None, "complete")]
    assert all(n["seconds"] > 0 for n in manifest["notebooks"])
    assert set(manifest["results"]) == {"basic_cnn", "resnet50v2"}
    assert manifest["report"] == "report.html"

    code, stdout, _ = run_cli(["list", "--out", str(out)], capsys)
    assert code == 0
    for folder in folders:
        assert sum(folder.name in line and "complete" in line and "SYNTHETIC" in line
                   for line in stdout.splitlines()) == 2  # one line per model


def test_real_data_is_found_in_the_project_and_passed_as_an_absolute_path(project: Path, tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    fer2013 = tiny_fer2013_folders(project / "data" / "fer2013")
    out = tmp_path / "outputs"
    code, stdout, err = run_cli(["run", "-p", "models=[basic_cnn]", "-p", "batch_size=8", "--out", str(out)], capsys)
    assert code == 0, err
    assert "SYNTHETIC" not in err
    run_dir = only_run(out)
    assert records.read_params(run_dir)["data"] == str(fer2013.resolve())
    assert records.read_params(run_dir)["synthetic"] is False
    data = runs.read_manifest(run_dir)["data"]
    assert data["synthetic"] is False and data["layout"] == "folders" and data["source"] == str(fer2013.resolve())
    assert len(data["fingerprint"]) == 20 and "notice" not in data
    assert json.loads((run_dir / "given_01.json").read_text())["data"] == str(fer2013.resolve())


def test_failing_notebook_names_notebook_and_cell_and_marks_the_run_failed(project: Path, tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "outputs"
    code, stdout, err = run_cli(["run", "-p", "synthetic=true", *TINY, "-p", "epochs=99", "--out", str(out)], capsys)
    assert code == 1
    message = " ".join(err.split())
    assert "notebook 02_train.ipynb (basic_cnn) failed at cell [" in message
    assert "ValueError: stand-in training failed on purpose" in message
    run_dir = only_run(out)
    partial = run_dir / "notebooks" / "02_train-basic_cnn.ipynb"
    assert str(partial) in message and partial.is_file()
    assert "stand-in training failed on purpose" in partial.read_text()  # the traceback is kept in the notebook
    manifest = runs.read_manifest(run_dir)
    assert manifest["status"] == "failed" and "02_train" in manifest["error"]
    assert [n["status"] for n in manifest["notebooks"]] == ["complete", "failed", "pending", "pending"]
    assert not (run_dir / "report.html").exists()

    code, stdout, _ = run_cli(["list", "--out", str(out)], capsys)
    assert code == 0 and run_dir.name in stdout and "failed" in stdout


# --------------------------------------------------------------------------------------------------------------------
# fer-study list, on run folders built by hand
# --------------------------------------------------------------------------------------------------------------------


def _metrics(model: str, accuracy: float, macro_f1: float, collapse: str | None, synthetic: bool) -> dict[str, Any]:
    test = {"accuracy": accuracy, "macro_f1": macro_f1, "majority_class_accuracy": 0.25, "collapse_warning": collapse}
    return {"model": model, "synthetic": synthetic, "epochs_run": 30, "best_epoch": 20, "test": test,
            "test_tta": {**test, "accuracy": accuracy + 0.01}}


def hand_made_run(out: Path, folder: str, *, manifest: dict[str, Any] | None,
                  models: dict[str, dict[str, Any]] | None = None, synthetic: bool = False) -> Path:
    run_dir = out / folder
    run_dir.mkdir(parents=True)
    records.write_params(run_dir, {"name": folder.split("-", 2)[2], "synthetic": synthetic})
    if manifest is not None:
        runs.write_manifest(run_dir, manifest)
    for model, metrics in (models or {}).items():
        records.model_dir(run_dir, model).mkdir(parents=True)
        (records.model_dir(run_dir, model) / "metrics.json").write_text(json.dumps(metrics))
    return run_dir


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_list_shows_status_data_and_each_models_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import platform

    out = tmp_path / "outputs"
    hand_made_run(out, "20250101-120000-paper", manifest={"status": "complete", "data": {"synthetic": False}},
                  models={"basic_cnn": _metrics("basic_cnn", 0.6512, 0.6034, None, False),
                          "resnet50v2": _metrics("resnet50v2", 0.2513, 0.0571, "collapsed: 100% 'happy'", False)})
    hand_made_run(out, "20250102-090000-smoke", synthetic=True,
                  manifest={"status": "failed", "data": {"synthetic": True}})
    hand_made_run(out, "20250103-090000-notebook", manifest=None, synthetic=True,
                  models={"basic_cnn": _metrics("basic_cnn", 0.4, 0.3, None, True)})
    hand_made_run(out, "20250104-090000-killed", manifest={"status": "running", "data": {"synthetic": True},
                                                            "host": platform.node(), "pid": _dead_pid()})
    (out / "not-a-run").mkdir()

    code, stdout, err = run_cli(["list", "--out", str(out)], capsys)
    assert code == 0, err
    lines = stdout.splitlines()
    assert lines[0].split() == ["run", "status", "data", "model", "seeds", "test_acc", "macro_f1", "collapsed"]

    def row(run: str, model: str) -> list[str]:
        matches = [line.split() for line in lines if line.startswith(run) and f" {model} " in f"{line} "]
        assert len(matches) == 1, (run, model, stdout)
        return matches[0]

    assert row("20250101-120000-paper", "basic_cnn") == ["20250101-120000-paper", "complete", "real", "basic_cnn",
                                                          "1", "0.6512", "0.6034", "no"]
    assert row("20250101-120000-paper", "resnet50v2")[-3:] == ["0.2513", "0.0571", "COLLAPSED"]
    assert row("20250102-090000-smoke", "-") == ["20250102-090000-smoke", "failed", "SYNTHETIC", "-", "-", "-", "-",
                                                 "-"]
    assert row("20250103-090000-notebook", "basic_cnn")[1:3] == ["complete", "SYNTHETIC"]
    assert row("20250104-090000-killed", "-")[1] == "stopped"
    assert "not-a-run" not in stdout
    assert "SYNTHETIC runs used generated cartoon faces" in stdout
    # oldest first
    order = [line.split()[0] for line in lines[2:] if line.strip() and line[0].isdigit()]
    assert order == sorted(order)


def test_list_without_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "outputs").mkdir()
    code, stdout, _ = run_cli(["list", "--out", str(tmp_path / "outputs")], capsys)
    assert code == 0 and "no runs under" in stdout
    code, _, err = run_cli(["list", "--out", str(tmp_path / "missing")], capsys)
    assert code == 2 and "is not a folder" in assert_one_line_error(err)


# --------------------------------------------------------------------------------------------------------------------
# End to end: the real notebooks on params/smoke.yaml, as a user runs it
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.notebooks
@pytest.mark.alone
def test_smoke_study_end_to_end(tmp_path: Path) -> None:
    """params/smoke.yaml through the real notebooks, shrunk to the least that runs every cell: the basic CNN only,
    on two seeds (per-seed folders, mean ± std over seeds and the intervals in summary.json and the report).

    `make study` runs the full smoke study (both models learn), and `make gpu-rehearsal`, CI's next step, runs both
    models through every notebook; ResNet50V2's tracing alone would take this test past a minute on 2 cores. The
    statistics between two models over seeds (McNemar per seed, the paired t-test) are checked on a crafted run in
    test_results.py.
    """
    for name in runner.NOTEBOOKS:
        assert (REPO_ROOT / "notebooks" / f"{name}.ipynb").is_file(), f"notebooks/{name}.ipynb is missing"
    out = tmp_path / "outputs"
    env = {**os.environ, "FER_STUDY_CACHE": str(tmp_path / "cache")}
    done = subprocess.run([str(FER_STUDY), "run", "--params", str(SMOKE), "--out", str(out), "-p", "synthetic_train=16",
                           "-p", "synthetic_val=8", "-p", "synthetic_test=8", "-p", "epochs=1",
                           "-p", "models=[basic_cnn]", "-p", "seeds=[0,1]"],
                          capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert done.returncode == 0, f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-5000:]}"
    assert SYNTHETIC_NOTICE[:60] in " ".join(done.stderr.split())
    # The terminal holds only fer-study's own lines (its lines, and the banner around the synthetic-data notice):
    # the kernels' own output (TensorFlow's C++ start-up lines, kernel warnings) goes to the run's logs/.
    banner = [line for line in runner._wrap(SYNTHETIC_NOTICE, len(runner.BANNER)).splitlines()] + [runner.BANNER]
    foreign = [line for line in done.stderr.splitlines() if line.strip() and not line.startswith("fer-study: ")
               and line not in banner]
    assert foreign == [], "\n".join(foreign)
    assert "basic_cnn epoch 1/1 · train acc" in done.stderr  # the progress line of each training epoch
    assert "02_train (basic_cnn, seed 1) done in" in done.stderr

    run_dir = only_run(out)
    assert run_dir.name.endswith("-smoke")
    assert "run complete in " in done.stdout
    params = yaml.safe_load((run_dir / "params.yaml").read_text())
    assert params["synthetic"] is True and params["models"] == ["basic_cnn"] and params["seeds"] == [0, 1]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete", manifest.get("error")
    assert manifest["data"]["synthetic"] is True and manifest["data"]["notice"] == SYNTHETIC_NOTICE
    assert set(manifest["data"]["fingerprints_used"].values()) == {manifest["data"]["fingerprint"]}
    assert all(n["status"] == "complete" and n["seconds"] > 0 for n in manifest["notebooks"])
    used = manifest["distribution"]["used"]  # auto on this CPU: one device, as planned and as each model trained
    assert manifest["distribution"]["devices"] == 1 and sorted(used) == ["basic_cnn seed 0", "basic_cnn seed 1"]
    assert {entry["devices"] for entry in used.values()} == {1}

    assert [(n["model"], n["seed"]) for n in manifest["notebooks"]] == [(None, None), ("basic_cnn", 0),
                                                                        ("basic_cnn", 1), (None, None)]
    for name in ("01_explore_data.ipynb", "02_train-basic_cnn-seed0.ipynb", "02_train-basic_cnn-seed1.ipynb",
                 "03_compare.ipynb"):
        notebook = nbformat.read(run_dir / "notebooks" / name, as_version=4)
        assert notebook.metadata["papermill"]["parameters"]["run_dir"] == str(run_dir.resolve())
        assert not any(output.get("output_type") == "error" for cell in notebook.cells
                       for output in cell.get("outputs", []))
    assert any((run_dir / "figures").glob("*.png")), "no explore/compare figures"
    assert not (run_dir / "models").exists() and list(records.seed_folders(run_dir)) == [0, 1]
    for model, seed in (("basic_cnn", 0), ("basic_cnn", 1)):
        folder = run_dir / "seeds" / f"seed-{seed}" / "models" / model
        for name in ("history.csv", "best.keras", "metrics.json", "train_config.json", "predictions_val.npz",
                     "predictions_test.npz", "predictions_test_tta.npz"):
            assert (folder / name).is_file() and (folder / name).stat().st_size > 0, folder / name
        assert list(folder.glob("*.png")), f"no figures for {model}"
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["model"] == model and metrics["synthetic"] is True and metrics["epochs_run"] == 1
        assert 0.0 <= metrics["test"]["accuracy"] <= 1.0
        assert json.loads((folder / "train_config.json").read_text())["train"]["seed"] == seed
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["seeds"] == [0, 1]
    over = summary["over_seeds"]["models"]["basic_cnn"]["test_accuracy"]
    assert over["n"] == 2 and over["std"] is not None and len(over["values"]) == 2
    for seed in ("0", "1"):
        interval = summary["per_seed"][seed]["splits"]["test"]["accuracy"]["basic_cnn"]
        assert interval["low"] <= interval["accuracy"] <= interval["high"]
    assert [claim["verdict"] for claim in summary["paper_claims"]] == [None, None]  # one model: claims not checked
    report = (run_dir / "report.html").read_text()
    assert report.lstrip().lower().startswith("<!doctype html") and "SYNTHETIC" in report.upper()
    assert "Headline" in report and "report.headline_table" not in report  # a report: tables first, code hidden
    assert report.index("Headline") < report.index("Training curves")
    assert "test_accuracy mean" in report  # the table over seeds
    assert (run_dir / "figures" / "fig4_training_curves.png").is_file()
    kernel_logs = sorted(path.name for path in (run_dir / "logs").glob("*.log"))
    assert kernel_logs == ["01_explore_data.log", "02_train-basic_cnn-seed0.log", "02_train-basic_cnn-seed1.log",
                           "03_compare.log"]

    listed = subprocess.run([str(FER_STUDY), "list", "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    rows = [line for line in listed.stdout.splitlines() if line.startswith(run_dir.name)]
    assert len(rows) == 1 and all("complete" in row and "SYNTHETIC" in row and " 2 " in row for row in rows)


@pytest.mark.slow
@pytest.mark.notebooks
@pytest.mark.alone
def test_a_run_killed_during_training_resumes_and_completes_with_every_epoch_once(tmp_path: Path) -> None:
    """kill -9 of the runner (and its kernel) in the real 02_train notebook; `fer-study resume` finishes the run with
    the notebooks it was made with (stand-ins for 01 and 03, which the smoke test runs for real: a minute less)."""
    import psutil

    out = tmp_path / "outputs"
    env = {**os.environ, "FER_STUDY_CACHE": str(tmp_path / "cache")}
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    shutil.copy(REPO_ROOT / "notebooks" / "02_train.ipynb", notebooks)
    for name in ("01_explore_data", "03_compare"):
        nbformat.write(_notebook("run_dir = None\nparams_file = None\noverrides = {}", f"print({name!r})"),
                       notebooks / f"{name}.ipynb")
    args = ["--params", str(SMOKE), "--out", str(out), "--notebooks-dir", str(notebooks), "-p", "models=[basic_cnn]",
            "-p", "synthetic_train=64",
            "-p", "synthetic_val=16", "-p", "synthetic_test=16", "-p", "epochs=12", "-p", "batch_size=16",
            "-p", "backup_every_seconds=0"]
    log = (tmp_path / "first-run.log").open("w")
    process = subprocess.Popen([str(FER_STUDY), "run", *args], stdout=log, stderr=subprocess.STDOUT, env=env,
                               cwd=tmp_path)
    history = None
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        found = list(out.glob("*/models/basic_cnn/history.csv"))
        if found and len(found[0].read_text().splitlines()) >= 1 + 2:  # header and two epochs
            history = found[0]
            break
        time.sleep(0.2)
    assert history is not None, f"training never got to its second epoch:\n{(tmp_path / 'first-run.log').read_text()}"
    for child in psutil.Process(process.pid).children(recursive=True) + [psutil.Process(process.pid)]:
        child.kill()  # SIGKILL: no handler runs, as when a machine is lost
    process.wait()
    run_dir = history.parents[2]
    assert runs.read_manifest(run_dir)["status"] == "running"
    assert runs.run_summary(run_dir)["status"] == "stopped"  # the listing sees the runner is gone

    done = subprocess.run([str(FER_STUDY), "resume", str(run_dir)], capture_output=True, text=True, timeout=600,
                          env=env, cwd=tmp_path)
    assert done.returncode == 0, f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
    assert "01_explore_data complete already (kept)" in done.stderr, done.stderr
    epochs = pd.read_csv(history)["epoch"].tolist()
    assert epochs == list(range(1, 13)), epochs  # every epoch once
    manifest = runs.read_manifest(run_dir)
    assert manifest["status"] == "complete" and len(manifest["resumes"]) == 1
    assert manifest["resumes"][0]["previous_status"] == "stopped" and manifest["resumes"][0]["notebooks_kept"] == 1
    training = json.loads((history.parent / "training.json").read_text())
    assert training["resumed_from_epoch"] >= 1  # the last backup before the kill (the CSV row may be newer)
    assert all(n["status"] == "complete" for n in manifest["notebooks"])
    assert manifest["notebooks_dir"] == str(notebooks.resolve())  # the resume ran the stand-ins, not notebooks/
    assert "'03_compare'" in (run_dir / "notebooks" / "03_compare.ipynb").read_text()
    assert (run_dir / "report.html").is_file()
    again = subprocess.run([str(FER_STUDY), "resume", str(run_dir)], capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "already complete" in again.stderr


def test_resume_refuses_what_it_cannot_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["resume", str(tmp_path)], capsys)
    assert code == 2 and "is not a run folder" in assert_one_line_error(err)
    alone = hand_made_run(tmp_path, "20260101-000000-notebook", manifest=None)
    code, _, err = run_cli(["resume", str(alone)], capsys)
    assert code == 2 and "has no manifest.json listing its notebooks" in assert_one_line_error(err)


def test_a_diverging_run_fails_naming_model_epoch_and_remedy(project: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """The divergence stop's message reaches the terminal through the runner (train_model's own stop is tested in
    test_train.py; here a stand-in 02 notebook calls it as the loop does)."""
    out = tmp_path / "outputs"
    code, _, err = run_cli(["run", "-p", "synthetic=true", *TINY, "-p", "epochs=98", "--out", str(out)], capsys)
    assert code == 1
    message = " ".join(err.split())
    assert re.search(r"TrainingDiverged: basic_cnn diverged in epoch 1 of 3: the training loss is nan", message)
    assert "Try a lower learning_rate (it is 1e+09" in message
    assert runs.read_manifest(only_run(out))["status"] == "failed"


def test_progress_line_per_epoch_from_the_progress_file(tmp_path: Path) -> None:
    from fer_lib.app.runner import EpochProgress, format_progress

    record = {"model": "basic_cnn", "epoch": 12, "epochs": 30, "accuracy": 0.6123, "val_accuracy": 0.58,
              "images_per_second": 41234.5, "seconds_left": 19.6}
    assert format_progress(record) == ("basic_cnn epoch 12/30 · train acc 0.612 · val acc 0.580 · 41,234 images/s · "
                                       "~20 s left")
    shown: list[str] = []
    path = tmp_path / "progress.json"
    watcher = EpochProgress(path, shown.append, interval=0.05)
    watcher.poll()  # no file yet: nothing shown
    for epoch in (1, 1, 2):
        path.write_text(json.dumps({**record, "epoch": epoch}))
        watcher.poll()
    assert [line.split(" · ")[0] for line in shown] == ["basic_cnn epoch 1/30", "basic_cnn epoch 2/30"]


# --------------------------------------------------------------------------------------------------------------------
# Sweeps (stand-in notebooks) and `fer-study compare`
# --------------------------------------------------------------------------------------------------------------------


def test_a_2x2_sweep_makes_4_runs_a_sweep_record_and_one_comparison(project: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from fer_lib.app import sweep
    out = tmp_path / "outputs"
    code, stdout, err = run_cli(["sweep", "-p", "synthetic=true", *TINY, "-p", "models=[basic_cnn]",
                                 "--grid", "epochs=2,3", "--grid", "augmentation.rotation=0,10", "--name", "grid",
                                 "--out", str(out)], capsys)
    assert code == 0, err
    folders = records.list_runs(out)
    assert len(folders) == 4
    sweeps = [p for p in out.iterdir() if sweep.is_sweep_dir(p)]
    assert len(sweeps) == 1 and re.fullmatch(r"sweep-grid-[0-9a-f]{10}", sweeps[0].name)
    record = sweep.read_sweep(sweeps[0])
    assert record["grid"] == {"epochs": ["2", "3"], "augmentation.rotation": ["0", "10"]}
    assert record["status"] == "complete"
    assert [p["values"] for p in record["points"]] == [
        {"epochs": "2", "augmentation.rotation": "0"}, {"epochs": "2", "augmentation.rotation": "10"},
        {"epochs": "3", "augmentation.rotation": "0"}, {"epochs": "3", "augmentation.rotation": "10"}]
    assert sorted(p["run"] for p in record["points"]) == sorted(f.name for f in folders)
    for point in record["points"]:
        params = records.read_params(point["run_dir"])
        assert params["epochs"] == int(point["values"]["epochs"])
        assert params["augmentation"]["rotation"] == int(point["values"]["augmentation.rotation"])
        assert runs.read_manifest(point["run_dir"])["command"][:2] == ["fer-study", "run"]
    assert "grid-epochs=3-rotation=10" in record["points"][3]["run"]
    comparison = pd.read_csv(sweeps[0] / "comparison.csv")
    assert len(comparison) == 4 and list(comparison.columns[:2]) == ["epochs", "augmentation.rotation"]
    assert sorted(zip(comparison["epochs"], comparison["augmentation.rotation"])) == [(2, 0), (2, 10), (3, 0),
                                                                                      (3, 10)]
    assert (sweeps[0] / "comparison.png").stat().st_size > 10_000

    code, stdout, err = run_cli(["compare", str(sweeps[0]), "--csv", str(tmp_path / "c.csv")], capsys)
    assert code == 0, err
    lines = stdout.splitlines()
    assert lines[0].split()[:2] == ["epochs", "augmentation.rotation"] and len(lines) == 1 + 4 + 1
    code, stdout, _ = run_cli(["compare", str(folders[0]), str(folders[3])], capsys)
    assert code == 0 and set(stdout.split()[:2]) == {"epochs", "augmentation.rotation"}  # the keys that differ


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        (["--grid", "epoch=2,3"], "sweep point epoch=2: unknown parameter(s) epoch; valid parameters: "),
        (["--grid", "epochs=2,-1"], "sweep point epochs=-1: parameter epochs must be an integer >= 1, got -1"),
        (["--grid", "augmentation.rotaton=0,5"], "rotaton"),
        (["--grid", "epochs"], "--grid 'epochs' must look like KEY=V1,V2"),
        (["--grid", "epochs=2,,3"], "--grid values '2,,3' are not a YAML list"),
        (["--grid", "epochs=2", "--grid", "epochs=3"], "names epochs twice"),
    ],
)
def test_a_bad_grid_exits_2_before_anything_runs(project: Path, tmp_path: Path, grid: list[str], message: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "outputs"
    code, _, err = run_cli(["sweep", "-p", "synthetic=true", *grid, "--out", str(out)], capsys)
    assert code == 2
    assert message in assert_one_line_error(err)
    assert_no_run_folder(out)


def test_sweep_values_keep_commas_inside_brackets() -> None:
    from fer_lib.app import sweep
    assert sweep.split_values("[basic_cnn],[basic_cnn, resnet50v2]") == ["[basic_cnn]", "[basic_cnn, resnet50v2]"]
    assert sweep.split_values("{a: 1, b: 2},'x,y',3") == ["{a: 1, b: 2}", "x,y", "3"]
    assert sweep.grid_points({"a": ["1", "2"], "b": ["x"]}) == [{"a": "1", "b": "x"}, {"a": "2", "b": "x"}]


def test_workers_auto_means_one_per_visible_gpu_and_n_workers_share_them(monkeypatch: pytest.MonkeyPatch) -> None:
    from fer_lib.app import trials
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert trials.worker_devices("auto") == ["2", "3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert trials.worker_devices("auto") == [None]  # a CPU-only machine: one worker
    assert trials.worker_devices("3") == [None, None, None]
    for bad in ("0", "two", "-1"):
        with pytest.raises(runner.UserError, match="--workers must be 'auto' or a number of workers >= 1"):
            trials.worker_devices(bad)
    launched: list[dict[str, str]] = []

    class Done:
        def __init__(self, command: list[str], env: dict[str, str]) -> None:
            assert command[1:4] == ["-m", "fer_lib.app.cli", "worker"]
            launched.append(env)

        def wait(self) -> int:
            return 0

    assert trials.run_local_workers("s.journal", "study", ["0", "1"], launch=Done) == [0, 0]
    assert [env["CUDA_VISIBLE_DEVICES"] for env in launched] == ["0", "1"]
    launched.clear()
    monkeypatch.delenv("XLA_PYTHON_CLIENT_MEM_FRACTION", raising=False)
    trials.run_local_workers("s.journal", "study", [None, None, None], launch=Done)
    assert [env["XLA_PYTHON_CLIENT_MEM_FRACTION"] for env in launched] == ["0.300"] * 3  # one GPU, 3 workers
