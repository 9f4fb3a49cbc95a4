"""A wake-up for tests that wait on what a node's parts do, not on a clock.

The leader and membership tests wrap a store or a listener so that every
call fires a :class:`Signal`; the test then waits :meth:`Signal.until` a
condition holds. Built on the node's own :class:`ChangeSignal`, so a fire
between a check and the wait is never missed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from mesh.node import local_copies

WAIT = 30.0
"""The longest any condition is waited for: a bound for a broken test, not a
timing the test relies on."""


class Signal:
    """Wakes its waiters whenever something happened; they re-check."""

    def __init__(self) -> None:
        self._change = local_copies.ChangeSignal()

    def fire(self) -> None:
        self._change.fire()

    async def until(self, predicate: Callable[[], bool]) -> None:
        async with asyncio.timeout(WAIT):
            while True:
                fired = self._change.armed()
                if predicate():
                    return
                await fired.wait()
