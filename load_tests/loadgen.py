"""An open-loop KServe V2 gRPC load generator (asyncio, grpc.aio, raw bytes).

Why it exists: ghz and perf_analyzer cannot be installed here, and a
closed-loop client (send, wait, send) hides a slow server: it simply sends
less. :func:`open_loop` sends every request at the time its schedule says
(``load_tests.workload``), whether or not earlier ones have answered, and
times each from that *scheduled* moment, so queueing anywhere (server, or
this client falling behind) shows up in the latencies. :func:`closed_loop`
(N callers, each sending its next request when the last one answers) is kept
for the two things it is right for: concurrency 1, and finding the saturation
throughput.

The generator is made cheap so that it measures the server, not itself:
every request body is a ``ModelInferRequest`` serialised once, before the run
(:func:`infer_request`, with ``tritonclient.grpc.service_pb2``), and sent
through a stub whose serializers are the identity, so the client never
touches protobuf while timing. Responses are not decoded either (their bytes
are only counted as an answer). Latencies go into HDR histograms
(``load_tests.latencies``); errors are counted by gRPC status code name.
Each result also says how late the generator itself sent (``send_lag``): if
that grows, the client, not the server, was the bottleneck.

Stand-alone use against any V2 server (a 5×4 FP64 ``predict`` input, as the
mesh's sample models take)::

    python -m load_tests.loadgen --target 127.0.0.1:8033 --model iris --rate 200 --duration 10
    python -m load_tests.loadgen --target 127.0.0.1:8033 --models 100 --model-prefix m- \\
        --zipf-alpha 1.0 --rate 500 --cv 2 --duration 30
    python -m load_tests.loadgen --target 127.0.0.1:8033 --trace trace.csv
    python -m load_tests.loadgen --target 127.0.0.1:8033 --model iris --concurrency 8 \\
        --duration 10

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import json
import pathlib
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
from tritonclient.grpc import service_pb2

from load_tests import latencies, workload

SERVICE = "inference.GRPCInferenceService"
MODEL_INFER = f"/{SERVICE}/ModelInfer"
DEFAULT_TIMEOUT_S = 30.0
CHANNEL_OPTIONS = (
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
)

_DTYPES = {
    np.dtype(np.float64): "FP64",
    np.dtype(np.float32): "FP32",
    np.dtype(np.int64): "INT64",
    np.dtype(np.int32): "INT32",
}


def infer_request(
    model: str, inputs: Mapping[str, npt.NDArray[Any]], outputs: Sequence[str] = ()
) -> bytes:
    """A serialised ``ModelInferRequest`` for ``model`` (tensors as raw
    little-endian contents, as tritonclient sends them)."""
    req = service_pb2.ModelInferRequest(model_name=model)
    for name, value in inputs.items():
        arr = np.ascontiguousarray(value)
        dtype = _DTYPES.get(arr.dtype)
        if dtype is None:
            raise ValueError(f"input {name!r}: dtype {arr.dtype} is not supported here")
        t = req.inputs.add()
        t.name, t.datatype = name, dtype
        t.shape.extend(arr.shape)
        req.raw_input_contents.append(arr.astype(arr.dtype.newbyteorder("<")).tobytes())
    for name in outputs:
        req.outputs.add().name = name
    body: bytes = req.SerializeToString()
    return body


def response_model(body: bytes) -> str:
    """The model name in a serialised ``ModelInferResponse`` (for checks
    outside the timed path)."""
    resp = service_pb2.ModelInferResponse()
    resp.ParseFromString(body)
    return str(resp.model_name)


@dataclasses.dataclass(frozen=True)
class RunResult:
    """What one run of the generator saw."""

    mode: str
    """``open`` or ``closed``."""
    sent: int
    ok: int
    errors: Mapping[str, int]
    """Failed requests by gRPC status code name (or exception type)."""
    duration_s: float
    """From the start to the last answer."""
    latency: latencies.Recorder
    """Latencies of the successful requests, µs (open loop: from the
    scheduled send time; closed loop: from the actual send)."""
    send_lag: latencies.Recorder
    """Open loop: how late each request left compared with its schedule."""
    peak_in_flight: int
    offered_rate_per_s: float = 0.0
    """Open loop: the schedule's own rate (requests / its span)."""
    concurrency: int = 0
    """Closed loop: the number of callers."""

    @property
    def throughput_per_s(self) -> float:
        """Successful requests per second."""
        return self.ok / self.duration_s if self.duration_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mode": self.mode,
            "sent": self.sent,
            "ok": self.ok,
            "errors": dict(sorted(self.errors.items())),
            "duration_s": round(self.duration_s, 3),
            "throughput_per_s": round(self.throughput_per_s, 1),
            "latency_us": self.latency.summary().as_dict(),
            "peak_in_flight": self.peak_in_flight,
        }
        if self.mode == "open":
            out["offered_rate_per_s"] = round(self.offered_rate_per_s, 1)
            lag = self.send_lag.summary()
            out["send_lag_us"] = {"p50": lag.p50_us, "p99": lag.p99_us, "max": lag.max_us}
        else:
            out["concurrency"] = self.concurrency
        return out


class Target:
    """One channel to a V2 endpoint and a raw-bytes ``ModelInfer`` stub."""

    def __init__(self, endpoint: str, method: str = MODEL_INFER) -> None:
        self.endpoint = endpoint
        self._channel: Any = grpc.aio.insecure_channel(endpoint, options=list(CHANNEL_OPTIONS))
        self.stub: Any = self._channel.unary_unary(method)

    async def wait_ready(self, timeout_s: float = 10.0) -> None:
        await asyncio.wait_for(self._channel.channel_ready(), timeout_s)

    async def call(self, body: bytes, timeout_s: float = DEFAULT_TIMEOUT_S) -> bytes:
        """One call, untimed (for checks and warm-up)."""
        out: bytes = await self.stub(body, timeout=timeout_s)
        return out

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> Target:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class _Run:
    """Counters shared by the requests of one run (one event loop)."""

    def __init__(self, stub: Any, timeout_s: float, metadata: Sequence[tuple[str, str]]) -> None:
        self.stub = stub
        self.timeout_s = timeout_s
        self.metadata = tuple(metadata) or None
        self.latency = latencies.Recorder()
        self.lag = latencies.Recorder()
        self.errors: collections.Counter[str] = collections.Counter()
        self.ok = 0
        self.sent = 0
        self.in_flight = 0
        self.peak = 0
        self.last_done_ns = 0

    async def one(self, body: bytes, t0_ns: int) -> None:
        self.sent += 1
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await self.stub(body, timeout=self.timeout_s, metadata=self.metadata)
        except grpc.aio.AioRpcError as e:
            self.errors[e.code().name] += 1
        except Exception as e:  # a client-side failure is an error too, not a crash
            self.errors[type(e).__name__] += 1
        else:
            self.ok += 1
            self.latency.record_ns(time.perf_counter_ns() - t0_ns)
        finally:
            self.in_flight -= 1
            self.last_done_ns = time.perf_counter_ns()


async def open_loop(
    target: Target,
    bodies: Sequence[bytes],
    picks: Sequence[int] | npt.NDArray[np.int64],
    offsets_s: Sequence[float] | npt.NDArray[np.float64],
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    metadata: Sequence[tuple[str, str]] = (),
) -> RunResult:
    """Send ``bodies[picks[i]]`` at ``offsets_s[i]`` seconds from now, for
    every i, without waiting for answers; then wait for the last answer."""
    if len(picks) != len(offsets_s):
        raise ValueError("one pick per send time")
    run = _Run(target.stub, timeout_s, metadata)
    tasks: set[asyncio.Task[None]] = set()
    clock = time.perf_counter_ns
    start = clock()
    for pick, offset in zip(picks, offsets_s, strict=True):
        due = start + int(offset * 1e9)
        delay = due - clock()
        if delay > 0:
            await asyncio.sleep(delay / 1e9)
        run.lag.record_ns(max(0, clock() - due))
        t = asyncio.create_task(run.one(bodies[pick], due))
        tasks.add(t)
        t.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(set(tasks), timeout=timeout_s + 5)
    for t in list(tasks):  # past every deadline: count, do not hang
        t.cancel()
    span = float(offsets_s[-1]) if len(offsets_s) else 0.0
    return RunResult(
        mode="open",
        sent=run.sent,
        ok=run.ok,
        errors=dict(run.errors),
        duration_s=max(0, max(run.last_done_ns, start) - start) / 1e9,
        latency=run.latency,
        send_lag=run.lag,
        peak_in_flight=run.peak,
        offered_rate_per_s=len(offsets_s) / span if span > 0 else 0.0,
    )


async def closed_loop(
    target: Target,
    bodies: Sequence[bytes],
    picks: Sequence[int] | npt.NDArray[np.int64],
    *,
    concurrency: int,
    count: int | None = None,
    duration_s: float | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    metadata: Sequence[tuple[str, str]] = (),
) -> RunResult:
    """``concurrency`` callers, each sending its next request when its last
    one answered, until ``count`` requests were sent or ``duration_s`` passed
    (whichever is given; both: whichever comes first). Requests take
    ``bodies[picks[i % len(picks)]]`` in turn."""
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    if count is None and duration_s is None:
        raise ValueError("give a count or a duration")
    if not len(picks):
        raise ValueError("no requests to send")
    run = _Run(target.stub, timeout_s, metadata)
    clock = time.perf_counter_ns
    start = clock()
    stop_ns = start + int(duration_s * 1e9) if duration_s is not None else None
    limit = count if count is not None else sys.maxsize
    n = len(picks)
    next_i = 0

    async def caller() -> None:
        nonlocal next_i
        while next_i < limit and (stop_ns is None or clock() < stop_ns):
            i = next_i
            next_i += 1
            await run.one(bodies[picks[i % n]], clock())

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return RunResult(
        mode="closed",
        sent=run.sent,
        ok=run.ok,
        errors=dict(run.errors),
        duration_s=(clock() - start) / 1e9,
        latency=run.latency,
        send_lag=latencies.Recorder(),
        peak_in_flight=run.peak,
        concurrency=concurrency,
    )


# ---------------------------------------------------------------------------
# Stand-alone command


def _plan(args: argparse.Namespace) -> tuple[list[str], npt.NDArray[np.int64], npt.NDArray[Any]]:
    """(model names, pick per request, send offsets) from the command line."""
    if args.trace:
        trace = workload.read_trace(pathlib.Path(args.trace))
        names = list(trace.names())
        index = {m: i for i, m in enumerate(names)}
        picks = np.array([index[m] for m in trace.models], dtype=np.int64)
        return names, picks, np.array(trace.offsets_s, dtype=np.float64)
    names = list(args.model) or [f"{args.model_prefix}{i}" for i in range(args.models)]
    if not names:
        raise SystemExit("name a --model, or --models N with --model-prefix, or a --trace")
    if args.concurrency:
        count = int(args.duration * 100_000)  # more than any caller can send
        offsets = np.empty(0)
    else:
        offsets = workload.schedule_for(
            workload.Arrivals(args.rate, args.cv), args.duration, args.seed
        )
        count = len(offsets)
    popularity = workload.Zipf(len(names), args.zipf_alpha)
    picks = workload.zipf_models(popularity, count, args.seed + 1)
    return names, picks, offsets


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    names, picks, offsets = _plan(args)
    x = np.zeros(tuple(int(d) for d in args.input_shape.split("x")), dtype=np.float64)
    bodies = [infer_request(n, {args.input_name: x}, [args.input_name]) for n in names]
    async with Target(args.target) as target:
        await target.wait_ready()
        if args.concurrency:
            result = await closed_loop(
                target,
                bodies,
                picks,
                concurrency=args.concurrency,
                duration_s=args.duration,
                timeout_s=args.timeout,
            )
        else:
            result = await open_loop(target, bodies, picks, offsets, timeout_s=args.timeout)
    return {"target": args.target, "models": len(names), **result.as_dict()}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m load_tests.loadgen",
        description="Open-loop (or closed-loop) V2 gRPC ModelInfer load against one endpoint.",
    )
    p.add_argument("--target", required=True, help="HOST:PORT of a V2 gRPC endpoint")
    p.add_argument("--model", action="append", default=[], help="a model name (repeatable)")
    p.add_argument("--models", type=int, default=0, help="N models named PREFIX0..PREFIX{N-1}")
    p.add_argument("--model-prefix", default="m-")
    p.add_argument("--zipf-alpha", type=float, default=1.0, help="popularity over the models")
    p.add_argument("--trace", help="CSV of offset_seconds,model to replay instead")
    p.add_argument("--rate", type=float, default=100.0, help="mean requests a second (open loop)")
    p.add_argument("--cv", type=float, default=1.0, help="CV of the gaps: 1 Poisson, 0 even")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of sending")
    p.add_argument("--concurrency", type=int, default=0, help="closed loop with N callers")
    p.add_argument("--input-name", default="predict")
    p.add_argument("--input-shape", default="5x4", help="FP64 input of zeros, e.g. 5x4")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="per-call deadline")
    p.add_argument("--seed", type=int, default=1)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out = asyncio.run(_main(args))
    print(json.dumps(out), flush=True)
    return 0 if out["ok"] == out["sent"] else 1


if __name__ == "__main__":
    sys.exit(main())
