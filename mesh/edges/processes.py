"""Child processes that never outlive their parent.

``meshserve up`` starts etcd and runtime processes; tests start them as
fixtures. Each child runs in its own process group (runtimes spawn workers of
their own) and is told by the kernel to die with SIGTERM if its parent dies
without cleaning up (``PR_SET_PDEATHSIG`` on Linux), so a crash or a
``kill -9`` of the parent leaves no orphan. (The kernel ties that signal to
the *thread* that started the child: start children from a thread that lives
as long as they should, not from a short-lived worker thread.) :meth:`ChildProcess.stop` sends
SIGTERM to the whole group, waits, then SIGKILLs what is left.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence

from mesh.edges import ports

# The child is started through this tiny launcher, which asks the kernel to
# SIGTERM it when its parent dies, then becomes the real program (exec keeps
# the setting). Done in a fresh single-threaded interpreter, not in a
# ``preexec_fn``: between fork and exec of a process that has threads (gRPC's),
# calling into libc can deadlock or crash the child, and it did. If the parent
# is already gone when the launcher runs, it exits at once.
_LAUNCHER = """\
import ctypes, os, signal, sys
if sys.platform.startswith("linux"):
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != int(sys.argv[1]):
        sys.exit(143)
os.execvp(sys.argv[2], sys.argv[2:])
"""


class ChildProcess:
    """One child process (and its process group), its output in a log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: pathlib.Path,
        env: Mapping[str, str] | None = None,
        cwd: pathlib.Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-S", "-c", _LAUNCHER, str(os.getpid()), *self.argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,  # its own process group, for stop()
            )

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc else None

    def log_tail(self, lines: int = 20) -> str:
        """The last lines the process wrote, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, wait up to ``timeout``, then SIGKILL it."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        # Workers the runtime left behind in its group go too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    def wait_for_port(self, host: str, port: int, timeout: float) -> None:
        """Block until ``host:port`` accepts connections; raise if the process
        exits first or the time runs out, with the end of its log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                raise RuntimeError(
                    f"{self.name} exited with {self.returncode()} before listening on "
                    f"{host}:{port}; its log ({self.log_path}) ends:\n{self.log_tail()}"
                )
            if ports.port_open(host, port):
                return
            time.sleep(0.05)
        raise RuntimeError(
            f"{self.name} did not listen on {host}:{port} within {timeout:.0f} s; "
            f"its log ({self.log_path}) ends:\n{self.log_tail()}"
        )
