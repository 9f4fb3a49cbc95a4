"""The load generator against an in-process V2 stand-in (and through the bare
proxy): every request sent is answered or counted as an error by its status,
the open loop keeps to its schedule's count, nothing is timed."""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator
from typing import Any

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2

from load_tests import bare_proxy, loadgen, workload


class FakeV2(grpc.GenericRpcHandler):  # type: ignore[misc]
    """ModelInfer that echoes the model's name, NOT_FOUND for ``missing``."""

    def __init__(self) -> None:
        self.seen: collections.Counter[str] = collections.Counter()

    def service(self, handler_call_details: Any) -> Any:
        if handler_call_details.method != loadgen.MODEL_INFER:
            return None
        return grpc.unary_unary_rpc_method_handler(self._infer)

    async def _infer(self, request: bytes, context: Any) -> bytes:
        req = service_pb2.ModelInferRequest()
        req.ParseFromString(request)
        self.seen[req.model_name] += 1
        if req.model_name == "missing":
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such model")
        out: bytes = service_pb2.ModelInferResponse(model_name=req.model_name).SerializeToString()
        return out


@pytest.fixture
async def fake_v2() -> AsyncIterator[tuple[str, FakeV2]]:
    handler = FakeV2()
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([handler])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}", handler
    finally:
        await server.stop(None)


def bodies(names: list[str]) -> list[bytes]:
    x = np.arange(20, dtype=np.float64).reshape(5, 4)
    return [loadgen.infer_request(n, {"predict": x}, ["predict"]) for n in names]


def test_infer_request_carries_the_tensor() -> None:
    x = np.arange(20, dtype=np.float64).reshape(5, 4)
    req = service_pb2.ModelInferRequest()
    req.ParseFromString(loadgen.infer_request("iris", {"predict": x}, ["predict"]))
    assert req.model_name == "iris"
    assert (req.inputs[0].name, req.inputs[0].datatype, list(req.inputs[0].shape)) == (
        "predict",
        "FP64",
        [5, 4],
    )
    assert np.array_equal(np.frombuffer(req.raw_input_contents[0], "<f8").reshape(5, 4), x)
    assert [o.name for o in req.outputs] == ["predict"]
    with pytest.raises(ValueError, match="not supported"):
        loadgen.infer_request("iris", {"s": np.array(["a"])})


async def test_open_loop_sends_every_request_and_counts_errors_by_code(
    fake_v2: tuple[str, FakeV2],
) -> None:
    endpoint, server = fake_v2
    names = ["a", "b", "missing"]
    offsets = workload.schedule(workload.Arrivals(2000.0), 300, seed=1)
    picks = workload.zipf_models(workload.Zipf(3, 1.0), 300, seed=2)
    async with loadgen.Target(endpoint) as target:
        await target.wait_ready()
        result = await loadgen.open_loop(target, bodies(names), picks, offsets)
    wanted = collections.Counter(names[i] for i in picks)
    assert server.seen == wanted
    assert result.sent == 300
    assert result.ok == wanted["a"] + wanted["b"]
    assert result.errors == {"NOT_FOUND": wanted["missing"]}
    assert result.latency.count == result.ok
    assert result.send_lag.count == 300
    figures = result.as_dict()
    assert figures["mode"] == "open" and figures["latency_us"]["count"] == result.ok


async def test_closed_loop_stops_at_its_count(fake_v2: tuple[str, FakeV2]) -> None:
    endpoint, server = fake_v2
    async with loadgen.Target(endpoint) as target:
        result = await loadgen.closed_loop(
            target, bodies(["a", "b"]), [0, 1], concurrency=4, count=101
        )
    assert (result.sent, result.ok, dict(result.errors)) == (101, 101, {})
    assert server.seen == {"a": 51, "b": 50}
    assert 1 <= result.peak_in_flight <= 4
    assert result.as_dict()["concurrency"] == 4


async def test_closed_loop_needs_a_bound(fake_v2: tuple[str, FakeV2]) -> None:
    async with loadgen.Target(fake_v2[0]) as target:
        with pytest.raises(ValueError):
            await loadgen.closed_loop(target, bodies(["a"]), [0], concurrency=1)


async def test_an_unreachable_target_is_counted_not_raised() -> None:
    async with loadgen.Target("127.0.0.1:1") as target:
        result = await loadgen.closed_loop(
            target, bodies(["a"]), [0], concurrency=1, count=3, timeout_s=2.0
        )
    assert result.ok == 0 and result.errors == {"UNAVAILABLE": 3}


async def test_bare_proxy_passes_bytes_and_statuses_through(fake_v2: tuple[str, FakeV2]) -> None:
    endpoint, server = fake_v2
    proxy = bare_proxy.BareProxy("127.0.0.1:0", endpoint)
    await proxy.start()
    try:
        async with loadgen.Target(proxy.endpoint) as target:
            answer = await target.call(bodies(["a"])[0])
            assert loadgen.response_model(answer) == "a"
            result = await loadgen.closed_loop(
                target, bodies(["b", "missing"]), [0, 1], concurrency=2, count=20
            )
    finally:
        await proxy.stop()
    assert result.ok == 10 and result.errors == {"NOT_FOUND": 10}
    assert server.seen == {"a": 1, "b": 10, "missing": 10}
