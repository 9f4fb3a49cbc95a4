"""`make demo` is what a new user runs first: it must work end to end."""

from __future__ import annotations

import pathlib
import subprocess
import sys

from mesh.edges import ports


def test_demo_serves_three_models_with_sklearns_answers_and_stops_cleanly(
    tmp_path: pathlib.Path,
) -> None:
    port = ports.free_port()
    done = subprocess.run(
        [sys.executable, "-m", "meshserve.cli", "demo", "--grpc-port", str(port),
         "--data-dir", str(tmp_path / "demo")],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("matches scikit-learn") == 3
    assert "no process left behind" in done.stdout
    # The node table agrees with the placement table: one node holding all three.
    lines = done.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.strip().startswith("NODE "))
    column = lines[header].index("MODELS")
    assert lines[header + 1][column:].split()[0] == "3", done.stdout
    assert done.stdout.rstrip().endswith("demo OK")
