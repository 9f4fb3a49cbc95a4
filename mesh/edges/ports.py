"""Free TCP ports for the servers a node or a test starts as child processes.

A runtime, an etcd or a storage emulator is told its port before it binds
it, so a port handed out here is free *now* and bound a second or two later.
Two things can take it in between: an outgoing connection (the kernel picks
its local port from the ephemeral range) and another process asking for a
free port at the same moment. Against the second, every port handed out is
reserved for a while by a file in a folder all processes of this user share
(created exclusively: two processes cannot reserve one port). Against the
first, ``MESHSERVE_PORT_RANGE=LOW-HIGH`` confines the ports handed out to a
range below the kernel's ephemeral range
(``/proc/sys/net/ipv4/ip_local_port_range``); each process walks it from its
own starting point. Unset, the kernel picks a port (port 0).
"""

from __future__ import annotations

import os
import pathlib
import socket
import tempfile
import threading
import time

RANGE_VARIABLE = "MESHSERVE_PORT_RANGE"

RESERVED_SECONDS = 120.0
"""How long a port handed out stays reserved: far longer than a server
takes to bind it; after that a port that is still in use fails the bind test."""

_lock = threading.Lock()
_cursor: dict[tuple[int, int], int] = {}


def _reservations() -> pathlib.Path:
    folder = pathlib.Path(tempfile.gettempdir()) / f"meshserve-ports-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder


def _reserve(port: int) -> bool:
    """Reserve ``port`` for this process unless another holds a fresh reservation."""
    path = _reservations() / str(port)
    try:
        if time.time() - path.stat().st_mtime < RESERVED_SECONDS:
            return False
        path.unlink(missing_ok=True)  # a stale reservation
    except FileNotFoundError:
        pass
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        return False  # another process reserved it just now
    return True


def parse_range(text: str) -> tuple[int, int]:
    """``LOW-HIGH`` as two ports, LOW <= HIGH, both in 1..65535."""
    low_text, sep, high_text = text.partition("-")
    try:
        low, high = int(low_text), int(high_text)
    except ValueError:
        low = high = 0
    if not sep or not 0 < low <= high <= 65535:
        raise ValueError(f"{RANGE_VARIABLE}: {text!r} is not LOW-HIGH (ports, LOW <= HIGH)")
    return low, high


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def _kernel_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now and no meshserve process of this
    user was handed in the last two minutes (within ``MESHSERVE_PORT_RANGE``
    when it is set)."""
    text = os.environ.get(RANGE_VARIABLE, "").strip()
    with _lock:
        if not text:
            for _ in range(100):
                port = _kernel_port(host)
                if _reserve(port):
                    return port
            raise OSError("no free port: every port the kernel offered is reserved")
        low, high = parse_range(text)
        size = high - low + 1
        start = _cursor.get((low, high), low + (os.getpid() * 7919) % size)
        for offset in range(size):
            port = low + (start - low + offset) % size
            if _bindable(host, port) and _reserve(port):
                _cursor[(low, high)] = low + (port - low + 1) % size
                return port
    raise OSError(f"no free port left in {RANGE_VARIABLE}={text}")


def free_ports(n: int, host: str = "127.0.0.1") -> int:
    """A port ``p`` such that ``p`` .. ``p + n - 1`` are all free and now
    reserved for this process (``meshserve up --nodes N`` listens on
    consecutive ports)."""
    for _ in range(100):
        first = free_port(host)
        rest = range(first + 1, first + n)
        if first + n <= 65536 and all(_bindable(host, p) for p in rest):
            with _lock:
                taken = [p for p in rest if _reserve(p)]
            if len(taken) == n - 1:
                return first
    raise OSError(f"no {n} consecutive free ports")


def port_open(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0
