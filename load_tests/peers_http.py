"""The HTTP JSON client of the scenario "peers": an open loop over a trace.

Why it exists: meshserve, Ray Serve and a bare MLServer must be called the
same way for their latencies to be comparable, and Ray Serve's multiplexing
is only reachable over HTTP (its proxy, the model named in the
``serve_multiplexed_model_id`` header). So every system gets the same
client, protocol and body here: one ``aiohttp`` session, a prebuilt V2 JSON
body (``{"inputs": [...]}``) posted to a per-system URL, requests sent at
the trace's times whether or not earlier ones answered, each latency counted
from its *scheduled* send time into an HDR histogram
(:mod:`load_tests.latencies`), failures counted by HTTP status. What comes
back is :class:`load_tests.loadgen.RunResult`, as from the gRPC generator.

:class:`Route` says how one system is called: the base URLs (requests go
round-robin over them, as a Service spreads them over pods), the path, with
``{model}`` standing for the model's name there, and the header that names
the model, if any.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp
import numpy as np
import numpy.typing as npt

from load_tests import latencies, loadgen

V2_INFER = "/v2/models/{model}/infer"
RAY_MODEL_HEADER = "serve_multiplexed_model_id"


@dataclasses.dataclass(frozen=True)
class Route:
    """How a system is called over HTTP."""

    bases: tuple[str, ...]
    """``http://host:port`` of each entry point; request i goes to ``bases[i % k]``."""
    path: str = V2_INFER
    """``{model}`` is replaced by the model's name at that system."""
    model_header: str = ""
    """A header carrying the model's name (Ray's multiplexing), or none."""
    names: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """The system's name for a model, where it differs from the trace's
    (MLServer direct knows the mesh's concrete model ids)."""

    def url(self, i: int, model: str) -> str:
        name = self.names.get(model, model)
        return self.bases[i % len(self.bases)] + self.path.format(model=name)

    def headers(self, model: str) -> dict[str, str]:
        h = {"Content-Type": "application/json"}
        if self.model_header:
            h[self.model_header] = self.names.get(model, model)
        return h


def v2_body(inputs: npt.NDArray[np.float64], name: str = "predict") -> bytes:
    """A V2 JSON inference body for one FP64 tensor."""
    doc = {
        "inputs": [
            {
                "name": name,
                "shape": list(inputs.shape),
                "datatype": "FP64",
                "data": inputs.reshape(-1).tolist(),
            }
        ]
    }
    return json.dumps(doc).encode()


def output_data(answer: Mapping[str, Any]) -> list[float]:
    """The first output tensor's data of a V2 JSON answer."""
    return [float(x) for x in answer["outputs"][0]["data"]]


async def call(
    session: aiohttp.ClientSession, route: Route, model: str, body: bytes, timeout_s: float
) -> dict[str, Any]:
    """One untimed call (checks, warm-up of a single model); raises on an error status."""
    async with session.post(
        route.url(0, model),
        data=body,
        headers=route.headers(model),
        timeout=aiohttp.ClientTimeout(total=timeout_s),
    ) as r:
        text = await r.text()
        if r.status != 200:
            raise RuntimeError(f"{route.url(0, model)}: HTTP {r.status}: {text[:300]}")
        out: dict[str, Any] = json.loads(text)
        return out


class _Counters:
    def __init__(self) -> None:
        self.latency = latencies.Recorder()
        self.lag = latencies.Recorder()
        self.errors: collections.Counter[str] = collections.Counter()
        self.ok = self.sent = self.in_flight = self.peak = 0
        self.last_done_ns = 0


async def _one(
    session: aiohttp.ClientSession,
    c: _Counters,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    due_ns: int,
    timeout: aiohttp.ClientTimeout,
) -> None:
    c.sent += 1
    c.in_flight += 1
    c.peak = max(c.peak, c.in_flight)
    try:
        async with session.post(url, data=body, headers=headers, timeout=timeout) as r:
            await r.read()
            if r.status == 200:
                c.ok += 1
                c.latency.record_ns(time.perf_counter_ns() - due_ns)
            else:
                c.errors[f"HTTP {r.status}"] += 1
    except Exception as e:  # a timeout or a reset is an error of the run, not a crash
        c.errors[type(e).__name__] += 1
    finally:
        c.in_flight -= 1
        c.last_done_ns = time.perf_counter_ns()


async def open_loop(
    session: aiohttp.ClientSession,
    route: Route,
    body: bytes,
    names: Sequence[str],
    picks: Sequence[int],
    offsets_s: Sequence[float],
    timeout_s: float,
) -> loadgen.RunResult:
    """Post ``body`` for model ``names[picks[i]]`` at ``offsets_s[i]`` seconds
    from now, for every i, without waiting for answers; then wait for the last."""
    if len(picks) != len(offsets_s):
        raise ValueError("one pick per send time")
    c = _Counters()
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    tasks: set[asyncio.Task[None]] = set()
    clock = time.perf_counter_ns
    start = clock()
    for i, (pick, offset) in enumerate(zip(picks, offsets_s, strict=True)):
        due = start + int(offset * 1e9)
        delay = due - clock()
        if delay > 0:
            await asyncio.sleep(delay / 1e9)
        c.lag.record_ns(max(0, clock() - due))
        model = names[pick]
        coro = _one(session, c, route.url(i, model), route.headers(model), body, due, timeout)
        t = asyncio.create_task(coro)
        tasks.add(t)
        t.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(set(tasks), timeout=timeout_s + 5)
    for t in list(tasks):
        t.cancel()
    span = float(offsets_s[-1]) if len(offsets_s) else 0.0
    return loadgen.RunResult(
        mode="open",
        sent=c.sent,
        ok=c.ok,
        errors=dict(c.errors),
        duration_s=max(0, max(c.last_done_ns, start) - start) / 1e9,
        latency=c.latency,
        send_lag=c.lag,
        peak_in_flight=c.peak,
        offered_rate_per_s=len(offsets_s) / span if span > 0 else 0.0,
    )


def session(connections: int = 256) -> aiohttp.ClientSession:
    """The one client session of a run (keep-alive, enough connections for
    the open loop's peak in flight)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections))
