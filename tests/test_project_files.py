"""The project's own files agree with each other: pyproject.toml vs the lock (requirements/lock.txt) vs
environment.yml vs the Makefile, README vs the params, the Makefile and CI script vs what they must run, the params
files vs their documentation.

Fast: text checks only (plus importing fer_lib.app.study for STUDY_DEFAULTS).
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from fer_lib.app.lock import lock_pins

REPO_ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
MAKE_EXTRAS = ("tf", "jax", "dev", "lab")  # what `make` installs: the lock of .[tf,jax,dev,lab]
LOCK = REPO_ROOT / "requirements" / "lock.txt"
# The environments the lock is for (and tested on): CPython 3.11 and 3.12 on linux x86_64, early and late patch releases.
LOCK_ENVIRONMENTS = [
    {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
     "implementation_name": "cpython", "platform_python_implementation": "CPython",
     "python_version": full.rsplit(".", 1)[0], "python_full_version": full}
    for full in ("3.11.0", "3.11.14", "3.12.0", "3.12.12")
]
README = (REPO_ROOT / "README.md").read_text()
MAKEFILE = (REPO_ROOT / "Makefile").read_text()
CI_RUN = REPO_ROOT / ".ci" / "run"


def pyproject_requirements() -> list[Requirement]:
    project = PYPROJECT["project"]
    extras = project["optional-dependencies"]
    return [Requirement(text) for text in [*project["dependencies"], *(r for e in MAKE_EXTRAS for r in extras[e])]]


def environment_yml() -> tuple[list[str], list[str]]:
    """environment.yml's conda packages (names) and its pip lines."""
    environment = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    conda, pip = [], []
    for entry in environment["dependencies"]:
        if isinstance(entry, dict):
            pip.extend(entry["pip"])
        else:
            conda.append(re.split(r"[<>=!~ ]", entry, maxsplit=1)[0])
    return conda, pip


def make_dry_run(*arguments: str) -> str:
    """What `make -n ARGUMENTS` would run (nothing is installed or run), backslash-newlines joined."""
    if not (REPO_ROOT / "Makefile").is_file() or subprocess.run(["make", "--version"], capture_output=True).returncode:
        pytest.skip("make is not installed")
    done = subprocess.run(["make", "-n", "--no-print-directory", *arguments], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return re.sub(r"\\\n\s*", " ", done.stdout)


def test_make_extras_exist() -> None:
    assert set(MAKE_EXTRAS) <= set(PYPROJECT["project"]["optional-dependencies"])
    assert "'.[$(EXTRAS)]'" in MAKEFILE and re.search(r"^EXTRAS \?= tf,jax,dev,lab$", MAKEFILE, re.M)
    assert re.search(r"^LOCK_EXTRAS := tf jax dev lab$", MAKEFILE, re.M), "the lock holds what `make` installs"


def test_make_install_installs_the_lock_by_default() -> None:
    assert re.search(r"^LOCKED \?= 1$", MAKEFILE, re.M) and re.search(r"^LOCK := requirements/lock.txt$", MAKEFILE, re.M)
    assert 'pip install --quiet -r "$(LOCK)"' in MAKEFILE and "--no-deps -e ." in MAKEFILE
    names = {canonicalize_name(r.name) for r in pyproject_requirements()}
    assert {"uv", "import-linter", "packaging"} <= names, "the dev extra has uv (`make lock`) and import-linter"


def test_the_lock_pins_every_requirement_of_pyproject() -> None:
    """Each requirement of pyproject.toml (dependencies + the four extras) that applies to CPython 3.11 or 3.12 on
    linux x86_64 has exactly one pin in the lock there, and the pin satisfies it: the lock is not stale."""
    requirements = pyproject_requirements()
    assert {"keras", "papermill", "pytest", "nbval", "jax", "tensorflow-cpu", "jupyterlab"} <= {
        canonicalize_name(r.name) for r in requirements}
    for environment in LOCK_ENVIRONMENTS:
        pins = lock_pins(LOCK, environment)  # markers evaluated with packaging.markers for this environment
        for requirement in requirements:
            if requirement.marker is not None and not requirement.marker.evaluate(environment):
                continue
            name = canonicalize_name(requirement.name)
            where = f"CPython {environment['python_full_version']} on linux x86_64"
            assert name in pins, f"{requirement} has no pin in {LOCK.name} for {where}: run make lock"
            assert requirement.specifier.contains(pins[name], prereleases=True), \
                f"{name}=={pins[name]} in {LOCK.name} does not satisfy pyproject's {requirement}: run make lock"
        assert "tensorflow-cpu" in pins and "tensorflow" not in pins


def test_the_lock_header_records_the_command_of_make_lock() -> None:
    header = LOCK.read_text().splitlines()[:2]
    assert header[0] == "# This file was autogenerated by uv via the following command:"
    recorded = header[1].removeprefix("#").strip()
    date = re.search(r"^LOCK_DATE \?= (\S+)$", MAKEFILE, re.M).group(1)
    for option in ("uv pip compile pyproject.toml", "--universal", "--python-version 3.11",
                   f"--exclude-newer {date}", "-o requirements/lock.txt",
                   *(f"--extra {extra}" for extra in MAKE_EXTRAS)):
        assert option in recorded, option
    # ... and it is exactly what `make lock` runs (with the uv of .venv, which the lock pins)
    command = re.search(r'"[^"]*/uv" (pip compile .*?) >/dev/null', make_dry_run("lock")).group(1)
    assert recorded == "uv " + " ".join(command.split())  # the shell's words, as uv records them
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", date), "an instant in UTC, not a local date"


def test_environment_yml_installs_the_lock() -> None:
    conda, pip = environment_yml()
    assert set(conda) == {"python", "pip"}, "everything but python itself comes from pip (see environment.yml)"
    assert pip == ["-r requirements/lock.txt", "--editable ."], "the lock's exact versions, then the project"


def test_environment_yml_python_version_agrees() -> None:
    environment = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    assert PYPROJECT["project"]["requires-python"] == ">=3.11"
    assert "python>=3.11,<3.13" in environment["dependencies"], "the Pythons the lock is for (see its comment)"


def test_console_script_and_package() -> None:
    assert PYPROJECT["project"]["scripts"] == {"fer-study": "fer_lib.app.cli:main"}
    from fer_lib.app import cli
    assert callable(cli.main)


def test_pytest_markers_are_registered() -> None:
    markers = {line.split(":")[0] for line in PYPROJECT["tool"]["pytest"]["ini_options"]["markers"]}
    assert markers == {"backend", "slow", "alone", "real_data", "browser", "notebooks", "distribution"}
    assert PYPROJECT["tool"]["pytest"]["ini_options"]["testpaths"] == ["tests"]


def test_readme_leads_with_the_two_commands() -> None:
    first_block = README.split("```")[1]
    assert "make study" in first_block and "make test" in first_block
    assert README.index("make study") < README.index("## ")


def test_readme_documents_every_parameter() -> None:
    from fer_lib.app.params import STUDY_DEFAULTS

    missing = [key for key in STUDY_DEFAULTS if f"`{key}`" not in README]
    assert not missing, f"README.md's params table lacks {missing}"
    from fer_lib.core.config import AugmentConfig

    missing = [f.name for f in dataclasses.fields(AugmentConfig) if f"`{f.name}`" not in README]
    assert not missing, f"README.md does not describe augmentation keys {missing}"


def test_readme_sections() -> None:
    for heading in ("## Results", "## Real FER2013", "## GPU", "## Parameters", "## Outputs"):
        assert re.search(rf"^{re.escape(heading)}", README, re.M), heading
    for text in ("FER2013_DIR", "--data", "data/fer2013", "research", "PrivateTest", "KERAS_BACKEND=jax",
                 "mixed_precision=true", "fer-study list", "make lab", "report.html", "manifest.json"):
        assert text in README, text


@pytest.mark.parametrize("name", ["smoke.yaml", "paper.yaml"])
def test_every_line_of_the_params_files_is_explained(name: str) -> None:
    """Each setting carries a comment saying what it does (the files are documentation too)."""
    lines = (REPO_ROOT / "params" / name).read_text().splitlines()
    unexplained = [line for line in lines if line.strip() and not line.lstrip().startswith("#") and "#" not in line]
    assert not unexplained, unexplained


def test_params_files_use_only_known_names() -> None:
    from fer_lib.app.params import STUDY_DEFAULTS

    for file in (REPO_ROOT / "params").glob("*.yaml"):
        if not file.name.startswith("space-"):
            assert set(yaml.safe_load(file.read_text())) <= set(STUDY_DEFAULTS), file


def test_space_files_are_valid_searches_around_their_params() -> None:
    """params/space-*.yaml: every name a study parameter (dotted ones too), every end and choice a valid value."""
    from fer_lib.app import tune

    spaces = sorted((REPO_ROOT / "params").glob("space-*.yaml"))
    assert spaces
    for file in spaces:
        base = REPO_ROOT / "params" / f"{file.stem.removeprefix('space-')}.yaml"
        assert tune.load_space(file, [base], []), file


def test_makefile_targets_and_commands() -> None:
    for target in ("install", "study", "test", "test-tf", "test-jax", "test-notebooks", "lab", "list", "lock",
                   "lock-upgrade"):
        assert re.search(rf"^{re.escape(target)}:", MAKEFILE, re.M), target
    assert re.search(r"^\.DEFAULT_GOAL := install$", MAKEFILE, re.M)
    assert "KERAS_BACKEND=jax JAX_PLATFORMS=cpu JAX_NUM_CPU_DEVICES=2" in MAKEFILE
    assert '$(PYTEST) -m "backend or distribution" $(XDIST)' in MAKEFILE and "XDIST := -n $(PYTEST_WORKERS)" in MAKEFILE
    # the whole runs of the real notebooks alone, after the parallel pass (each under a minute only with the cores)
    assert '$(PYTEST) $(XDIST) -m "not alone"' in MAKEFILE and "$(PYTEST) -m alone" in MAKEFILE
    assert "--nbval-lax" in MAKEFILE and "--nbval-sanitize-with notebooks/sanitize.cfg" in MAKEFILE
    # every notebook is validated, and the ones that read 02_train's run only after it (a fresh clone has no other)
    passes = [line.split()[1:] for line in MAKEFILE.splitlines() if line.startswith("\t$(NBVAL) ")]
    assert sorted(n for p in passes for n in p if n.endswith(".ipynb")) == sorted(
        f"notebooks/{n.name}" for n in (REPO_ROOT / "notebooks").glob("*.ipynb"))
    assert passes[0][:2] == ["notebooks/01_explore_data.ipynb", "notebooks/02_train.ipynb"]
    assert passes[1][:2] == ["notebooks/03_compare.ipynb", "notebooks/04_predict.ipynb"]
    assert "-m venv" in MAKEFILE and "ipykernel install --sys-prefix --name python3" in MAKEFILE
    assert "params/paper.yaml" in MAKEFILE and "params/smoke.yaml" in MAKEFILE


@pytest.mark.parametrize(("variables", "expected"), [
    ({}, "--params params/smoke.yaml"),
    ({"FER2013_DIR": "/somewhere/fer2013"}, "--params params/paper.yaml"),
    ({"DATA": "/somewhere/fer2013"}, '--params params/paper.yaml --data "/somewhere/fer2013"'),
    ({"PARAMS": "params/mine.yaml"}, "--params params/mine.yaml"),
])
def test_make_study_chooses_params_by_data_discovery(variables: dict[str, str], expected: str,
                                                     tmp_path: Path) -> None:
    if not (REPO_ROOT / "Makefile").is_file() or subprocess.run(["make", "--version"], capture_output=True).returncode:
        pytest.skip("make is not installed")
    if (REPO_ROOT / "data" / "fer2013").exists() and not variables:
        pytest.skip("data/fer2013 exists in this checkout, so make study picks paper.yaml")
    env = {k: v for k, v in os.environ.items() if k != "FER2013_DIR"}
    args = [f"{k}={v}" for k, v in variables.items() if k != "FER2013_DIR"]
    env.update({k: v for k, v in variables.items() if k == "FER2013_DIR"})
    # -n: print the commands only (nothing is installed or run)
    done = subprocess.run(["make", "-n", "--no-print-directory", "study", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert expected in done.stdout.splitlines()[-1]


def test_ci_script() -> None:
    assert os.access(CI_RUN, os.X_OK), ".ci/run must be executable"
    text = CI_RUN.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "\nset -euo pipefail\n" in text
    assert "apt-get install" in text and "chromium chromium-driver" in text
    assert re.search(r"^make test\b", text, re.M)
    done = subprocess.run(["bash", "-n", str(CI_RUN)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_data_never_in_the_repository() -> None:
    ignored = (REPO_ROOT / ".gitignore").read_text().split()
    assert "data/" in ignored and "outputs/" in ignored
