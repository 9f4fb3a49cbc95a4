"""The event loop a node (and ``meshserve up``) runs on.

A node is one Python gRPC hop in front of its runtime, and every request
costs a few turns of the event loop on each side of that hop. uvloop's loop
(libuv, in C) makes those turns cheaper than asyncio's own: on the overhead
scenario's echo server, about 40 µs less per call on 2 cores
(``load_tests/README.md``, "The hop"). grpc.aio runs on it unchanged (its
poller hands completions to whatever loop is running).

``MESHSERVE_EVENT_LOOP=asyncio`` runs on asyncio's loop instead (to rule
uvloop out when chasing a problem); the default, ``uvloop``, falls back to
asyncio's loop when uvloop is not installed.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

from mesh.core import errors

T = TypeVar("T")

VARIABLE = "MESHSERVE_EVENT_LOOP"
CHOICES = ("uvloop", "asyncio")


def chosen(environ: dict[str, str] | os._Environ[str] = os.environ) -> str:
    """The loop ``MESHSERVE_EVENT_LOOP`` asks for (``uvloop`` by default)."""
    value = environ.get(VARIABLE, "").strip().lower() or "uvloop"
    if value not in CHOICES:
        raise errors.ConfigError(f"{VARIABLE} must be one of {', '.join(CHOICES)}, not {value!r}")
    return value


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)``, on the chosen loop."""
    if chosen() == "uvloop":
        try:
            import uvloop  # noqa: PLC0415 - optional: the loop falls back without it
        except ImportError:
            pass
        else:
            return uvloop.run(main)
    return asyncio.run(main)
