"""Child processes die with their parent, even one killed with SIGKILL.

Where a process tells nothing, the tests poll what the kernel shows of it
(psutil), with a generous overall timeout; where it can, it says so on a
pipe, and the test reads that."""

from __future__ import annotations

import pathlib
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable

import psutil

from mesh.edges import processes

WAIT = 30.0
"""Seconds to wait for what must happen: generous, as a busy machine is
slow, not wrong."""


def until(predicate: Callable[[], bool], what: str) -> None:
    """Poll ``predicate`` (the kernel sends no event for it) until it holds."""
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, f"not within {WAIT:g} s: {what}"
        time.sleep(0.05)


def test_stop_ends_the_child_and_its_process_group(tmp_path: pathlib.Path) -> None:
    script = "import subprocess, time; subprocess.Popen(['sleep', '60']); time.sleep(60)"
    child = processes.ChildProcess("sleeper", [sys.executable, "-c", script], tmp_path / "log")
    child.start()
    assert child.pid is not None
    parent = psutil.Process(child.pid)
    until(lambda: len(parent.children()) >= 1, "the child started its own child")
    group = [parent, *parent.children()]
    child.stop(timeout=5)
    assert not psutil.wait_procs(group, timeout=WAIT)[1]


def test_children_die_when_their_parent_is_killed(tmp_path: pathlib.Path) -> None:
    log = tmp_path / "log"
    parent_code = textwrap.dedent(
        f"""
        import pathlib, sys, time
        from mesh.edges import processes
        c = processes.ChildProcess("sleep", ["sleep", "60"], pathlib.Path({str(log)!r}))
        c.start()
        print(c.pid, flush=True)
        time.sleep(60)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code], stdout=subprocess.PIPE)
    try:
        assert parent.stdout is not None
        line = parent.stdout.readline()  # empty if the parent died first
        assert line.strip(), "the parent did not start its child"
        child = psutil.Process(int(line))
        # Only once the launcher has become ``sleep`` does this show that the
        # death signal survives the exec.
        until(lambda: child.name() == "sleep", "the launcher exec'd sleep")
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        _, alive = psutil.wait_procs([child], timeout=WAIT)
        assert not alive, "the child outlived its SIGKILLed parent"
    finally:
        parent.kill()
        parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()
