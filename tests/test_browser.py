"""End to end in a real browser: JupyterLab runs 03_compare on a tiny finished run, and the ConfusionInspector works;
it runs 04_predict on the same run, and a photo uploaded through the PredictView comes back annotated, with a chart.

Starts JupyterLab on loopback (random token, free port, throw-away config/settings/workspace folders), opens a copy
of ``notebooks/03_compare.ipynb`` with ``run_dir`` injected after its parameters cell (or, if that notebook does not
show the inspector, a two-cell notebook that does) in headless Debian chromium via Playwright, runs all cells,
clicks a non-empty confusion-matrix cell and checks that its images appear. A copy of ``notebooks/04_predict.ipynb``
(``run_dir`` injected the same way) runs all its cells, then scikit-image's sample photo is uploaded through the
FileUpload's file chooser. Screenshots are saved in ``outputs/browser/`` (git-ignored) and their paths printed.

Needs ``/usr/bin/chromium`` (``apt-get install -y chromium``) and the playwright package; Playwright's own browser
download is never used. Skipped with the reason when either is missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

try:  # see test_widgets.py
    from fixtures_runs import make_finished_run
except ImportError:  # pragma: no cover
    from tests.fixtures_runs import make_finished_run

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(900)]

REPO_ROOT = Path(__file__).resolve().parents[1]
SCREENSHOT_DIR = REPO_ROOT / "outputs" / "browser"
COMPARE_NOTEBOOK = REPO_ROOT / "notebooks" / "03_compare.ipynb"
PREDICT_NOTEBOOK = REPO_ROOT / "notebooks" / "04_predict.ipynb"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}


def _chromium() -> str | None:
    if Path("/usr/bin/chromium").is_file():
        return "/usr/bin/chromium"
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _skip_reason() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright python package is not installed (pip install playwright; no browser download needed)"
    if _chromium() is None:
        return "chromium not found at /usr/bin/chromium or on PATH (apt-get install -y chromium)"
    try:
        import jupyterlab  # noqa: F401
    except ImportError:
        return "jupyterlab is not installed"
    return None


if (_reason := _skip_reason()) is not None:
    pytest.skip(_reason, allow_module_level=True)

import nbformat  # noqa: E402
from playwright.sync_api import Page, Route, sync_playwright  # noqa: E402


# --------------------------------------------------------------------------------------------------------------------
# JupyterLab on loopback
# --------------------------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Lab:
    """A JupyterLab server started for one test: its URL, token, log, and REST helpers."""

    def __init__(self, root: Path, work: Path) -> None:
        self.root, self.work = root, work
        self.port, self.token = _free_port(), secrets.token_hex(16)
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = work / "jupyterlab.log"
        self.runtime_dir = work / "runtime"
        self.process: subprocess.Popen[bytes] | None = None

    def environment(self) -> dict[str, str]:
        """Isolated Jupyter config/settings/workspaces (no user state leaks in), the venv first on PATH (the kernel
        spec runs ``python``), and the repo on PYTHONPATH so the kernel imports this checkout's fer_lib."""
        config, settings = self.work / "config", self.work / "lab-settings"
        (config / "labconfig").mkdir(parents=True, exist_ok=True)
        (config / "labconfig" / "page_config.json").write_text(json.dumps(
            {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
        tracker = settings / "@jupyterlab" / "notebook-extension"
        tracker.mkdir(parents=True, exist_ok=True)
        # Render every cell (no virtual scrolling), so the widget's DOM exists wherever it is in the notebook.
        (tracker / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
        notification = settings / "@jupyterlab" / "apputils-extension"
        notification.mkdir(parents=True, exist_ok=True)
        (notification / "notification.jupyterlab-settings").write_text(json.dumps(
            {"fetchNews": "false", "checkForUpdates": False}))
        env = dict(os.environ)
        env.update({
            "JUPYTER_CONFIG_DIR": str(config),
            "JUPYTERLAB_SETTINGS_DIR": str(settings),
            "JUPYTERLAB_WORKSPACES_DIR": str(self.work / "workspaces"),
            "JUPYTER_RUNTIME_DIR": str(self.runtime_dir),
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
            "PYTHONPATH": os.pathsep.join(p for p in [str(REPO_ROOT), env.get("PYTHONPATH", "")] if p),
            "TF_CPP_MIN_LOG_LEVEL": "2",
        })
        return env

    def start(self, timeout: float = 90.0) -> None:
        command = [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--IdentityProvider.token={self.token}",
                   f"--port={self.port}", "--ServerApp.port_retries=0", "--ip=127.0.0.1",
                   f"--ServerApp.root_dir={self.root}", "--LabApp.extension_manager=readonly",
                   "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:  # containers and CI often run as root
            command.append("--allow-root")
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.environment(),
                                            cwd=self.root, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with code {self.process.returncode}:\n{self.log_tail()}")
            try:
                self.api("/api/status")
                return
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.5)
        raise TimeoutError(f"JupyterLab did not answer on {self.base} within {timeout:.0f}s:\n{self.log_tail()}")

    def api(self, path: str, method: str = "GET") -> Any:
        request = urllib.request.Request(self.base + path, method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def kernel_states(self) -> list[str]:
        try:
            return [kernel["execution_state"] for kernel in self.api("/api/kernels")]
        except urllib.error.HTTPError as error:  # jupyter_server answers 500 while a kernel is still being made
            if error.code == 500:                 # (its last_activity is None then); ask again
                return ["starting"]
            raise

    def notebook_kernel_state(self, notebook: str) -> str | None:
        """The state of the kernel of one open notebook (other tests' kernels may still be running)."""
        for session in self.api("/api/sessions"):
            if session.get("path", "").endswith(notebook) and session.get("kernel"):
                return session["kernel"].get("execution_state")
        return None

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.is_file() else ""

    def stop(self) -> None:
        """Shut down via the REST API (which also stops kernels), then terminate / kill what is left of ours."""
        if self.process is None:
            return
        try:
            if self.process.poll() is None:
                self.api("/api/shutdown", method="POST")
                self.process.wait(timeout=20)
        except (urllib.error.URLError, OSError, subprocess.TimeoutExpired):
            pass
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self.process.poll() is not None:
                break
            try:
                os.killpg(self.process.pid, sig)  # the session this test started: the server (and its kernels)
                self.process.wait(timeout=15)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        self._kill_own_kernels()

    def _kill_own_kernels(self) -> None:
        """Kernels whose connection file lives in this test's runtime folder: started by this test, nothing else."""
        marker = str(self.runtime_dir)
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "ipykernel_launcher" in cmdline and marker in cmdline:
                try:
                    os.kill(int(proc.name), signal.SIGKILL)
                except ProcessLookupError:
                    pass


def _prepare_notebook(root: Path, run_dir: Path) -> str:
    """Copy 03_compare with ``run_dir`` injected after its parameters cell (as papermill does); if 03_compare is
    missing or does not show the inspector, write a minimal notebook that does. Returns the notebook's name."""
    injected = f"run_dir = {str(run_dir)!r}  # injected by tests/test_browser.py"
    if COMPARE_NOTEBOOK.is_file() and "ConfusionInspector" in COMPARE_NOTEBOOK.read_text():
        notebook = nbformat.read(COMPARE_NOTEBOOK, as_version=4)
        cells = notebook.cells
        at = next((i for i, cell in enumerate(cells) if "parameters" in cell.metadata.get("tags", [])), None)
        cell = nbformat.v4.new_code_cell(injected, metadata={"tags": ["injected-parameters"]})
        if at is None:
            at = next(i for i, cell in enumerate(cells) if cell.cell_type == "code") - 1
        cells.insert(at + 1, cell)
        name = COMPARE_NOTEBOOK.name
    else:
        notebook = nbformat.v4.new_notebook()
        notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                           "language": "python"}
        notebook.cells = [nbformat.v4.new_code_cell(injected),
                          nbformat.v4.new_code_cell("from fer_lib.analysis.widgets import ConfusionInspector\n"
                                                    "display(ConfusionInspector(run_dir))")]
        name = "inspector.ipynb"
    for cell in notebook.cells:  # start from a clean notebook: no stale outputs or widget state
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    notebook.metadata.pop("widgets", None)
    nbformat.write(notebook, root / name)
    return name


# --------------------------------------------------------------------------------------------------------------------
# The test
# --------------------------------------------------------------------------------------------------------------------


def _prepare_predict_notebook(root: Path, run_dir: Path) -> str:
    """Copy 04_predict with ``run_dir`` injected after its parameters cell, without outputs. Returns its name."""
    notebook = nbformat.read(PREDICT_NOTEBOOK, as_version=4)
    at = next(i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", []))
    notebook.cells.insert(at + 1, nbformat.v4.new_code_cell(
        f"run_dir = {str(run_dir)!r}  # injected by tests/test_browser.py", metadata={"tags": ["injected-parameters"]}))
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    notebook.metadata.pop("widgets", None)
    nbformat.write(notebook, root / PREDICT_NOTEBOOK.name)
    return PREDICT_NOTEBOOK.name


@pytest.fixture(scope="module")
def browser_run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # FER_STUDY_BROWSER_RUN_DIR points the tests at an existing run folder (e.g. a real-data run) instead of a tiny one
    given = os.environ.get("FER_STUDY_BROWSER_RUN_DIR")
    return Path(given).resolve() if given else make_finished_run(tmp_path_factory.mktemp("browser-run") / "outputs")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, browser_run_dir: Path) -> Iterator[tuple[Lab, str]]:
    work = tmp_path_factory.mktemp("browser")
    run_dir = browser_run_dir
    root = work / "lab"
    root.mkdir()
    name = _prepare_notebook(root, run_dir)
    _prepare_predict_notebook(root, run_dir)
    server = Lab(root, work)
    try:
        server.start()
        yield server, name
    finally:
        server.stop()


def _wait_until(page: Page, condition: Callable[[], bool], timeout: float, what: str,
                details: Callable[[], str]) -> None:
    """Poll ``condition``; pausing through Playwright (not time.sleep) keeps its event loop, hence the page's
    routed requests, running while we wait."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        page.wait_for_timeout(500)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{details()}")


def _outputs_text(page: Page) -> str:
    texts = page.locator(".jp-OutputArea-output").all_inner_texts()
    return "notebook outputs:\n" + "\n---\n".join(t[-1500:] for t in texts if t.strip())


def _loopback_only(route: Route) -> None:
    host = urllib.parse.urlsplit(route.request.url).hostname or ""
    if host in LOOPBACK_HOSTS:
        route.continue_()
    else:
        route.abort()


@contextlib.contextmanager
def lab_page(server: Lab, notebook: str, failure_shot: str) -> Iterator[tuple[Any, Callable[[], str]]]:
    """Headless chromium on ``notebook`` in the JupyterLab ``server`` (loopback only): the page, and a function that
    describes the page's state for an assertion message (saving a screenshot named ``failure_shot``)."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=_chromium(), headless=True, args=CHROMIUM_ARGS,
                                             timeout=60_000)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1700})
            context.route("**/*", _loopback_only)
            page = context.new_page()
            page.set_default_timeout(60_000)

            def details() -> str:
                with_failure = SCREENSHOT_DIR / failure_shot
                try:
                    page.screenshot(path=str(with_failure))
                    outputs = _outputs_text(page)
                except Exception as error:  # the page itself may be the problem
                    outputs = f"(no page state: {error})"
                return f"{outputs}\nscreenshot: {with_failure}\nJupyterLab log:\n{server.log_tail()}"

            page.goto(f"{server.base}/lab/tree/{notebook}?token={server.token}", wait_until="domcontentloaded",
                      timeout=90_000)
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=90_000)
            yield page, details
        finally:
            browser.close()


def run_all_cells(page: Any) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator('.lm-Menu-item[data-command="runmenu:run-all"], '  # Run > Run All Cells
                 '.lm-Menu-item[data-command="notebook:run-all-cells"]').first.click()


def test_confusion_inspector_in_jupyterlab(lab: tuple[Lab, str], capsys: pytest.CaptureFixture[str]) -> None:
    server, notebook = lab
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    screenshot = SCREENSHOT_DIR / "confusion_inspector.png"
    page_shot = SCREENSHOT_DIR / "jupyterlab_03_compare.png"
    with lab_page(server, notebook, "failure.png") as (page, details):
        _wait_until(page, lambda: server.kernel_states() == ["idle"], 120, "the kernel to start", details)
        run_all_cells(page)
        _wait_until(page, lambda: page.locator(".fer-cm-cell").count() == 49, 300,
                    "the ConfusionInspector's 49 matrix cells", details)
        _wait_until(page, lambda: server.kernel_states() == ["idle"], 120, "all cells to finish", details)
        assert page.locator(".fer-confusion-inspector .fer-notice-error").count() == 0, details()

        cell = page.locator(".fer-cm-cell:not(.fer-cm-empty)").first
        label = cell.inner_text()
        cell.scroll_into_view_if_needed()
        cell.click()
        _wait_until(page, lambda: page.locator(".fer-image-grid img").count() >= 1, 180,
                    "the clicked cell's images in .fer-image-grid", details)
        _wait_until(page, lambda: server.kernel_states() == ["idle"], 60, "the click to be handled", details)
        images = page.locator(".fer-image-grid img")
        n_images = images.count()
        assert 1 <= n_images <= 24 and n_images <= int(label), (n_images, label)
        assert page.locator(".fer-image-grid .fer-caption").count() == n_images
        assert page.locator(".fer-cm-selected").count() == 1
        page.wait_for_function("() => [...document.querySelectorAll('.fer-image-grid img')]"
                               ".every(img => img.complete && img.naturalWidth > 0)", timeout=30_000)

        inspector = page.locator(".fer-confusion-inspector").first
        inspector.scroll_into_view_if_needed()
        inspector.screenshot(path=str(screenshot))
        page.screenshot(path=str(page_shot))
    assert screenshot.is_file() and screenshot.stat().st_size > 10_000
    with capsys.disabled():
        print(f"\nConfusionInspector screenshot ({n_images} images of a cell with {label}): {screenshot}"
              f"\nJupyterLab page screenshot: {page_shot}")


def test_predict_upload_in_jupyterlab(lab: tuple[Lab, str], capsys: pytest.CaptureFixture[str]) -> None:
    """04_predict in JupyterLab: run all cells (the sample photo's result appears), then upload a photo through the
    PredictView's FileUpload and see its annotated copy and its face's probability chart."""
    skimage_data = pytest.importorskip("skimage.data", reason="scikit-image ships the sample photo")
    photo = Path(skimage_data.__file__).parent / "astronaut.png"
    assert photo.is_file()
    server, _ = lab
    notebook = PREDICT_NOTEBOOK.name
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    screenshot = SCREENSHOT_DIR / "predict_view.png"

    def idle() -> bool:
        return server.notebook_kernel_state(notebook) == "idle"

    with lab_page(server, notebook, "predict_failure.png") as (page, details):
        _wait_until(page, idle, 120, "the notebook's kernel to start", details)
        run_all_cells(page)
        _wait_until(page, lambda: page.locator(".fer-predict-upload").count() == 1, 180,
                    "the PredictView's upload button", details)
        _wait_until(page, idle, 120, "all cells to finish", details)
        # the headless part: the sample photo, annotated, and its face's chart
        assert page.locator(".jp-OutputArea-output img").count() >= 2, details()
        assert page.locator(".fer-predict-view .fer-notice-error").count() == 0, details()

        upload = page.locator(".fer-predict-upload")
        upload.scroll_into_view_if_needed()
        with page.expect_file_chooser() as chooser:
            upload.click()
        chooser.value.set_files(str(photo))
        _wait_until(page, lambda: page.locator(".fer-predict-results img.fer-predict-chart").count() == 1, 120,
                    "the uploaded photo's face chart", details)
        _wait_until(page, idle, 60, "the upload to be handled", details)
        assert page.locator(".fer-predict-results img.fer-predict-photo").count() == 1
        message = page.locator(".fer-predict-view .fer-message").inner_text()
        assert "1 photo, 1 face" in message, message
        page.wait_for_function("() => [...document.querySelectorAll('.fer-predict-results img')]"
                               ".every(img => img.complete && img.naturalWidth > 0)", timeout=30_000)
        view = page.locator(".fer-predict-view").first
        view.scroll_into_view_if_needed()
        view.screenshot(path=str(screenshot))
    assert screenshot.is_file() and screenshot.stat().st_size > 10_000
    with capsys.disabled():
        print(f"\nPredictView screenshot after an upload: {screenshot}")
