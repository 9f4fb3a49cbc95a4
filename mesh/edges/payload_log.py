"""Payload logging: copies of inference requests and responses, sent as
CloudEvents to a file or an HTTP endpoint, off the request path.

Auditing, drift detection and explainability tools want every prediction's
input and output, but the serving path must not pay for them: a request
must never wait on, or fail because of, a slow or dead log sink. So the data
plane only calls :meth:`PayloadLogger.record`, which puts a reference to the
bytes it already holds on a bounded queue and returns; worker tasks write
from the queue. When the queue is full (``MESHSERVE_PAYLOAD_LOG_QUEUE``
events, or ``MESHSERVE_PAYLOAD_LOG_QUEUE_BYTES`` bytes, so that large tensors
behind a slow sink cannot eat the node's memory) an event is dropped and
counted. A sink that fails is counted and logged (once a minute at most);
nothing is retried.

Only the node a client called logs (not a peer serving a forwarded request),
the request as the client sent it and the response as the client got it;
``ModelInfer`` calls and every message of a ``ModelStreamInfer`` stream.

The events follow KServe's inference logger: CloudEvents 1.0, type
``org.kubeflow.serving.inference.request`` / ``...response``, extension
``inferenceservicename`` (the name the caller used: a Predictor or a model
id), plus ``modelid`` (the concrete model that served it), ``method``, and
``requestid`` shared by a call's request and response(s) (each event keeps
an ``id`` of its own, as CloudEvents requires). The data is the V2 protobuf
message (``application/x-protobuf``, message type in ``protomessage``).

- ``file:///path``: one event a line in CloudEvents' JSON format
  (structured mode, the bytes in ``data_base64``), appended.
- ``http(s)://...``: one ``POST`` per event in binary mode (``ce-*``
  headers, the message as the body), as KServe's logger sends them.

Counters on :2112: ``meshserve_payload_log_events_total{outcome="written|dropped|failed"}``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import datetime
import json
import logging
import pathlib
import time
import urllib.parse
import uuid
from collections.abc import Sequence
from typing import Protocol

import aiohttp
import prometheus_client

log = logging.getLogger(__name__)

REQUEST = "request"
RESPONSE = "response"
EVENT_TYPES = {
    REQUEST: "org.kubeflow.serving.inference.request",
    RESPONSE: "org.kubeflow.serving.inference.response",
}
CONTENT_TYPE = "application/x-protobuf"
_MESSAGES = {
    ("ModelInfer", REQUEST): "inference.ModelInferRequest",
    ("ModelInfer", RESPONSE): "inference.ModelInferResponse",
    ("ModelStreamInfer", REQUEST): "inference.ModelInferRequest",
    ("ModelStreamInfer", RESPONSE): "inference.ModelStreamInferResponse",
}
WARN_EVERY_SECONDS = 60.0
HTTP_TIMEOUT_SECONDS = 5.0


@dataclasses.dataclass(frozen=True)
class Payload:
    """One message to log."""

    kind: str
    """:data:`REQUEST` or :data:`RESPONSE`."""
    request_id: str
    """Shared by a call's request and its response(s)."""
    method: str
    name: str
    """The model name the caller used."""
    model_id: str
    """The concrete model that served it."""
    data: bytes
    time: float
    """Seconds since the epoch."""
    sequence: int = 0
    """Number of the message in its direction of a stream (0 for a unary call)."""


# --- the events (pure) ------------------------------------------------------------------


def attributes(p: Payload, source: str) -> dict[str, str]:
    """The CloudEvents context attributes and extensions of ``p``."""
    when = datetime.datetime.fromtimestamp(p.time, datetime.UTC)
    return {
        "specversion": "1.0",
        "id": f"{p.request_id}/{p.kind}/{p.sequence}",
        "source": source,
        "type": EVENT_TYPES[p.kind],
        "time": when.isoformat(timespec="microseconds").replace("+00:00", "Z"),
        "datacontenttype": CONTENT_TYPE,
        "inferenceservicename": p.name,
        "modelid": p.model_id,
        "method": p.method,
        "requestid": p.request_id,
        "protomessage": _MESSAGES.get((p.method, p.kind), ""),
    }


def structured(p: Payload, source: str) -> str:
    """``p`` as one line of CloudEvents JSON (structured mode)."""
    event: dict[str, str] = attributes(p, source)
    event["data_base64"] = base64.b64encode(p.data).decode("ascii")
    return json.dumps(event, separators=(",", ":"))


def binary_headers(p: Payload, source: str) -> dict[str, str]:
    """The HTTP headers of ``p`` in CloudEvents' binary mode."""
    out = {"Content-Type": CONTENT_TYPE}
    for key, value in attributes(p, source).items():
        if key != "datacontenttype":
            # Header values are ASCII: names outside it are percent-encoded,
            # as the CloudEvents HTTP binding says.
            out[f"ce-{key}"] = urllib.parse.quote(value, safe=" !#$&'()*+,/:;=?@[]~")
    return out


def new_request_id() -> str:
    return uuid.uuid4().hex


# --- sinks --------------------------------------------------------------------------


class Sink(Protocol):
    batch_max: int
    """Most events one :meth:`write` takes."""

    async def write(self, batch: Sequence[Payload]) -> None:
        """Write every event of ``batch``, or raise."""
        ...

    async def close(self) -> None: ...


class FileSink:
    """Appends JSON lines to a file (created, with its folder, if missing)."""

    batch_max = 256

    def __init__(self, path: pathlib.Path, source: str) -> None:
        self.path = path
        self._source = source

    def _append(self, lines: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(lines)

    async def write(self, batch: Sequence[Payload]) -> None:
        lines = "".join(structured(p, self._source) + "\n" for p in batch)
        await asyncio.to_thread(self._append, lines)

    async def close(self) -> None:
        return None


class HttpSink:
    """POSTs each event, in binary mode, to ``url``."""

    batch_max = 1

    def __init__(self, url: str, source: str) -> None:
        self.url = url
        self._source = source
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT_SECONDS)
            )
        return self._session

    async def write(self, batch: Sequence[Payload]) -> None:
        session = self._get_session()
        for p in batch:
            async with session.post(
                self.url, data=p.data, headers=binary_headers(p, self._source)
            ) as response:
                if response.status >= 300:
                    raise RuntimeError(f"{self.url} answered HTTP {response.status}")

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()


def sink_for(target: str, source: str) -> Sink:
    """The sink a ``MESHSERVE_PAYLOAD_LOG`` value names (already checked by
    :func:`mesh.core.payload_log_settings.parse_payload_log_target`)."""
    url = urllib.parse.urlsplit(target)
    if url.scheme == "file":
        return FileSink(pathlib.Path(urllib.parse.unquote(url.path)), source)
    return HttpSink(target, source)


# --- the queue -----------------------------------------------------------------------


class PayloadLogger:
    """A bounded queue in front of a sink, drained by worker tasks.

    :meth:`record` is what the data plane calls; it never blocks and never
    raises. Counters: :attr:`written`, :attr:`dropped`, :attr:`failed`.
    """

    def __init__(
        self,
        sink: Sink,
        *,
        queue_size: int = 1000,
        queue_bytes: int = 64 * 1024 * 1024,
        workers: int | None = None,
        registry: prometheus_client.CollectorRegistry | None = None,
    ) -> None:
        self.sink = sink
        self._queue: asyncio.Queue[Payload] = asyncio.Queue(maxsize=queue_size)
        self._max_bytes = queue_bytes
        self._queued_bytes = 0
        self._workers = workers or (1 if sink.batch_max > 1 else 4)
        self._tasks: list[asyncio.Task[None]] = []
        self._open = True
        self.written = 0
        self.dropped = 0
        self.failed = 0
        self._last_warning = 0.0
        self._counter = prometheus_client.Counter(
            "meshserve_payload_log_events",
            "Payload log events, by what became of them (written, dropped: queue "
            "full, failed: the sink refused)",
            ("outcome",),
            registry=registry,
        )

    def record(
        self,
        kind: str,
        request_id: str,
        method: str,
        name: str,
        model_id: str,
        data: bytes,
        sequence: int = 0,
    ) -> None:
        """Queue one message for the log, or drop it if the queue is full."""
        if not self._open:
            return
        size = len(data)
        if self._queue.full() or self._queued_bytes + size > self._max_bytes:
            self.dropped += 1
            self._counter.labels("dropped").inc()
            self._warn(f"queue full ({self._queue.qsize()} events, {self._queued_bytes} bytes)")
            return
        self._queued_bytes += size
        self._queue.put_nowait(
            Payload(kind, request_id, method, name, model_id, data, time.time(), sequence)
        )

    @property
    def pending(self) -> int:
        """Events waiting in the queue."""
        return self._queue.qsize()

    async def start(self) -> None:
        for i in range(self._workers):
            self._tasks.append(asyncio.create_task(self._work(), name=f"payload-log-{i}"))

    async def stop(self, timeout: float = 2.0) -> None:
        """Write what is queued (for ``timeout`` seconds at most), then stop."""
        self._open = False
        if self._tasks:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), timeout)
        tasks, self._tasks = self._tasks, []
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.sink.close()

    async def _work(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.sink.batch_max and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            self._queued_bytes -= sum(len(p.data) for p in batch)
            try:
                await self.sink.write(batch)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.failed += len(batch)
                self._counter.labels("failed").inc(len(batch))
                self._warn(f"the sink failed: {type(e).__name__}: {e}")
            else:
                self.written += len(batch)
                self._counter.labels("written").inc(len(batch))
            finally:
                for _ in batch:
                    self._queue.task_done()

    def _warn(self, what: str) -> None:
        now = time.monotonic()
        if now - self._last_warning >= WARN_EVERY_SECONDS:
            self._last_warning = now
            log.warning(
                "payload log: %s; so far %d written, %d dropped, %d failed",
                what,
                self.written,
                self.dropped,
                self.failed,
            )
