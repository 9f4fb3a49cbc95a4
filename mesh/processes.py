"""Child processes that never outlive their parent.

``meshserve up`` starts etcd and runtime processes; tests start them as
fixtures. Each child runs in its own process group (runtimes spawn workers of
their own) and is told by the kernel to die with SIGTERM if its parent dies
without cleaning up (``PR_SET_PDEATHSIG`` on Linux), so a crash or a
``kill -9`` of the parent leaves no orphan. :meth:`ChildProcess.stop` sends
SIGTERM to the whole group, waits, then SIGKILLs what is left.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence

_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl: Callable[..., int] = ctypes.CDLL("libc.so.6", use_errno=True).prctl
        return prctl
    except (OSError, AttributeError):
        return None


# Resolved in the parent, so the child does no dynamic loading between fork
# and exec (the parent has threads: gRPC's).
_PRCTL = _load_prctl()


def _die_with_parent() -> None:  # runs in the child between fork and exec
    os.setsid()
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def port_open(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


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
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - only setsid and prctl
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
            if port_open(host, port):
                return
            time.sleep(0.05)
        raise RuntimeError(
            f"{self.name} did not listen on {host}:{port} within {timeout:.0f} s; "
            f"its log ({self.log_path}) ends:\n{self.log_tail()}"
        )
