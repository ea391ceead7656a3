"""Shared test set-up: quiet, headless environment; where FER2013 is; a tiny synthetic data set; marker skips.

* ``MPLBACKEND=Agg`` and ``TF_CPP_MIN_LOG_LEVEL=2`` are set before any test imports matplotlib or TensorFlow.
* FER2013 is looked for in ``$FER2013_DIR``, else ``../shared/fer2013`` next to the repository. Tests marked
  ``real_data`` (or using the ``fer2013_dir`` fixture) are skipped with a reason when it is absent; the data is only
  read there, never copied into the repository.
* Tests marked ``browser`` are skipped with a reason when ``/usr/bin/chromium`` is missing (``.ci/run`` installs it).
* Tests marked ``distribution`` are skipped with a reason unless JAX is the backend and sees 2 devices
  (``make test-distribution`` runs them on JAX's 2 CPU devices).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_FER2013 = REPO_ROOT.parent / "shared" / "fer2013"
CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))


def find_fer2013() -> tuple[Path | None, str]:
    """Where FER2013 is for the tests, or None and the reason it is not available."""
    from_env = os.environ.get("FER2013_DIR")
    if from_env:
        path = Path(from_env).expanduser()
        if path.exists():
            return path, f"FER2013_DIR={path}"
        return None, f"FER2013_DIR points to '{path}', which does not exist"
    if SHARED_FER2013.exists():
        return SHARED_FER2013, f"found at {SHARED_FER2013}"
    return None, (f"FER2013 not available: set FER2013_DIR or place it at {SHARED_FER2013} (research use only; "
                  f"never inside the repository)")


def chromium_path() -> Path | None:
    if CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    found = shutil.which("chromium")
    return Path(found) if found else None


def distribution_unavailable() -> str | None:
    """Why the `distribution` tests cannot run here (None: they can): they train over 2 devices with JAX."""
    if os.environ.get("KERAS_BACKEND") != "jax":
        return "trains over 2 devices with JAX: make test-distribution (KERAS_BACKEND=jax, JAX_NUM_CPU_DEVICES=2)"
    import jax

    if jax.device_count() < 2:
        return (f"JAX sees {jax.device_count()} device(s), these tests need 2: make test-distribution "
                f"(JAX_NUM_CPU_DEVICES=2)")
    return None


_FER2013_KEY = pytest.StashKey[tuple]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_FER2013_KEY] = find_fer2013()


def pytest_report_header(config: pytest.Config) -> list[str]:
    path, how = config.stash[_FER2013_KEY]
    backend = os.environ.get("KERAS_BACKEND", "default (tensorflow)")
    browser = chromium_path()
    return [f"fer-study: FER2013 {'available, ' + how if path else 'absent (' + how + ')'}",
            f"fer-study: KERAS_BACKEND={backend}; chromium: {browser or 'absent (browser tests skip)'}"]


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("real_data") is not None:
        path, how = item.config.stash[_FER2013_KEY]
        if path is None:
            pytest.skip(how)
    if item.get_closest_marker("distribution") is not None:
        reason = distribution_unavailable()
        if reason:
            pytest.skip(reason)
    if item.get_closest_marker("browser") is not None and chromium_path() is None:
        pytest.skip(f"chromium not installed at {CHROMIUM} (on Debian: apt-get install chromium chromium-driver; "
                    f"playwright's own browsers are never downloaded)")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def fer2013_dir(pytestconfig: pytest.Config) -> Path:
    """The real FER2013 (read only); the test is skipped with the reason when it is not available."""
    path, how = pytestconfig.stash[_FER2013_KEY]
    if path is None:
        pytest.skip(how)
    return path


@pytest.fixture(scope="session")
def tiny_synthetic():
    """A small SYNTHETIC FerDataset (140 train / 70 val / 70 test, seed 0), shared by the whole session.

    Treat it as read-only: it is one object for every test that asks for it.
    """
    from fer_lib.core.data import load_synthetic

    return load_synthetic(140, 70, 70, seed=0)


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's chromium for playwright (``executable_path``); the test is skipped when it is not installed."""
    path = chromium_path()
    if path is None:
        pytest.skip(f"chromium not installed at {CHROMIUM} (apt-get install chromium chromium-driver)")
    return path
