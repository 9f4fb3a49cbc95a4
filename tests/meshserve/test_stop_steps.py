"""A node's stop, step by step: a step that never returns is named, with
where it waits, and does not keep the later steps from running."""

from __future__ import annotations

import asyncio

import pytest

from meshserve import stop_steps


async def test_a_step_that_never_stops_is_named_and_the_others_still_run() -> None:
    ran: list[str] = []
    never = asyncio.Event()

    async def runtime_stop() -> None:
        ran.append("runtime")

    async def hanging_server_stop() -> None:
        await never.wait()

    async def ops_stop() -> None:
        ran.append("ops")

    steps = stop_steps.StopSteps(limit_s=0.05)
    steps.push_async_callback(runtime_stop)
    steps.push_async_callback(hanging_server_stop)
    steps.push_async_callback(ops_stop)
    await steps.aclose()
    assert ran == ["ops", "runtime"]  # reverse order, past the hung step
    [line] = steps.overruns
    assert "hanging_server_stop did not stop within 0.05 s" in line
    assert "test_stop_steps.py" in line and " wait" in line  # where it waits
    never.set()


async def test_a_step_that_fails_still_raises_after_the_others_ran() -> None:
    ran: list[str] = []

    async def first() -> None:
        ran.append("first")

    async def broken() -> None:
        raise RuntimeError("cannot close")

    steps = stop_steps.StopSteps(limit_s=5.0)
    steps.push_async_callback(first)
    steps.push_async_callback(broken)
    with pytest.raises(RuntimeError, match="cannot close"):
        await steps.aclose()
    assert ran == ["first"] and steps.overruns == []
