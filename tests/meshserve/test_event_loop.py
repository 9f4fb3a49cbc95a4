"""The node's event loop: uvloop unless MESHSERVE_EVENT_LOOP says asyncio."""

from __future__ import annotations

import asyncio

import pytest

from mesh.core import errors
from meshserve import event_loop


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_a_node_runs_on_uvloop_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(event_loop.VARIABLE, raising=False)
    assert event_loop.run(_loop_module()).startswith("uvloop")


def test_asyncio_can_be_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(event_loop.VARIABLE, "asyncio")
    assert event_loop.run(_loop_module()).startswith("asyncio")


def test_an_unknown_loop_is_a_config_error() -> None:
    with pytest.raises(errors.ConfigError, match="MESHSERVE_EVENT_LOOP must be one of"):
        event_loop.chosen({event_loop.VARIABLE: "tokio"})
