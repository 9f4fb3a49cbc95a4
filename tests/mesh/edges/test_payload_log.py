"""The payload log on its own: CloudEvents as KServe's logger writes them, a
real file and a real HTTP sink on 127.0.0.1, and a queue that drops rather
than waits."""

from __future__ import annotations

import asyncio
import base64
import json
import pathlib
from typing import Any

import prometheus_client
from aiohttp import web

from mesh.edges import payload_log, ports


def _payload(
    kind: str = "request", data: bytes = b"\x0a\x04iris", seq: int = 0
) -> payload_log.Payload:
    return payload_log.Payload(kind, "r1", "ModelInfer", "iris", "iris__ksp-1", data, 1.5e9, seq)


def test_events_follow_kserve_types_and_share_a_request_id_with_ids_of_their_own() -> None:
    req = payload_log.attributes(_payload("request"), "meshserve/node-1")
    resp = payload_log.attributes(_payload("response"), "meshserve/node-1")
    assert req["specversion"] == "1.0"
    assert req["type"] == "org.kubeflow.serving.inference.request"
    assert resp["type"] == "org.kubeflow.serving.inference.response"
    assert req["id"] != resp["id"] and req["requestid"] == resp["requestid"] == "r1"
    assert req["inferenceservicename"] == "iris" and req["modelid"] == "iris__ksp-1"
    assert req["time"] == "2017-07-14T02:40:00.000000Z"
    assert req["protomessage"] == "inference.ModelInferRequest"


def test_a_file_event_is_one_json_line_with_the_message_in_base64() -> None:
    line = payload_log.structured(_payload(data=b"\x00\xffbytes"), "meshserve/n")
    assert "\n" not in line
    event = json.loads(line)
    assert base64.b64decode(event["data_base64"]) == b"\x00\xffbytes"
    assert event["datacontenttype"] == "application/x-protobuf"


def test_an_http_event_is_in_binary_mode() -> None:
    headers = payload_log.binary_headers(_payload(), "meshserve/n")
    assert headers["Content-Type"] == "application/x-protobuf"
    assert headers["ce-type"] == "org.kubeflow.serving.inference.request"
    assert headers["ce-modelid"] == "iris__ksp-1"
    assert "ce-datacontenttype" not in headers


async def test_events_are_appended_to_a_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "logs" / "payloads.jsonl"
    logger = payload_log.PayloadLogger(
        payload_log.sink_for(f"file://{path}", "meshserve/n"),
        registry=prometheus_client.CollectorRegistry(),
    )
    await logger.start()
    logger.record("request", "a", "ModelInfer", "iris", "m1", b"in")
    logger.record("response", "a", "ModelInfer", "iris", "m1", b"out")
    await logger.stop()
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [base64.b64decode(e["data_base64"]) for e in lines] == [b"in", b"out"]
    assert logger.written == 2 and logger.dropped == logger.failed == 0


class _Sink:
    """A slow sink that never finishes a write until released."""

    batch_max = 1

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.seen = 0

    async def write(self, batch: Any) -> None:
        self.seen += len(batch)
        await self.release.wait()

    async def close(self) -> None:
        return None


async def test_a_full_queue_drops_and_counts_instead_of_waiting() -> None:
    sink = _Sink()
    registry = prometheus_client.CollectorRegistry()
    logger = payload_log.PayloadLogger(sink, queue_size=3, workers=1, registry=registry)
    await logger.start()
    # record() is synchronous: the sink is stuck, so every event past the
    # queue's room is dropped on the spot rather than waited for.
    for i in range(100):
        logger.record("request", str(i), "ModelInfer", "m", "m", b"x" * 10)
    await asyncio.sleep(0.05)
    assert logger.dropped >= 96
    sample = registry.get_sample_value("meshserve_payload_log_events_total", {"outcome": "dropped"})
    assert sample == logger.dropped
    sink.release.set()
    await logger.stop()


async def test_the_byte_bound_keeps_large_payloads_from_piling_up() -> None:
    sink = _Sink()
    logger = payload_log.PayloadLogger(
        sink, queue_size=100, queue_bytes=1000, workers=1, registry=None
    )
    await logger.start()
    for _ in range(5):
        logger.record("request", "r", "ModelInfer", "m", "m", b"x" * 400)
    assert logger.pending + sink.seen <= 3 and logger.dropped >= 2
    sink.release.set()
    await logger.stop()


async def test_a_dead_http_sink_counts_failures_and_never_raises() -> None:
    port = ports.free_port()  # nothing listens there
    logger = payload_log.PayloadLogger(
        payload_log.sink_for(f"http://127.0.0.1:{port}/events", "meshserve/n"), registry=None
    )
    await logger.start()
    for i in range(5):
        logger.record("request", str(i), "ModelInfer", "m", "m", b"data")
    await logger.stop()
    assert logger.failed == 5 and logger.written == 0


async def test_events_reach_an_http_sink_in_binary_mode() -> None:
    got: list[tuple[dict[str, str], bytes]] = []

    async def events(request: web.Request) -> web.Response:
        got.append((dict(request.headers), await request.read()))
        return web.Response(status=202)

    app = web.Application()
    app.router.add_post("/events", events)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        logger = payload_log.PayloadLogger(
            payload_log.sink_for(f"http://127.0.0.1:{port}/events", "meshserve/n"),
            registry=None,
        )
        await logger.start()
        logger.record("request", "r9", "ModelInfer", "iris", "iris-1", b"\x01\x02")
        await logger.stop()
    finally:
        await runner.cleanup()
    assert len(got) == 1
    headers, body = got[0]
    assert body == b"\x01\x02"
    assert headers["ce-requestid"] == "r9" and headers["ce-inferenceservicename"] == "iris"
