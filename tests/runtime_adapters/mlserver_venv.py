"""Running a short script in MLServer's venv, beside meshserve's MLServer
classes: they import ``mlserver``, which the project's own venv does not
have (and cannot share a process with tritonclient)."""

from __future__ import annotations

import pathlib
import subprocess

from runtime_adapters import mlserver_formats

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
PYTHON = REPO_ROOT / ".runtimes" / "mlserver" / "bin" / "python"
CLASSES = mlserver_formats.BUNDLED_RUNTIMES_DIR


def run(script: str, *args: str) -> str:
    """``script``'s standard output (stripped); fails the test if it fails."""
    out = subprocess.run(
        [str(PYTHON), "-c", script, *args],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(CLASSES)},
    )
    return out.stdout.strip()
