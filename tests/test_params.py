"""Params resolution (fer_lib.app.study): every mistake is caught before anything is trained, with a message that helps.

Fast: nothing here trains or loads data.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fer_lib.core import records
from fer_lib.app.params import (STUDY_DEFAULTS, ParamsError, parse_override, resolve_params, resolve_params_files,
                           valid_names)

REPO_ROOT = Path(__file__).resolve().parent.parent
PARAMS_DIR = REPO_ROOT / "params"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_resolve_and_are_copies() -> None:
    params = resolve_params()
    assert set(params) == set(STUDY_DEFAULTS)
    params["augmentation"]["rotation"] = 45.0
    assert resolve_params()["augmentation"]["rotation"] == STUDY_DEFAULTS["augmentation"]["rotation"]


def test_unknown_name_lists_every_valid_name() -> None:
    with pytest.raises(ParamsError) as caught:
        resolve_params({"epoch": 2})
    message = str(caught.value)
    assert "unknown parameter(s) epoch" in message
    assert "epochs" in message
    for name in valid_names():
        assert name in message


def test_unknown_name_in_a_file_names_the_file(tmp_path: Path) -> None:
    good = write(tmp_path / "good.yaml", "epochs: 3\n")
    typo = write(tmp_path / "typo.yaml", "learning_rte: 0.01\n")
    with pytest.raises(ParamsError, match=r"unknown parameter\(s\) learning_rte.*learning_rate.*typo\.yaml"):
        resolve_params_files([good, typo])


@pytest.mark.parametrize(
    ("values", "name"),
    [
        ({"epochs": "ten"}, "epochs"),
        ({"epochs": 2.5}, "epochs"),
        ({"epochs": True}, "epochs"),
        ({"batch_size": "64"}, "batch_size"),
        ({"learning_rate": "fast"}, "learning_rate"),
        ({"synthetic": "yes"}, "synthetic"),
        ({"tta": 1}, "tta"),
        ({"models": "vgg16"}, "models"),
        ({"models": []}, "models"),
        ({"models": ["basic_cnn", "basic_cnn"]}, "models"),
        ({"model_options": {"vgg16": {}}}, "model_options"),
        ({"model_options": {"basic_cnn": [16, 32]}}, "model_options"),
        ({"augmentation": {"rotation": "ten"}}, "rotation"),
        ({"augmentation": {"rotaton": 5}}, "rotaton"),
        ({"optimizer": "adamax"}, "optimizer"),
        ({"class_weights": "auto"}, "class_weights"),
        ({"name": ""}, "name"),
        ({"data": 3}, "data"),
        ({"subset": 3}, "subset"),
        ({"synthetic_train": 0}, "synthetic_train"),
    ],
)
def test_wrong_types_and_values_name_the_parameter(values: dict, name: str) -> None:
    with pytest.raises(ParamsError, match=name):
        resolve_params(values)


@pytest.mark.parametrize("epochs", [-1, 0, -30])
def test_epochs_must_be_positive(epochs: int) -> None:
    with pytest.raises(ParamsError, match=rf"epochs must be an integer >= 1, got {epochs}"):
        resolve_params({"epochs": epochs})


@pytest.mark.parametrize("fraction", [0, 0.0, 1, 1.0, 1.5, -0.1, "0.1", True])
def test_val_fraction_outside_the_open_interval(fraction: object) -> None:
    with pytest.raises(ParamsError, match=r"val_fraction must be a number in \(0, 1\)"):
        resolve_params({"val_fraction": fraction})


@pytest.mark.parametrize("fraction", [0.05, 0.1, 0.5, 0.999])
def test_val_fraction_inside_the_open_interval(fraction: float) -> None:
    assert resolve_params({"val_fraction": fraction})["val_fraction"] == fraction


def test_override_epochs_is_parsed_as_yaml() -> None:
    params = resolve_params_files([], ["epochs=2"])
    assert params["epochs"] == 2 and isinstance(params["epochs"], int)
    assert resolve_params_files([], ["learning_rate=0.0003"])["learning_rate"] == pytest.approx(3e-4)
    assert resolve_params_files([], ["models=[basic_cnn]"])["models"] == ["basic_cnn"]
    assert resolve_params_files([], ["subset=null"])["subset"] is None
    assert resolve_params_files([], ["mixed_precision=true"])["mixed_precision"] is True


def test_exponent_without_a_dot_is_a_float(tmp_path) -> None:
    """PyYAML follows YAML 1.1, where 3e-4 is a string; params are read the YAML 1.2 way."""
    assert resolve_params_files([], ["learning_rate=3e-4"])["learning_rate"] == pytest.approx(3e-4)
    params_file = tmp_path / "p.yaml"
    params_file.write_text("learning_rate: 5e-4\nweight_decay: 1E-5\n")
    resolved = resolve_params_files([params_file])
    assert resolved["learning_rate"] == pytest.approx(5e-4) and resolved["weight_decay"] == pytest.approx(1e-5)


def test_nested_override_keeps_the_other_nested_values() -> None:
    params = resolve_params_files([], ["augmentation.rotation=5"])
    assert params["augmentation"]["rotation"] == 5
    for key, value in STUDY_DEFAULTS["augmentation"].items():
        if key != "rotation":
            assert params["augmentation"][key] == value
    assert parse_override("augmentation.rotation=5") == {"augmentation": {"rotation": 5}}


def test_nested_model_option_override_merges_with_the_file(tmp_path: Path) -> None:
    file = write(tmp_path / "p.yaml", "model_options:\n  basic_cnn:\n    filters: [8, 16]\n    dense_units: [32]\n")
    params = resolve_params_files([file], ["model_options.basic_cnn.filters=[4, 8]"])
    assert params["model_options"]["basic_cnn"] == {"filters": [4, 8], "dense_units": [32]}


def test_nested_override_with_an_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(ParamsError, match=r"rotaton.*valid: .*rotation"):
        resolve_params_files([], ["augmentation.rotaton=5"])


@pytest.mark.parametrize("text", ["epochs", "epochs 2", ""])
def test_override_without_equals_sign(text: str) -> None:
    with pytest.raises(ParamsError, match="must look like name=value"):
        parse_override(text)


def test_override_with_an_unknown_name() -> None:
    with pytest.raises(ParamsError, match=r"unknown parameter\(s\) epoch;"):
        resolve_params_files([], ["epoch=2"])


def test_bad_override_value() -> None:
    with pytest.raises(ParamsError, match="epochs"):
        resolve_params_files([], ["epochs=-2"])


def test_layers_in_order_files_then_extra_then_overrides(tmp_path: Path) -> None:
    first = write(tmp_path / "a.yaml", "epochs: 3\nbatch_size: 16\nname: a\n")
    second = write(tmp_path / "b.yaml", "epochs: 4\n")
    params = resolve_params_files([first, second], ["batch_size=8"], extra={"name": "extra", "epochs": 5})
    assert (params["epochs"], params["batch_size"], params["name"]) == (5, 8, "extra")
    assert resolve_params_files([first, second])["epochs"] == 4


def test_missing_params_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ParamsError, match=r"params file '.*nope\.yaml' does not exist"):
        resolve_params_files([missing])


@pytest.mark.parametrize(("text", "message"), [("epochs: [1\n", "not valid YAML"),
                                                ("- epochs\n- 2\n", "must hold a mapping")])
def test_malformed_params_file(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ParamsError, match=message):
        resolve_params_files([write(tmp_path / "bad.yaml", text)])


def test_empty_params_file_means_defaults(tmp_path: Path) -> None:
    assert resolve_params_files([write(tmp_path / "empty.yaml", "# nothing\n")]) == resolve_params()


def test_smoke_params_are_tiny_and_synthetic() -> None:
    params = resolve_params_files([PARAMS_DIR / "smoke.yaml"])
    assert params["synthetic"] is True
    assert params["synthetic_train"] <= 500 and params["synthetic_val"] <= 200 and params["synthetic_test"] <= 200
    assert params["epochs"] >= 3  # curves of several epochs: the demo shows learning
    assert params["models"] == ["basic_cnn", "resnet50v2"]
    assert max(params["model_options"]["basic_cnn"]["filters"]) <= 64


def test_paper_params_follow_the_paper() -> None:
    params = resolve_params_files([PARAMS_DIR / "paper.yaml"])
    assert params["synthetic"] is False and params["data"] is None  # real data expected, found by discovery
    assert params["models"] == ["basic_cnn", "resnet50v2"]
    assert (params["optimizer"], params["learning_rate"], params["batch_size"]) == ("adam", 1e-3, 64)
    assert 30 <= params["epochs"] <= 50
    assert params["lr_schedule"] == "constant" and params["reduce_lr_on_plateau"] is False
    assert params["label_smoothing"] == 0.0 and params["class_weights"] is None
    assert params["monitor"] == "val_accuracy"
    augmentation = params["augmentation"]
    assert augmentation["width_shift"] == augmentation["height_shift"] == 0.2
    assert augmentation["horizontal_flip"] is True
    assert augmentation["rotation"] > 0 and augmentation["zoom"] > 0 and augmentation["shear"] > 0
    # "the same setup for both models": model_options only describe architectures, never training
    training_keys = set(STUDY_DEFAULTS) - {"model_options"}
    for options in params["model_options"].values():
        assert not set(options) & training_keys


def test_a_new_parameter_is_added_in_one_place(monkeypatch: pytest.MonkeyPatch) -> None:
    """A key added to STUDY_DEFAULTS alone reaches the runner's -p, the notebooks' overrides and papermill's -p."""
    from fer_lib.app import params
    monkeypatch.setitem(params.STUDY_DEFAULTS, "new_knob", 1)
    assert params.resolve_params_files([], ["new_knob=3"])["new_knob"] == 3  # fer-study run -p new_knob=3
    assert params.for_notebook(None, {"new_knob": 7}, {})["new_knob"] == 7  # what the runner passes a notebook
    assert params.for_notebook(None, {}, {"new_knob": 5, "unrelated": 0})["new_knob"] == 5  # papermill -p new_knob 5
    assert params.for_notebook("notebook.yaml", {}, {})["new_knob"] == 1  # the default, beside the notebook's file


def test_notebook_params_file_holds_cheap_synthetic_defaults() -> None:
    from fer_lib.app import params
    values = params.for_notebook("notebook.yaml", {}, {})  # found in params/ of the project from anywhere
    assert values["synthetic"] is True and values["epochs"] <= 3 and values["models"] == ["basic_cnn"]
    assert params.for_notebook("notebook.yaml", {"epochs": 1}, {"epochs": 2})["epochs"] == 2  # -p wins


@pytest.mark.notebooks
def test_a_notebook_run_alone_takes_any_study_parameter_with_papermill(tmp_path: Path) -> None:
    """01_explore_data declares no data-size parameter, yet `-p synthetic_train 70` reaches it."""
    import papermill

    out = tmp_path / "explore.ipynb"
    papermill.execute_notebook(str(REPO_ROOT / "notebooks" / "01_explore_data.ipynb"), str(out),
                               parameters={"synthetic_train": 70, "synthetic_val": 14, "synthetic_test": 21},
                               kernel_name="python3", cwd=str(REPO_ROOT / "notebooks"), progress_bar=False)
    counts = next(cell for cell in json.loads(out.read_text())["cells"]
                  if "summarize(dataset)" in "".join(cell["source"]))
    plain = "".join(counts["outputs"][0]["data"]["text/plain"])
    assert plain.splitlines()[-1].split() == ["total", "70", "14", "21"], plain


def test_seeds_default_to_the_single_seed_and_decide_the_seed_trained() -> None:
    from fer_lib.app.params import seed_folder
    from fer_lib.core.config import DataConfig

    single = resolve_params({"seed": 4})
    assert single["seeds"] == [4] and seed_folder(single) is None
    assert DataConfig.from_mapping(single).seed == 4
    several = resolve_params({"seeds": [3, 1]})
    assert several["seed"] == 3 and seed_folder(several) == 3
    one_of_them = resolve_params({"seeds": [3, 1], "seed": 1})  # what the runner passes to one seed's notebook
    assert one_of_them["seed"] == 1 and seed_folder(one_of_them) == 1
    assert DataConfig.from_mapping(one_of_them).seed == 3, "every seed of a run draws the same data (the first's)"
    assert resolve_params(several) == several, "resolving resolved params changes nothing"
    before_seeds = {key: value for key, value in single.items() if key != "seeds"}  # a run's older params.yaml
    assert DataConfig.from_mapping(before_seeds).seed == 4 and seed_folder(before_seeds) is None


@pytest.mark.parametrize("seeds", [[], [1, 1], [-1], ["a"], 3, [True]])
def test_bad_seeds_name_the_parameter(seeds: object) -> None:
    with pytest.raises(ParamsError, match=r"parameter seeds must be null or a non-empty list of distinct integers"):
        resolve_params({"seeds": seeds})


def test_each_seed_trains_in_its_own_notebook_and_folder(tmp_path: Path) -> None:
    from fer_lib.app import runner, runs
    params = resolve_params({"seeds": [0, 5], "models": ["basic_cnn", "resnet50v2"]})
    plan = {"params": params, "notebooks_dir": tmp_path}
    jobs = runner.notebook_jobs(plan, tmp_path / "run")
    trains = [job for job in jobs if job["name"] == "02_train"]
    assert [(job["model"], job["seed"]) for job in trains] == [("basic_cnn", 0), ("resnet50v2", 0),
                                                                ("basic_cnn", 5), ("resnet50v2", 5)]
    assert [job["parameters"]["overrides"]["seed"] for job in trains] == [0, 0, 5, 5]
    assert trains[3]["output"].name == "02_train-resnet50v2-seed5.ipynb"
    assert runner.job_label(trains[3]) == "02_train (resnet50v2, seed 5)"
    assert [job["name"] for job in jobs][::len(jobs) - 1] == ["01_explore_data", "03_compare"]
    single = runner.notebook_jobs({"params": resolve_params({}), "notebooks_dir": tmp_path}, tmp_path / "run")
    assert [job["seed"] for job in single] == [None, None, None, None]
    assert [job["output"].name for job in single][1] == "02_train-basic_cnn.ipynb"
    assert records.model_dir("r", "basic_cnn", 5).as_posix() == "r/seeds/seed-5/models/basic_cnn"
