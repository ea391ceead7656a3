"""Whether the running environment has the committed lock's exact versions (requirements/lock.txt, written by
`make lock` with uv as one universal resolution with environment markers). Only the standard library and
``packaging``, no Keras, so asking costs nothing; ``lock_pins()`` reads the lock for another environment too."""

from __future__ import annotations

import hashlib
import importlib.metadata
from pathlib import Path
from typing import Any

from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

PROJECT_ROOT = Path(__file__).resolve().parents[2]
LOCK_FILE = Path("requirements") / "lock.txt"  # relative to the checkout


class LockError(ValueError):
    """The lock file cannot be read as pins (a line that is no requirement, two pins of one name that both apply)."""


def default_lock_file() -> Path | None:
    """The checkout's lock beside fer_lib, or None (an installed copy of fer_lib without the repository)."""
    candidate = PROJECT_ROOT / LOCK_FILE
    return candidate if candidate.is_file() else None


def read_lock(lock_file: Path) -> list[Requirement]:
    """Every entry of a pip-style lock: ``name==version [; marker]`` lines; comments, ``# via`` lines, options
    (``--hash=...``, ``--index-url ...``) and line continuations are skipped."""
    text = Path(lock_file).read_text().replace("\\\n", " ")
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split(" #", 1)[0].strip() if not line.lstrip().startswith("#") else ""
        line = " ".join(word for word in line.split() if not word.startswith("--hash"))
        if not line or line.startswith("-"):
            continue
        try:
            entries.append(Requirement(line))
        except InvalidRequirement as error:
            raise LockError(f"{lock_file}:{number}: not a requirement: {line!r} ({error})") from None
    return entries


def lock_pins(lock_file: Path, environment: dict[str, str] | None = None) -> dict[str, str]:
    """Canonical name -> locked version of the entries whose marker holds in ``environment`` (marker variables; a
    partial dict updates ``packaging.markers.default_environment()``, this interpreter's, which is the default)."""
    values = {**default_environment(), **(environment or {})}
    pins: dict[str, str] = {}
    for entry in read_lock(lock_file):
        if entry.marker is not None and not entry.marker.evaluate(values):
            continue
        exact = [spec for spec in entry.specifier if spec.operator in ("==", "===")]
        if len(exact) != 1 or "*" in exact[0].version:
            raise LockError(f"{lock_file}: '{entry}' is not an exact pin (name==version)")
        name = canonicalize_name(entry.name)
        if name in pins and pins[name] != exact[0].version:
            raise LockError(f"{lock_file}: two pins of {name} apply to one environment: {pins[name]} and "
                            f"{exact[0].version}")
        pins[name] = exact[0].version
    return pins


def installed_versions() -> dict[str, str]:
    """Canonical name -> version of every distribution importable here (the first on sys.path wins, as in import)."""
    versions: dict[str, str] = {}
    for distribution in importlib.metadata.distributions():
        name = distribution.metadata["Name"] if distribution.metadata else None
        if name:
            versions.setdefault(canonicalize_name(name), distribution.version)
    return versions


def same_version(locked: str, installed: str) -> bool:
    """PEP 440 equality: 2.0 == 2.0.0, and a local build (1.2.3+cpu) counts as its release."""
    try:
        have, want = Version(installed), Version(locked)
    except InvalidVersion:
        return installed == locked
    return have == want if want.local else Version(have.public) == want


def lock_status(lock_file: Path | None = None) -> dict[str, Any] | None:
    """Whether this environment has the lock's versions: the applying pins ``missing`` here or ``different``
    (``{"name", "locked", "installed"}``); packages beyond the lock are not looked at. None when no ``lock_file`` is
    given and the checkout has none (an installed copy); a given ``lock_file`` that is absent is a FileNotFoundError."""
    shown = str(LOCK_FILE if lock_file is None else Path(lock_file))
    lock_file = default_lock_file() if lock_file is None else Path(lock_file)
    if lock_file is None:
        return None
    pins = lock_pins(lock_file)
    installed = installed_versions()
    missing = sorted(name for name in pins if name not in installed)
    different = [{"name": name, "locked": version, "installed": installed[name]}
                 for name, version in sorted(pins.items())
                 if name in installed and not same_version(version, installed[name])]
    return {"lock": shown, "sha256": hashlib.sha256(lock_file.read_bytes()).hexdigest(),
            "matches": not missing and not different, "missing": missing, "different": different, "checked": len(pins)}
