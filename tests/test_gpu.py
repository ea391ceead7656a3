"""The offline GPU tools in gpu/: the bundle's parts and package lists, the stage driver's estimates and archives,
and the `fer-study run` refusal when no Keras backend is installed. The whole offline run is rehearsed by
`make gpu-rehearsal` (a separate CI step), not here.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from fer_lib.app import provenance, tune
from fer_lib.app.params import resolve_params, resolve_params_files
REPO_ROOT = Path(__file__).resolve().parent.parent


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"gpu_{name}", REPO_ROOT / "gpu" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_bundle = load_script("make_bundle")
stages = load_script("stages")


def test_parts_one_when_it_fits_two_when_not_and_an_error_when_a_part_is_too_big() -> None:
    assert [p["name"] for p in make_bundle.plan_parts(9.0, 38.0, 60)] == ["all"]
    assert [(p["name"], p["mib"]) for p in make_bundle.plan_parts(20.0, 45.0, 60)] == [("code", 20.0), ("data", 45.0)]
    with pytest.raises(make_bundle.BundleError, match=r"the data part of the bundle is 61.0 MiB, over the 60 MiB"):
        make_bundle.plan_parts(9.0, 61.0, 60)


def test_package_lists_name_distributions_canonically(tmp_path: Path) -> None:
    listing = tmp_path / "have.txt"
    listing.write_text("# comment\nScikit_Learn  # with a comment\njax-cuda13-plugin\n\n")
    assert make_bundle.read_names(listing) == {"scikit-learn", "jax-cuda13-plugin"}
    target = make_bundle.read_names(REPO_ROOT / "gpu" / "target-packages.txt")
    assert {"jax", "numpy", "pandas", "scikit-learn", "matplotlib", "seaborn", "pillow"} <= target
    assert not {"keras", "tensorflow", "papermill", "ipykernel", "jupyterlab"} & target  # what it must bring
    with pytest.raises(make_bundle.BundleError, match="does not exist"):
        make_bundle.read_names(tmp_path / "missing.txt")


def test_the_bundle_takes_its_versions_from_the_lock_for_the_target() -> None:
    env = make_bundle.target_environment("3.12", list(make_bundle.DEFAULT_PLATFORMS))
    assert env["python_full_version"] == "3.12.0" and env["platform_machine"] == "x86_64"
    assert env["sys_platform"] == "linux"
    assert make_bundle.target_environment("3.11.7", ["manylinux_2_17_aarch64"])["platform_machine"] == "aarch64"
    with pytest.raises(make_bundle.BundleError, match="not a linux wheel tag"):
        make_bundle.target_environment("3.12", ["macosx_14_0_arm64"])
    pins = make_bundle.lock_pins_for(make_bundle.LOCK, env)
    assert {"keras", "papermill", "nbconvert", "ipykernel", "jax"} <= set(pins)
    make_bundle.check_locked([("Keras", pins["keras"]), ("papermill", pins["papermill"])], pins, "the target")
    with pytest.raises(make_bundle.BundleError, match=r"needs no_such_thing==1.0, which the lock lacks"):
        make_bundle.check_locked([("no_such_thing", "1.0")], pins, "the target")
    with pytest.raises(make_bundle.BundleError, match=r"left the lock's versions: keras 0.0.1"):
        make_bundle.check_locked([("keras", "0.0.1")], pins, "the target")


def bench_record(train_ips: float, infer_ips: float, compile_s: float) -> dict:
    """A throughput row of benchmarks/bench.py at batch 64, float32, the models' default options."""
    return {"train_images_per_second": train_ips, "inference_images_per_second": infer_ips,
            "compile_seconds_estimate": compile_s, "batch_size": 64, "mixed_precision": False, "model_options": {}}


def bench(models: dict[str, dict]) -> dict:
    """A benchmark record as fer_lib.app.estimate.read_bench returns it: 25,600 training images (400 batches of 64)."""
    return {"path": "bench.json", "device": "NVIDIA H200", "models": models,
            "settings": {"n_train": 25_600, "n_val": 2_560, "n_test": 5_120}}


def test_a_stage_is_estimated_as_fer_study_estimate_does_from_the_bench_timing_of_its_protocol() -> None:
    params = resolve_params({"models": ["basic_cnn", "resnet50v2"], "epochs": 10, "batch_size": 64, "tta": True})
    timing = bench({"basic_cnn": bench_record(25_600, 51_200, 40), "resnet50v2": bench_record(12_800, 25_600, 80)})
    # per model: 10 epochs of training, validation every epoch and once more, the test in 3 views (tta: the image,
    # then the image and its mirror), a quarter of the bench's compile (the persistent cache has it)
    cnn = 10 * 1.0 + (2_560 * 11 + 5_120 * 3) / 51_200 + 10
    resnet = 10 * 2.0 + (2_560 * 11 + 5_120 * 3) / 25_600 + 20
    expected = stages.SAFETY * (cnn + resnet + 4 * stages.NOTEBOOK_SECONDS)  # 01, 02 per model, 03
    assert stages.estimate_seconds(params, timing) == pytest.approx(expected)
    assert stages.estimate_seconds({**params, "seeds": [0, 1]}, timing) == pytest.approx(
        stages.SAFETY * (2 * (cnn + resnet) + 6 * stages.NOTEBOOK_SECONDS))  # two seeds: twice the work, 4 x 02
    assert stages.estimate_seconds(params, None) is None
    assert stages.estimate_seconds({**params, "models": ["other"]}, timing) is None


def test_archives_leave_out_weights_and_backups_and_shrink_to_fit(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "runs" / "20260101-000000-strong"
    for name, size in {"manifest.json": 10, "models/basic_cnn/metrics.json": 10, "models/basic_cnn/best.keras": 10,
                       "models/basic_cnn/backup/latest.weights.h5": 10, "report.html": 10,
                       "notebooks/01_explore_data.ipynb": 50_000, "notebooks/03_compare.ipynb": 10}.items():
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_bytes(os.urandom(size))
    packed = stages.pack([run], tmp_path / "1-strong.tar.gz", tmp_path / "runs")
    with tarfile.open(tmp_path / "1-strong.tar.gz") as tar:
        names = tar.getnames()
    assert not [n for n in names if n.endswith(".keras") or "backup" in n]
    assert f"{run.name}/models/basic_cnn/metrics.json" in names and packed["dropped"] == []
    monkeypatch.setattr(stages, "MAX_ARCHIVE_BYTES", 20_000)  # the explore notebook no longer fits
    packed = stages.pack([run], tmp_path / "2-strong.tar.gz", tmp_path / "runs")
    assert packed["dropped"] == [f"{run.name}/notebooks/01_explore_data.ipynb"] and packed["bytes"] <= 20_000


def test_check_backend_names_the_missing_backend_and_the_way_out(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # no keras.json: Keras's default, tensorflow
    monkeypatch.setitem(sys.modules, "keras", None)
    del sys.modules["keras"]
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(provenance.importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorflow" else real_find_spec(name, *a))
    with pytest.raises(provenance.BackendUnavailable,
                       match=r"the Keras backend 'tensorflow' \(the default \(KERAS_BACKEND is unset\)\) is not "
                             r"installed; set KERAS_BACKEND=jax"):
        provenance.check_backend()


def test_fer_study_run_without_a_usable_backend_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """KERAS_BACKEND unset and TensorFlow not importable: `fer-study run` says so before Keras is imported."""
    blocker = tmp_path / "site"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'tensorflow' or name.startswith('tensorflow.'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}')\n"
        "        return None\n"
        "sys.meta_path.insert(0, Block())\n")
    env = {key: value for key, value in os.environ.items() if key not in ("KERAS_BACKEND", "PYTHONPATH")}
    env.update(PYTHONPATH=str(blocker), KERAS_HOME=str(tmp_path / "keras-home"))
    done = subprocess.run([sys.executable, "-m", "fer_lib.app.cli", "run", "--params", "params/smoke.yaml",
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, env=env, cwd=REPO_ROOT,
                          timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fer-study: error: the Keras backend 'tensorflow'"), lines
    assert "not installed" in lines[0] and "KERAS_BACKEND=jax" in lines[0]
    assert not (tmp_path / "out").exists()


def test_summary_of_bench_records(tmp_path: Path) -> None:
    record = {"settings": {"params": "strong", "n_val": 1, "n_test": 2},
              "throughput": [{"model": "basic_cnn", "x": 1}, {"model": "resnet50v2", "x": 2}]}
    (tmp_path / "2026-01-01-jax-NVIDIA-H200.json").write_text(json.dumps(record))
    records = stages.bench_records(tmp_path)
    assert set(records) == {"strong"} and records["strong"]["models"]["resnet50v2"]["x"] == 2
    assert records["strong"]["settings"]["n_test"] == 2


collect_results = load_script("collect_results")


def test_collected_results_keep_numbers_and_plots_of_numbers_only(tmp_path: Path) -> None:
    run = tmp_path / "stage" / "20260101-000000-strong"
    files = ["params.yaml", "manifest.json", "models/basic_cnn/metrics.json", "models/basic_cnn/history.csv",
             "models/basic_cnn/curves.png", "models/basic_cnn/confusion_normalised.png",
             "models/basic_cnn/predictions_test.npz", "figures/fig4_training_curves.png", "figures/sample_grid.png",
             "figures/augmentation_preview.png", "figures/pixel_stats.png", "notebooks/01_explore_data.ipynb",
             "report.html"]
    for name in files:
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text(name)
    gpu_out = tmp_path / "gpu-out"
    gpu_out.mkdir()
    with tarfile.open(gpu_out / "3-strong.tar.gz", "w:gz") as tar:
        tar.add(run, arcname=run.name)
    bench = tmp_path / "2026-01-01-jax-NVIDIA-H200.json"
    bench.write_text("{}")
    with tarfile.open(gpu_out / "1-bench.tar.gz", "w:gz") as tar:
        tar.add(bench, arcname=bench.name)
    (gpu_out / "summary.json").write_text(json.dumps({"stages": [
        {"stage": "bench", "status": "complete", "archive": "1-bench.tar.gz"},
        {"stage": "paper", "status": "skipped"},
        {"stage": "strong", "status": "complete", "archive": "3-strong.tar.gz"}]}))
    lines = collect_results.collect(gpu_out, tmp_path / "outputs", tmp_path / "results", tmp_path / "bench")
    committed = sorted(str(p.relative_to(tmp_path / "results" / run.name))
                       for p in (tmp_path / "results" / run.name).rglob("*") if p.is_file())
    assert committed == sorted(["params.yaml", "manifest.json", "models/basic_cnn/metrics.json",
                                "models/basic_cnn/history.csv", "models/basic_cnn/curves.png",
                                "models/basic_cnn/confusion_normalised.png", "figures/fig4_training_curves.png"])
    assert (tmp_path / "outputs" / run.name / "figures" / "sample_grid.png").is_file()  # whole, outside the repo
    assert (tmp_path / "bench" / bench.name).is_file()
    assert any(line.startswith("paper: skipped") for line in lines)


def test_supervise_relays_output_reports_each_end_and_stops_at_the_deadline(capsys: pytest.CaptureFixture[str]
                                                                            ) -> None:
    ended: list[tuple[str, int | None, bool]] = []
    quick = stages.launch("quick", [sys.executable, "-c", "print('hello')"], REPO_ROOT)
    slow = stages.launch("slow", [sys.executable, "-c", "import time; time.sleep(60)"], REPO_ROOT)
    deadline = stages.time.time() + stages.PACK_SECONDS + 2
    stages.supervise({"quick": quick, "slow": slow}, deadline, lambda *args: ended.append(args))
    assert ended[0] == ("quick", 0, False)
    assert ended[1][0] == "slow" and ended[1][2] is True  # stopped at the deadline with SIGTERM
    assert "[quick] hello" in capsys.readouterr().out


def test_only_numbers_and_plots_of_numbers_leave_a_gpu_run_folder() -> None:
    """gpu/collect_results.py copies into results/ (committed) what holds no face: per model and per seed."""
    for shareable in ("params.yaml", "summary.json", "models/basic_cnn/metrics.json", "models/resnet50v2/curves.png",
                      "seeds/seed-1/models/basic_cnn/history.csv", "figures/training_curves_over_seeds.png"):
        assert collect_results.shareable(shareable), shareable
    for private in ("figures/sample_grid.png", "figures/augmentation_preview.png", "figures/occlusion_by_class.png",
                    "figures/occlusion_examples.png", "models/basic_cnn/best.keras",
                    "models/basic_cnn/predictions_test.npz", "seeds/seed-1/models/basic_cnn/predictions_test.npz",
                    "notebooks/03_compare.ipynb", "report.html"):
        assert not collect_results.shareable(private), private


check_results = load_script("check_results")


def test_the_tune_stage_is_a_stage_to_ask_for_not_a_default_one() -> None:
    assert stages.STAGES == ("bench", "paper", "strong", "tune")
    assert stages.DEFAULT_STAGES == ("bench", "paper", "strong") and stages.params_file("tune") == "params/strong.yaml"
    run_sh = (REPO_ROOT / "gpu" / "run.sh").read_text()
    assert 'stages="bench,paper,strong"' in run_sh  # the default stays the study stages
    usage = subprocess.run(["bash", str(REPO_ROOT / "gpu" / "run.sh"), "--help"], capture_output=True, text=True,
                           timeout=30).stdout
    assert "[--stages bench,paper,strong,tune]" in usage and "  tune    fer-study tune of params/strong.yaml" in usage
    assert usage.rstrip().endswith('"scaling" rows.')  # --help prints the whole header, no more
    for option in stages.TUNE_OPTIONS:
        assert f"tune:{option}=" in usage, option
    assert (REPO_ROOT / stages.TUNE_OPTIONS["space"]).is_file()


def test_the_space_file_of_the_tune_stage_is_a_valid_space_around_the_strong_protocol() -> None:
    space = tune.load_space(REPO_ROOT / "params" / "space-strong.yaml", [REPO_ROOT / "params" / "strong.yaml"],
                            stages.TUNE_DEFAULTS)
    assert {"learning_rate", "weight_decay"} <= set(space)
    assert space["learning_rate"]["low"] < 0.02 < space["learning_rate"]["high"] and space["learning_rate"]["log"]
    assert space["weight_decay"]["low"] < 1e-3 < space["weight_decay"]["high"]


def test_the_tune_stage_options_split_from_its_study_parameters() -> None:
    options, parameters = stages.tune_options(["epochs=2", "trials=3", "workers=2", "pruner=none",
                                               "space=/tmp/space.yaml", "augmentation.erasing=0.1"])
    assert options == {**stages.TUNE_OPTIONS, "trials": 3, "workers": 2, "pruner": "none", "space": "/tmp/space.yaml"}
    assert parameters == ["epochs=2", "augmentation.erasing=0.1"]
    assert stages.tune_options([]) == (stages.TUNE_OPTIONS, [])
    with pytest.raises(ValueError, match=r"tune:workers= must be a number >= 1, got '0'"):
        stages.tune_options(["workers=0"])
    with pytest.raises(ValueError, match=r"tune:model= needs a value"):
        stages.tune_options(["model="])


def test_the_search_is_estimated_from_the_bench_and_its_timeout_keeps_one_round_before_the_deadline() -> None:
    timing_of = bench({"basic_cnn": bench_record(25_600, 51_200, 40)})
    params = resolve_params({"epochs": 20, "batch_size": 64, "seeds": [0, 1, 2]})
    options = {**stages.TUNE_OPTIONS, "trials": 7, "workers": 3}
    # a trial alone: one seed, 20 epochs of 1 s, validation every epoch and once more, no test, its own compile;
    # 3 of them side by side per round
    trial = 20 * 1.0 + 2_560 * 21 / 51_200 + 40
    timing = stages.estimate_tune(params, timing_of, options)
    assert timing["round"] == pytest.approx(stages.SAFETY * 3 * trial)
    assert timing["least"] == pytest.approx(stages.SAFETY * (stages.TUNE_START_SECONDS + 3 * trial
                                                             + stages.TUNE_OUTPUT_SECONDS))
    assert timing["search"] == pytest.approx(stages.SAFETY * (stages.TUNE_START_SECONDS + 3 * 3 * trial  # 3 rounds
                                                              + stages.TUNE_OUTPUT_SECONDS))
    assert stages.estimate_tune(params, timing_of, {**options, "trials": 2})["round"] == pytest.approx(
        stages.SAFETY * 2 * trial)  # 2 trials: 2 workers' worth
    assert stages.tune_timeout(1000, timing) == pytest.approx(
        1000 - timing["round"] - stages.SAFETY * stages.TUNE_OUTPUT_SECONDS)
    assert stages.tune_timeout(1000, None) == 500  # no bench: half the time left
    assert stages.estimate_tune(params, None, options) is None
    assert stages.estimate_tune(params, timing_of, {**options, "model": "resnet50v2"}) is None


def bench_file(folder: Path, train_ips: float, compile_s: float) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    record = {"settings": {"params": "strong", "n_train": 25_728, "n_val": 2_871, "n_test": 3_589},
              "throughput": [{"model": model, **bench_record(25_728, 143_000, compile_s),
                              "train_images_per_second": train_ips} for model in ("basic_cnn", "resnet50v2")]}
    (folder / "2026-01-01-jax-NVIDIA-H200.json").write_text(json.dumps(record))


def test_the_tune_stage_is_skipped_when_one_round_does_not_fit(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    bench_file(tmp_path / "work" / "bench", 47_000, 20)
    (tmp_path / "out").mkdir()
    launched: list[list[str]] = []
    monkeypatch.setattr(stages, "launch", lambda name, command, cwd, **_: launched.append(command))
    code = stages.main(["--project", str(REPO_ROOT), "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out"),
                        "--deadline-at", str(stages.time.time() + 60), "--stages", "tune"])
    (entry,) = json.loads((tmp_path / "out" / "summary.json").read_text())["stages"]
    assert code == 1 and not launched
    assert entry["status"] == "skipped" and "one round of 3 trials side by side" in entry["note"], entry


def test_the_tune_stage_runs_fer_study_tune_with_its_options_overrides_and_a_timeout(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bench_file(tmp_path / "work" / "bench", 47_000, 20)
    (tmp_path / "out").mkdir()
    folder = tmp_path / "work" / "runs" / "tune" / "tune-strong-0123456789"  # what `fer-study tune` leaves
    launched: list[tuple[list[str], bool]] = []
    real_launch = stages.launch

    def fake_launch(name: str, command: list[str], cwd: Path, *, group: bool = False) -> subprocess.Popen:
        launched.append((command, group))
        for name_ in (*tune.OUTPUTS, "trials.journal", "trials/trial-0/best.keras"):
            (folder / name_).parent.mkdir(parents=True, exist_ok=True)
            (folder / name_).write_text(name_)
        return real_launch(name, [sys.executable, "-c", "pass"], cwd)

    monkeypatch.setattr(stages, "launch", fake_launch)
    monkeypatch.setattr(stages, "_ENDED", set())
    started = stages.time.time()
    code = stages.main(["--project", str(REPO_ROOT), "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out"),
                        "--deadline-at", str(started + 600), "--stages", "tune", "-p", "batch_size=64",
                        "--stage-param", "tune:epochs=30", "--stage-param", "tune:workers=2",
                        "--stage-param", "paper:epochs=1"])
    assert code == 0
    ((command, group),) = launched
    assert group  # its own process group: the deadline stops the workers with it
    assert command[command.index("-m") + 1:command.index("-m") + 3] == ["fer_lib.app.cli", "tune"]
    assert command[command.index("--space") + 1] == str(REPO_ROOT / "params" / "space-strong.yaml")
    options = {key: command[command.index(key) + 1] for key in ("--trials", "--workers", "--model", "--pruner")}
    assert options == {"--trials": "12", "--workers": "2", "--model": "basic_cnn", "--pruner": "successive_halving"}
    assert [command[i + 1] for i, part in enumerate(command) if part == "-p"] == ["epochs=20", "batch_size=64",
                                                                                  "epochs=30"]
    tune_params = resolve_params_files([REPO_ROOT / "params" / "strong.yaml"], ["epochs=30", "batch_size=64"])
    timing = stages.estimate_tune(tune_params, stages.bench_records(tmp_path / "work" / "bench")["strong"],
                                  {**stages.TUNE_OPTIONS, "workers": 2})
    timeout = float(command[command.index("--timeout") + 1])
    assert timeout == pytest.approx(stages.tune_timeout(600 - stages.PACK_SECONDS, timing), abs=3)
    (entry,) = json.loads((tmp_path / "out" / "summary.json").read_text())["stages"]
    assert entry["status"] == "complete" and entry["estimate_seconds"] == pytest.approx(timing["search"], abs=0.1)
    with tarfile.open(tmp_path / "out" / "1-tune.tar.gz") as tar:
        assert sorted(tar.getnames()) == sorted(f"{folder.name}/{name}" for name in tune.OUTPUTS)


def test_a_search_stopped_at_the_deadline_still_returns_its_outputs_from_the_journal(tmp_path: Path) -> None:
    """The search's own writer, from the journal alone; the archive then passes check_results' tune check."""
    from fer_lib.app import trials

    optuna = trials.quiet_optuna()
    folder = tmp_path / "runs" / "tune" / "tune-stub-0123456789"
    job = {"kind": "tune", "params_files": [str(REPO_ROOT / "params" / "smoke.yaml")], "overrides": [],
           "name": "stub", "model": "basic_cnn"}
    study = trials.create_study(str(folder / trials.JOURNAL_FILE), folder.name, job)
    distributions = {"learning_rate": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True),
                     "label_smoothing": optuna.distributions.FloatDistribution(0.0, 0.2)}
    for number, (rate, smoothing, accuracy) in enumerate([(1e-3, 0.0, 0.3), (1e-2, 0.1, 0.5), (3e-2, 0.2, 0.4)]):
        study.add_trial(optuna.trial.create_trial(
            params={"learning_rate": rate, "label_smoothing": smoothing}, distributions=distributions,
            value=accuracy, user_attrs={"overrides": [f"learning_rate={rate}", f"label_smoothing={smoothing}"]}))
    study.enqueue_trial({"learning_rate": 0.05, "label_smoothing": 0.0})  # one the deadline left waiting
    assert stages.write_tune_outputs(sys.executable, folder, REPO_ROOT, timeout=50)
    (tmp_path / "out").mkdir()
    packed = stages.pack([folder / name for name in tune.OUTPUTS], tmp_path / "out" / "1-tune.tar.gz",
                         tmp_path / "runs" / "tune")
    assert packed["files"] == 4
    (tmp_path / "out" / "summary.json").write_text(json.dumps({"stages": [
        {"stage": "tune", "status": "complete", "archive": "1-tune.tar.gz"}]}))
    assert check_results.check(tmp_path / "out", ["tune"], "jax") == []
    assert "learning_rate: 0.01\n" in (folder / "best.yaml").read_text()


def tune_archive(tmp_path: Path, files: dict[str, bytes]) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    with tarfile.open(out / "4-tune.tar.gz", "w:gz") as tar:
        for name, data in files.items():
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    (out / "summary.json").write_text(json.dumps({"stages": [
        {"stage": "tune", "status": "complete", "archive": "4-tune.tar.gz"}]}))
    return out


PLOT = check_results.PNG_SIGNATURE + os.urandom(20_000)
TABLE = b"number,value,state\n0,0.5,COMPLETE\n1,0.4,COMPLETE\n2,,PRUNED\n"


@pytest.mark.parametrize(("change", "problem"), [
    ({}, None),
    ({"trials.csv": b"number,value,state\n0,0.5,COMPLETE\n1,,PRUNED\n"}, "trials.csv has 2 trial(s), 1 complete"),
    ({"param_importances.png": None}, "no param_importances.png in tune-strong-0123456789"),
    ({"optimization_history.png": check_results.PNG_SIGNATURE + b"x" * 100},
     "optimization_history.png is 108 bytes, too small for a plot"),
    ({"optimization_history.png": b"GIF89a" + os.urandom(20_000)}, "optimization_history.png is not a PNG file"),
    ({"best.yaml": b"learning_rte: 0.01\n"}, "best.yaml is not a params file the study accepts: unknown parameter"),
    ({"best.yaml": b"epochs: [\n"}, "best.yaml is not a params file the study accepts"),
    ({"trials/trial-0/history.csv": b"epoch\n"}, "holds trials/trial-0/history.csv, beyond the search's outputs"),
    ({"trials/trial-0/best.keras": b"weights"}, "model weights in 4-tune.tar.gz"),
])
def test_check_results_checks_what_the_tune_stage_returns(tmp_path: Path, change: dict, problem: str | None) -> None:
    files = {"trials.csv": TABLE, "optimization_history.png": PLOT, "param_importances.png": PLOT,
             "best.yaml": b"# the best trial\nname: strong-tuned\nlearning_rate: 0.01\nepochs: 20\n", **change}
    out = tune_archive(tmp_path, {f"tune-strong-0123456789/{name}": data for name, data in files.items()
                                  if data is not None})
    problems = check_results.check(out, ["tune"], "jax")
    if problem is None:
        assert problems == []
    else:
        assert any(problem in p for p in problems), problems


def test_check_results_wants_the_tune_outputs_in_one_tune_folder(tmp_path: Path) -> None:
    out = tune_archive(tmp_path, {"trials.csv": TABLE, "20260101-000000-strong/manifest.json": b"{}"})
    (problem,) = check_results.check(out, ["tune"], "jax")
    assert problem.startswith("stage tune: expected one tune-* folder in its archive")


def test_collected_tune_outputs_are_shareable() -> None:
    for name in tune.OUTPUTS:
        assert collect_results.shareable(name), name
    assert not collect_results.shareable("trials/trial-0/best.keras")
    assert not collect_results.shareable("trials.journal")
