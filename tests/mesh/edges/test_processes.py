"""Child processes die with their parent, even one killed with SIGKILL."""

from __future__ import annotations

import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import psutil

from mesh.edges import processes


def test_stop_ends_the_child_and_its_process_group(tmp_path: pathlib.Path) -> None:
    script = "import subprocess, time; subprocess.Popen(['sleep', '60']); time.sleep(60)"
    child = processes.ChildProcess("sleeper", [sys.executable, "-c", script], tmp_path / "log")
    child.start()
    assert child.pid is not None
    deadline = time.monotonic() + 10
    while len(psutil.Process(child.pid).children()) < 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    group = [psutil.Process(child.pid), *psutil.Process(child.pid).children()]
    child.stop(timeout=5)
    assert not psutil.wait_procs(group, timeout=5)[1]


def test_children_die_when_their_parent_is_killed(tmp_path: pathlib.Path) -> None:
    pid_file = tmp_path / "child.pid"
    log = tmp_path / "log"
    parent_code = textwrap.dedent(
        f"""
        import pathlib, sys, time
        from mesh.edges import processes
        c = processes.ChildProcess("sleep", ["sleep", "60"], pathlib.Path({str(log)!r}))
        c.start()
        pathlib.Path({str(pid_file)!r}).write_text(str(c.pid))
        time.sleep(60)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code])
    deadline = time.monotonic() + 20
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline and parent.poll() is None
        time.sleep(0.05)
    child = psutil.Process(int(pid_file.read_text()))
    time.sleep(0.3)  # the launcher has exec'd sleep by now
    assert "sleep" in child.name()
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    _, alive = psutil.wait_procs([child], timeout=5)
    assert not alive, "the child outlived its SIGKILLed parent"
