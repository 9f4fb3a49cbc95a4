"""A node's shutdown, step by step, where no step can hold up the others.

A node stops its parts in the reverse order of starting them (servers,
cluster tasks, cache, runtime, store). A part whose stop never returns (a
library waiting on a connection that will not close) would leave the node
half-stopped until the orchestrator kills it, with its runtime process
still running. :class:`StopSteps` gives each step a time limit: a step
past it is logged as an error with where it waits (the chain of
coroutines it awaits), recorded in :attr:`StopSteps.overruns`, left running,
and the next step starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)


def await_chain(task: asyncio.Task[Any]) -> str:
    """Where ``task`` waits: its coroutine and each one it awaits, down to
    what the innermost one awaits (asyncio's own printer shows only the
    outermost frame of a suspended task)."""
    out: list[str] = []
    awaited: Any = task.get_coro()
    while awaited is not None and len(out) < 50:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
        if frame is None:
            out.append(repr(awaited)[:200])
            break
        out.append(f"{frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}")
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    return " -> ".join(out)


class StopSteps(contextlib.AsyncExitStack):
    """An async exit stack whose callbacks each get ``limit_s`` seconds."""

    def __init__(self, limit_s: float) -> None:
        super().__init__()
        self.limit_s = limit_s
        self.overruns: list[str] = []
        """One line per step that ran past its limit: the step and where it waits."""

    def push_async_callback(  # type: ignore[override]
        self, callback: Callable[[], Awaitable[Any]], /
    ) -> Callable[[], Awaitable[Any]]:
        super().push_async_callback(self._bounded, callback)
        return callback

    async def _bounded(self, callback: Callable[[], Awaitable[Any]]) -> None:
        name = getattr(callback, "__qualname__", repr(callback))
        task = asyncio.ensure_future(callback())
        done, _ = await asyncio.wait({task}, timeout=self.limit_s)
        if task in done:
            task.result()
            return
        line = f"{name} did not stop within {self.limit_s:g} s; waits at {await_chain(task)}"
        log.error("stopping the node: %s; going on with the next step", line)
        self.overruns.append(line)
