"""A call names its model by header or by field 1, and that name resolves to a
concrete model through the node's mirror, once the mirror has caught up with
a model registered a moment ago through another node."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from tritonclient.grpc import service_pb2

from mesh.core import errors, records
from mesh.kv import memory_kv, placement_table, records_store
from router import request_parsing

IRIS = records.ModelRecord(model_type="sklearn", path="iris")
ALIAS = records.VModelRecord(active_model="iris-v1", target_model="iris-v1")


def _infer(name: str) -> bytes:
    out: bytes = service_pb2.ModelInferRequest(model_name=name).SerializeToString()
    return out


@pytest.fixture
def kv() -> memory_kv.MemoryKV:
    return memory_kv.MemoryKV()


@pytest.fixture
def rs(kv: memory_kv.MemoryKV) -> records_store.RecordStore:
    return records_store.RecordStore(kv, "mm")


@pytest.fixture
async def mirror(kv: memory_kv.MemoryKV) -> AsyncIterator[placement_table.PlacementTable]:
    table = placement_table.PlacementTable(kv, "mm")
    await table.start()
    try:
        yield table
    finally:
        await table.stop()


def test_field_1_names_a_vmodel_or_a_model() -> None:
    asked = request_parsing.requested(_infer("iris"), [])
    assert asked == request_parsing.Requested("any", "iris")


def test_the_model_header_wins_over_the_vmodel_header_and_field_1() -> None:
    headers: list[tuple[str, str | bytes]] = [
        ("mm-vmodel-id", "alias"),
        ("MM-Model-Id-Bin", b"iris-v1"),
        ("mm-balanced", "true"),
        ("mm-unreachable", "n2,,n3"),
    ]
    asked = request_parsing.requested(_infer("ignored"), headers)
    assert asked == request_parsing.Requested("model", "iris-v1", True, frozenset({"n2", "n3"}))
    assert request_parsing.requested(b"", [("mm-vmodel-id", "alias")]).kind == "vmodel"


def test_a_call_naming_no_model_or_a_header_not_utf8_is_invalid() -> None:
    with pytest.raises(errors.InvalidRequest, match="no model named"):
        request_parsing.requested(_infer(""), [])
    with pytest.raises(errors.InvalidRequest, match="mm-vmodel-id-bin is not UTF-8"):
        request_parsing.requested(b"", [("mm-vmodel-id-bin", b"\xff")])


async def test_a_vmodel_resolves_to_its_active_model(
    mirror: placement_table.PlacementTable, rs: records_store.RecordStore
) -> None:
    await rs.create_model("iris-v1", IRIS)
    assert await rs.create_vmodel("alias", ALIAS)
    assert await mirror.wait_until(lambda: mirror.vmodel("alias") is not None, None)
    assert request_parsing.resolve(mirror, "any", "alias") == "iris-v1"
    assert request_parsing.resolve(mirror, "any", "iris-v1") == "iris-v1"
    with pytest.raises(errors.ModelNotFound):
        request_parsing.resolve(mirror, "vmodel", "iris-v1")


async def test_a_model_registered_a_moment_ago_resolves_once_the_mirror_catches_up(
    mirror: placement_table.PlacementTable, rs: records_store.RecordStore
) -> None:
    # The memory store does not yield in a write: the mirror has not seen it.
    await rs.create_model("iris-v1", IRIS)
    await rs.create_vmodel("alias", ALIAS)
    assert mirror.vmodel("alias") is None
    asked = request_parsing.Requested("vmodel", "alias")
    assert await request_parsing.resolve_current(mirror, asked) == "iris-v1"
    with pytest.raises(errors.ModelNotFound):
        await request_parsing.resolve_current(mirror, request_parsing.Requested("any", "nope"))


def test_a_forwarded_request_names_the_model_and_the_unreachable_nodes() -> None:
    assert request_parsing.peer_metadata("m", frozenset({"n3", "n2"})) == [
        ("mm-balanced", "true"),
        ("mm-model-id", "m"),
        ("mm-unreachable", "n2,n3"),
    ]
    assert request_parsing.peer_metadata("m", frozenset()) == [
        ("mm-balanced", "true"),
        ("mm-model-id", "m"),
    ]
