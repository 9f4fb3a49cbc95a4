"""A failed load's verdict: the model's faults are recorded, the node's are not."""

from __future__ import annotations

import asyncio

import pytest

from mesh.core import errors, load_outcomes


def outcome(e: BaseException) -> load_outcomes.FailedLoad:
    return load_outcomes.failed_load(e, "m", "n1", 2.5)


def test_a_runtime_refusal_is_the_models_fault_in_the_runtimes_words() -> None:
    failed = outcome(errors.ModelLoadFailed("m", "bad pickle"))
    assert failed.blamed and failed.message == "bad pickle" and not failed.unexpected


def test_a_load_past_its_timeout_is_the_models_fault() -> None:
    failed = outcome(TimeoutError())
    assert isinstance(failed.error, errors.ModelLoadFailed)
    assert failed.blamed and failed.message == "load took longer than 2.5 s"


def test_a_model_larger_than_the_node_is_its_fault_but_room_held_for_now_is_not() -> None:
    assert outcome(errors.InsufficientCapacity("too big")).blamed
    assert not outcome(errors.NoRoomNow("busy")).blamed


@pytest.mark.parametrize(
    "e",
    [errors.RuntimeUnavailable("down"), errors.StoreUnavailable("etcd"), asyncio.CancelledError()],
    ids=["runtime-down", "etcd-down", "node-stopping"],
)
def test_the_nodes_circumstances_are_not_held_against_the_model(e: BaseException) -> None:
    assert not outcome(e).blamed


def test_a_stopped_load_tells_its_waiters_the_node_stopped() -> None:
    failed = outcome(asyncio.CancelledError())
    assert isinstance(failed.error, errors.RuntimeUnavailable)
    assert failed.message == "node n1 stopped loading 'm'"


def test_an_unexpected_exception_is_a_failed_load_flagged_unexpected() -> None:
    failed = outcome(ValueError("boom"))
    assert failed.blamed and failed.unexpected and failed.message == "ValueError: boom"
