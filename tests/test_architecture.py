"""The layers of fer_lib hold (docs/CONTRACTS.md): the helper library at the bottom, analysis and views above it,
the study application on top; no import circle; validating and supervising a run starts no Keras backend."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

REPO_ROOT = Path(__file__).resolve().parent.parent
BACKENDS = ("keras", "tensorflow", "jax")


def loaded_backends(code: str) -> list[str]:
    """The backends a fresh interpreter has imported after running ``code``."""
    done = subprocess.run([sys.executable, "-c", f"{code}\nimport sys\nprint(sorted(set({BACKENDS!r}) & "
                                                 f"set(sys.modules)))"],
                          capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr
    return eval(done.stdout.strip().splitlines()[-1])  # noqa: S307 - a list of names this test printed


def test_import_linter_contracts_are_kept() -> None:
    done = subprocess.run([str(Path(sys.executable).parent / "lint-imports")], capture_output=True, text=True,
                          timeout=120, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "0 broken" in done.stdout


def test_no_import_circle_not_even_through_an_import_inside_a_function() -> None:
    graph = grimp.build_graph("fer_lib")  # function-level imports count too
    circles = [(a, b) for a in sorted(graph.modules) for b in graph.find_modules_directly_imported_by(a)
               if graph.chain_exists(importer=b, imported=a)]
    assert circles == []


def test_run_help_and_the_up_front_validation_import_no_backend() -> None:
    assert loaded_backends("from fer_lib.app import cli\ntry:\n    cli.main(['run', '--help'])\n"
                           "except SystemExit:\n    pass") == []
    assert loaded_backends("from fer_lib.app import runner\n"
                           "runner.prepare_run(['params/smoke.yaml'], ['synthetic_train=14', 'batch_size=7'])") == []
