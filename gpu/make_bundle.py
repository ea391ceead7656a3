"""Build the offline GPU bundle: what a GPU machine without network needs to run the study (`make gpu-bundle`).

    python gpu/make_bundle.py [--out gpu/bundle] [--data DIR] [--python-version 3.12] [--platform TAG ...]
                              [--target-packages gpu/target-packages.txt] [--max-part-mib 60]
                              [--lock requirements/lock.txt]

The bundle folder holds
  run.sh                the offline entry point (a copy of gpu/run.sh): `bash <bundle>/run.sh --help`
  wheels/               wheels, for the target interpreter, of every package the project needs that the target lacks
  project.tar.gz        this checkout's files (tracked and untracked-not-ignored) and the commit they come from
  data/fer2013.npz      FER2013 from --data, $FER2013_DIR or ../shared/fer2013, as one compressed data bundle that
                        fer_lib.core.data reads directly (splits as in the source); absent when no FER2013 is found
  bundle.json           what is inside: versions, sizes, target, the packages expected on the target, the lock
  lock-pins.txt         the lock's pins for the target (name==version), the constraints of the resolution below
It prints its size. Everything must travel in parts of at most --max-part-mib: one part when it fits, else two
(code + wheels, then data) to be sent one after the other; a part that alone is too big is an error.

The wheels: pip resolves the project's runtime requirements for the target interpreter and platform (a dry run, no
install) under the lock's versions (requirements/lock.txt, whose markers are evaluated for the target: its CPython,
linux, its machine; passed to pip as constraints), then downloads exactly the resolved distributions that the target
does not already have (the committed list gpu/target-packages.txt) and that a headless run never imports
(gpu/not-needed.txt), one version of each. So every version in the bundle is the lock's, and a resolution that needs
a package the lock lacks for the target is an error (run `make lock`).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
LOCK = PROJECT / "requirements" / "lock.txt"
MIB = 1024 * 1024
DEFAULT_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_26_x86_64",
                     "manylinux_2_24_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux2010_x86_64",
                     "manylinux_2_12_x86_64", "manylinux1_x86_64", "manylinux_2_5_x86_64", "linux_x86_64")


class BundleError(Exception):
    """Something the user must fix (a part too big, pip failing, a missing file); printed as one line."""


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_names(path: Path) -> set[str]:
    """Distribution names of a list file: one per line; '#' starts a comment."""
    if not path.is_file():
        raise BundleError(f"package list '{path}' does not exist")
    return {canonical(line.split("#", 1)[0].strip()) for line in path.read_text().splitlines()
            if line.split("#", 1)[0].strip()}


def project_requirements() -> list[str]:
    """The project's runtime requirements (pyproject's dependencies): what a run of the study imports."""
    return list(tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]["dependencies"])


def pip_target_options(python_version: str, platforms: list[str]) -> list[str]:
    options = ["--only-binary=:all:", "--python-version", python_version, "--implementation", "cp"]
    for platform in platforms:
        options += ["--platform", platform]
    return options


def run_pip(arguments: list[str]) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", *arguments, "--disable-pip-version-check"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip() and "is ignored" not in line]
        hint = (" (an old pip checks Requires-Python against its own interpreter, not the target's: make install "
                "installs the lock's pip)" if "requires a different Python" in done.stderr else "")
        raise BundleError(f"pip {arguments[0]} failed: {' '.join(lines[-5:])}{hint}")


def target_environment(python_version: str, platforms: list[str]) -> dict[str, str]:
    """The marker variables of the target: CPython ``python_version`` (X.Y means X.Y.0, as for pip) on linux, with
    the machine of its platform tags."""
    if not re.fullmatch(r"3\.\d+(\.\d+)?", python_version):
        raise BundleError(f"--python-version must be 3.X or 3.X.Y, not '{python_version}'")
    full = python_version if python_version.count(".") == 2 else f"{python_version}.0"
    machine = re.search(r"(x86_64|aarch64|ppc64le|s390x|armv7l|i686)$", platforms[0])
    if machine is None or not platforms[0].startswith(("manylinux", "musllinux", "linux")):
        raise BundleError(f"the target's platform '{platforms[0]}' is not a linux wheel tag (e.g. manylinux_2_28_x86_64)")
    return {"python_version": ".".join(full.split(".")[:2]), "python_full_version": full, "sys_platform": "linux",
            "platform_system": "Linux", "platform_machine": machine.group(1), "os_name": "posix",
            "implementation_name": "cpython", "platform_python_implementation": "CPython"}


def lock_pins_for(lock_file: Path, environment: dict[str, str]) -> dict[str, str]:
    """Canonical name -> version of the lock's entries whose marker holds on the target (fer_lib.app.lock reads it)."""
    if not lock_file.is_file():
        raise BundleError(f"no lock at '{lock_file}': the bundle takes its versions from it (make lock)")
    sys.path.insert(0, str(PROJECT))
    from fer_lib.app.lock import LockError, lock_pins

    try:
        return lock_pins(lock_file, environment)
    except LockError as error:
        raise BundleError(str(error)) from None


def resolve(requirements: list[str], python_version: str, platforms: list[str],
            constraints: Path | None = None) -> list[tuple[str, str]]:
    """(name, version) of every distribution pip resolves for ``requirements`` on the target (a dry run), under
    the pins of ``constraints`` when given."""
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "report.json"
        run_pip(["install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report),
                 "--target", str(Path(folder) / "target"), *pip_target_options(python_version, platforms),
                 *(["--constraint", str(constraints)] if constraints else []), *requirements])
        installs = json.loads(report.read_text())["install"]
    return sorted((item["metadata"]["name"], item["metadata"]["version"]) for item in installs)


def download_wheels(pins: list[str], folder: Path, python_version: str, platforms: list[str]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    if pins:
        run_pip(["download", "--no-deps", "--quiet", "--dest", str(folder),
                 *pip_target_options(python_version, platforms), *pins])
    return sorted(folder.glob("*.whl"))


def project_files(root: Path) -> list[Path]:
    """The checkout's files as git sees them: tracked plus untracked-not-ignored (so local edits travel too)."""
    done = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                          capture_output=True)
    if done.returncode != 0:
        raise BundleError(f"'{root}' is not a git checkout (git ls-files failed); the bundle packs the checkout")
    names = sorted({name for name in done.stdout.decode().split("\0") if name})
    return [root / name for name in names if (root / name).is_file()]


def git_source(root: Path) -> dict[str, object]:
    def git(*arguments: str) -> str | None:
        done = subprocess.run(["git", "-C", str(root), *arguments], capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(status) if status is not None else None,
            "bundled": _dt.datetime.now().astimezone().isoformat(timespec="seconds")}


def pack_project(root: Path, destination: Path) -> None:
    """project.tar.gz: the checkout's files plus the commit they come from (the copy there has no .git)."""
    sys.path.insert(0, str(root))
    from fer_lib.app.provenance import SOURCE_INFO_FILE

    with tempfile.TemporaryDirectory() as folder:
        info = Path(folder) / SOURCE_INFO_FILE
        info.write_text(json.dumps(git_source(root), indent=2) + "\n")
        with tarfile.open(destination, "w:gz") as archive:
            for file in project_files(root):
                relative = file.relative_to(root)
                if relative.parts[0] == "gpu" and len(relative.parts) > 1 and relative.parts[1] == "bundle":
                    continue
                archive.add(file, arcname=str(Path("project") / relative))
            archive.add(info, arcname=str(Path("project") / SOURCE_INFO_FILE))


def find_data(explicit: str | None) -> Path | None:
    """FER2013 from --data, $FER2013_DIR or ../shared/fer2013 (beside the checkout); None when none exists."""
    for candidate in (explicit, os.environ.get("FER2013_DIR"), str(PROJECT.parent / "shared" / "fer2013")):
        if candidate:
            path = Path(candidate).expanduser()
            if path.exists():
                return path
            if candidate == explicit:
                raise BundleError(f"--data '{path}' does not exist")
    return None


def plan_parts(code_mib: float, data_mib: float, max_part_mib: float) -> list[dict[str, object]]:
    """How the bundle travels: one part when it fits one transfer, else code then data; a part too big is an error."""
    if code_mib + data_mib <= max_part_mib:
        return [{"name": "all", "mib": round(code_mib + data_mib, 2), "paths": ["."]}]
    for name, mib in (("code", code_mib), ("data", data_mib)):
        if mib > max_part_mib:
            remedy = "bundle a smaller data set (--data)" if name == "data" else "list more packages as not needed"
            raise BundleError(f"the {name} part of the bundle is {mib:.1f} MiB, over the {max_part_mib:g} MiB that "
                              f"one transfer may carry; {remedy}")
    return [{"name": "code", "mib": round(code_mib, 2), "paths": ["run.sh", "wheels", "project.tar.gz"]},
            {"name": "data", "mib": round(data_mib, 2), "paths": ["data"]}]


def size_mib(paths: list[Path]) -> float:
    return sum(path.stat().st_size for path in paths) / MIB


def check_locked(resolved: list[tuple[str, str]], pins: dict[str, str], where: str) -> None:
    """Every resolved distribution is the lock's version; one the lock lacks for the target is an error."""
    unlocked = [f"{name}=={version}" for name, version in resolved if canonical(name) not in pins]
    if unlocked:
        raise BundleError(f"the resolution for {where} needs {', '.join(unlocked)}, which the lock lacks for it: "
                          f"run make lock (and commit requirements/lock.txt)")
    moved = [f"{name} {version} (locked {pins[canonical(name)]})" for name, version in resolved
             if pins[canonical(name)] != version]
    if moved:
        raise BundleError(f"the resolution for {where} left the lock's versions: {', '.join(moved)}")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def relative(path: Path) -> str:
    return str(path.relative_to(PROJECT) if path.is_relative_to(PROJECT) else path)


def build(out: Path, *, data: str | None, python_version: str, platforms: list[str], target_packages: Path,
          not_needed: Path, max_part_mib: float, no_data: bool = False, lock_file: Path = LOCK) -> dict[str, object]:
    lock_file = lock_file.resolve()
    environment = target_environment(python_version, platforms)
    where = f"CPython {environment['python_full_version']} on linux {environment['platform_machine']}"
    pins = lock_pins_for(lock_file, environment)
    if out.exists():
        shutil.rmtree(out)
    (out / "wheels").mkdir(parents=True)
    target, skipped = read_names(target_packages), read_names(not_needed)
    constraints = out / "lock-pins.txt"
    constraints.write_text(f"# {relative(lock_file)} (sha256 {sha256(lock_file)}) for {where}\n"
                           + "".join(f"{name}=={version}\n" for name, version in sorted(pins.items())))

    print(f"==> resolving the project's requirements for CPython {python_version} ({platforms[0]}, ...) with the "
          f"versions of {relative(lock_file)} ({len(pins)} pins there)", flush=True)
    wanted = [r for r in project_requirements()  # a requirement a headless run never imports is not even resolved
              if canonical(re.match(r"[A-Za-z0-9._-]+", r).group(0)) not in skipped]
    resolved = resolve(wanted, python_version, platforms, constraints)
    check_locked(resolved, pins, where)
    bundled = [(name, version) for name, version in resolved if canonical(name) not in target | skipped]
    expected = [(name, version) for name, version in resolved if canonical(name) in target]
    left_out = [(name, version) for name, version in resolved if canonical(name) in skipped - target]
    print(f"    {len(resolved)} distributions: {len(bundled)} to bundle, {len(expected)} already on the target, "
          f"{len(left_out)} not needed offline ({', '.join(name for name, _ in left_out) or 'none'})", flush=True)
    wheels = download_wheels([f"{name}=={version}" for name, version in bundled], out / "wheels", python_version,
                             platforms)
    if len(wheels) != len(bundled):
        raise BundleError(f"expected {len(bundled)} wheels, pip downloaded {len(wheels)}")

    print("==> packing the project", flush=True)
    pack_project(PROJECT, out / "project.tar.gz")
    shutil.copy2(PROJECT / "gpu" / "run.sh", out / "run.sh")

    source = None if no_data else find_data(data)
    data_file = None
    if source is not None:
        print(f"==> packing FER2013 from {source}", flush=True)
        sys.path.insert(0, str(PROJECT))
        from fer_lib.core.data import write_bundle

        data_file = write_bundle(source, out / "data" / "fer2013.npz")
    else:
        print("    no FER2013 found (--data, FER2013_DIR, ../shared/fer2013): the bundle holds no data, and a run "
              "there uses the SYNTHETIC demo faces", flush=True)

    code = [*wheels, out / "project.tar.gz", out / "run.sh"]
    parts = {"code": size_mib(code), "data": size_mib([data_file]) if data_file else 0.0}
    manifest: dict[str, object] = {
        "created": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "target": {"python_version": python_version, "platforms": platforms,
                   "target_packages": relative(target_packages)},
        "lock": {"file": relative(lock_file), "sha256": sha256(lock_file), "pins_for_target": constraints.name},
        "wheels": [path.name for path in wheels],
        "expected_on_target": [f"{name}=={version}" for name, version in expected],
        "not_needed_offline": [f"{name}=={version}" for name, version in left_out],
        "data": None if data_file is None else {"file": str(data_file.relative_to(out)), "source": str(source),
                                                "sha256": hashlib.sha256(data_file.read_bytes()).hexdigest()},
        "sizes_mib": {"wheels": round(size_mib(wheels), 2), "project": round(size_mib([out / "project.tar.gz"]), 2),
                      "data": round(parts["data"], 2), "total": round(parts["code"] + parts["data"], 2)},
    }
    manifest["parts"] = plan_parts(parts["code"], parts["data"], max_part_mib)
    (out / "bundle.json").write_text(json.dumps(manifest, indent=2) + "\n")
    (out / "expected-on-target.txt").write_text("\n".join(manifest["expected_on_target"]) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=PROJECT / "gpu" / "bundle")
    parser.add_argument("--data", help="FER2013 (csv or folder layout); default $FER2013_DIR, else ../shared/fer2013")
    parser.add_argument("--no-data", action="store_true", help="bundle no data (the run there uses synthetic faces)")
    parser.add_argument("--python-version", default="3.12", help="the target's Python (default 3.12, our GPU machine)")
    parser.add_argument("--platform", dest="platforms", action="append",
                        help=f"wheel platform tag(s) of the target (default: {DEFAULT_PLATFORMS[0]} and older)")
    parser.add_argument("--target-packages", type=Path,
                        default=Path(os.environ.get("TARGET_PACKAGES", PROJECT / "gpu" / "target-packages.txt")))
    parser.add_argument("--not-needed", type=Path, default=PROJECT / "gpu" / "not-needed.txt")
    parser.add_argument("--max-part-mib", type=float, default=60.0)
    parser.add_argument("--lock", type=Path, default=LOCK, help="the versions to bundle (default requirements/lock.txt)")
    args = parser.parse_args(argv)
    try:
        manifest = build(args.out, data=args.data, python_version=args.python_version,
                         platforms=args.platforms or list(DEFAULT_PLATFORMS), target_packages=args.target_packages,
                         not_needed=args.not_needed, max_part_mib=args.max_part_mib, no_data=args.no_data,
                         lock_file=args.lock)
    except BundleError as error:
        print(f"make_bundle: error: {error}", file=sys.stderr)
        return 2
    sizes = manifest["sizes_mib"]
    print(f"==> bundle {args.out}: {sizes['total']:.1f} MiB (wheels {sizes['wheels']:.1f}, project "
          f"{sizes['project']:.1f}, data {sizes['data']:.1f})")
    parts = manifest["parts"]
    if len(parts) == 1:
        print(f"    one part of {parts[0]['mib']:.1f} MiB (at most {args.max_part_mib:g}): send the folder in one transfer")
    else:
        print("    two parts, to be sent one after the other: " + "; ".join(
            f"{part['name']} {part['mib']:.1f} MiB ({', '.join(part['paths'])})" for part in parts))
    print(f"    run there: bash {args.out}/run.sh --out OUT_DIR   (see its --help)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
