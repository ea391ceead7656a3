"""Where a result came from (backend, device, versions, git commit), shared by the runner's manifest.json and the
benchmark's record. Nothing here imports Keras: asking which backend a run will get must not start one."""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import importlib.util
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

VERSIONED_PACKAGES = ("fer-study", "keras", "tensorflow", "tensorflow-cpu", "jax", "jaxlib", "numpy", "pandas",
                      "scikit-learn", "matplotlib", "papermill", "nbconvert", "ipykernel")
SOURCE_INFO_FILE = ".fer-study-source.json"  # written into a bundled copy of the project, which has no .git
BACKEND_MODULES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch", "numpy": "numpy"}


class BackendUnavailable(RuntimeError):
    """The Keras backend a run would use is not installed; the message says how to choose one that is."""


def keras_backend() -> str:
    """The Keras backend the notebooks get (they inherit this process's environment)."""
    if "keras" in sys.modules:
        return sys.modules["keras"].backend.backend()
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    try:
        config = json.loads((Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "keras.json").read_text())
        return str(config.get("backend", "tensorflow"))
    except (OSError, ValueError):
        return "tensorflow"


def device_info() -> dict[str, Any]:
    """CPU model and cores, plus the backend's devices: JAX's are asked in a short subprocess (no GPU memory is
    held by this process), TensorFlow's only if Keras has already imported it."""
    info: dict[str, Any] = {"cpu": _cpu_model(), "cpu_count": os.cpu_count()}
    backend = keras_backend()
    if backend == "jax":
        try:
            devices = jax_devices()
            info["devices"] = [f"{d['platform']}: {d['kind']}" for d in devices]
            info["device_names"] = [d["name"] for d in devices]
        except BackendUnavailable as error:
            info["devices"], info["error"] = [], str(error)
    elif backend == "tensorflow" and "tensorflow" in sys.modules:
        try:
            devices = sys.modules["tensorflow"].config.list_physical_devices()
            info["devices"] = [f"{d.device_type}: {d.name}" for d in devices]
        except Exception as error:  # noqa: BLE001 - the manifest notes it and the run goes on
            info["error"] = str(error)
    if gpus := _nvidia_gpus():
        info["nvidia_gpus"] = gpus
    accelerators = [d for d in info.get("devices", []) if not d.upper().startswith("CPU")]
    info["summary"] = (", ".join(accelerators) if accelerators
                       else f"CPU only ({info['cpu'] or 'unknown CPU'}, {info['cpu_count']} cores)")
    return info


_JAX_DEVICES = """
import json, jax
print(json.dumps([{"name": f"{d.platform}:{d.id}", "platform": d.platform, "kind": d.device_kind}
                  for d in jax.devices()]))
"""


@functools.cache
def jax_devices() -> tuple[dict[str, str], ...]:
    """This machine's JAX devices (name as keras.distribution.list_devices spells it, platform, kind), asked once
    in a subprocess, so that this process holds no GPU memory and the asking joins no multi-machine run."""
    env = {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false", "TF_CPP_MIN_LOG_LEVEL": "3"}
    try:
        done = subprocess.run([sys.executable, "-c", _JAX_DEVICES], capture_output=True, text=True, timeout=120,
                              env=env)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise BackendUnavailable(f"JAX did not list its devices: {error}") from None
    if done.returncode != 0:
        raise BackendUnavailable(f"JAX did not list its devices: {' '.join(done.stderr.split())[-300:]}")
    return tuple(json.loads(done.stdout.strip().splitlines()[-1]))


def distribution_plan(train: Any, processes: int | None = None) -> dict[str, Any]:
    """The distribution a run (``train``: its TrainConfig) will use, decided before any folder exists and with no
    backend here: JAX's devices (none on TensorFlow) times the launcher's processes (each machine assumed alike).
    A bad setting or a batch that does not divide by the devices is a ParamsError."""
    from fer_lib.core.config import launch_from_environment

    backend = keras_backend()
    launched, launcher = launch_from_environment()
    processes = launched if processes is None else processes
    plan: dict[str, Any] = {"setting": train.distribution, "backend": backend, "processes": processes}
    if backend != "jax" or (train.distribution == "none" and processes == 1):
        count = train.distribution_devices(1, 0, processes, backend=backend)
        local: tuple[dict[str, str], ...] = ()
    else:
        local = jax_devices()  # the default platform's, as keras.distribution.list_devices() lists them
        if launcher in ("slurm", "openmpi"):
            local = local[:1]  # JAX gives each process of these launchers one device
        accelerators = sum(1 for d in local if d["platform"] != "cpu")
        count = train.distribution_devices(len(local) * processes, accelerators * processes, processes)
    if count > 1:
        train.check_device_count(count)
    plan.update(kind="DataParallel" if count > 1 else None, devices=count,
                mesh={"shape": [count], "axis_names": ["batch"]} if count > 1 else None,
                device_names=[d["name"] for d in local[:count]] if processes == 1 and count > 1 else None,
                global_batch_size=train.batch_size, per_device_batch_size=train.batch_size // count)
    return plan


def _cpu_model() -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or None


def _output(*command: str) -> str | None:
    """A short command's stripped stdout; None when it is not installed, fails or takes over 20 s."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _nvidia_gpus() -> list[str]:
    listed = _output("nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader") or ""
    return [line.strip() for line in listed.splitlines() if line.strip()]


def visible_gpu_indices() -> list[str]:
    """The indices of the NVIDIA GPUs this process may use (``CUDA_VISIBLE_DEVICES`` when set, else nvidia-smi's
    list); [] without GPUs. For running sweep points side by side, one per GPU."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [index.strip() for index in visible.split(",") if index.strip() and index.strip() != "-1"]
    return [str(index) for index in range(len(_nvidia_gpus()))]


def package_versions() -> dict[str, str]:
    """The installed versions of the packages a result depends on (those not installed are left out)."""
    versions = {}
    for name in VERSIONED_PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    return versions


def git_info(root: Path) -> dict[str, Any]:
    """Commit of the project checkout and whether tracked files differ from it (None outside a git checkout)."""
    git = functools.partial(_output, "git", "-C", str(root))
    commit = git("rev-parse", "HEAD")
    if commit is None:  # a bundled copy of the project (no .git): the bundle recorded its commit
        try:
            return {**json.loads((Path(root) / SOURCE_INFO_FILE).read_text()), "from": SOURCE_INFO_FILE}
        except (OSError, ValueError):
            return {"commit": None, "dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    untracked = git("status", "--porcelain", "--untracked-files=normal")
    return {"commit": commit, "dirty": bool(status) if status is not None else None,
            "untracked_files": sum(1 for line in (untracked or "").splitlines() if line.startswith("??"))}


def check_backend() -> str:
    """The Keras backend a run gets, checked to be importable before Keras is (which would fail deep inside with a
    ModuleNotFoundError); the error says which backend was chosen, how, and what to do instead."""
    backend = keras_backend()
    how = "KERAS_BACKEND" if os.environ.get("KERAS_BACKEND") else "the default (KERAS_BACKEND is unset)"
    module = BACKEND_MODULES.get(backend)
    if module is None:
        raise BackendUnavailable(f"unknown Keras backend {backend!r} (from {how}); use one of "
                                 f"{', '.join(BACKEND_MODULES)}")
    if not _importable(module):
        installed = [name for name, mod in BACKEND_MODULES.items() if name != "numpy" and _importable(mod)]
        hint = (f"set KERAS_BACKEND={installed[0]} (installed here)" if installed
                else "install one: pip install 'fer-study[tf]' (CPU) or jax (GPU: jax[cuda12])")
        raise BackendUnavailable(f"the Keras backend {backend!r} ({how}) is not installed; {hint}")
    return backend


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
