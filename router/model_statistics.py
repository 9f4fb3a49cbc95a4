"""Triton's ``ModelStatistics``, answered for the whole mesh.

A client asks any node for a model's statistics (``get_inference_statistics``
in tritonclient, gRPC ``ModelStatistics``, REST ``GET
/v2/models[/<m>[/versions/<v>]]/stats``). Each node counts the inferences its
own runtime answered (:mod:`mesh.node.model_stats`); the node asked sums its
counts with every other live node's, which it asks with the same call marked
as balanced (a peer so asked answers for itself only). The answer names the
model as the client did. Without a name, every model the mesh has counted is
listed, by concrete id. A peer that does not answer is left out of the sum
(and logged): statistics are a report, not a transaction.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence

from google.protobuf import message as pb_message
from tritonclient.grpc import service_pb2

from mesh.core import errors
from mesh.kv import placement_table
from mesh.node import model_stats
from router import request_parsing, upstream, wire

log = logging.getLogger(__name__)

METHOD = "ModelStatistics"
PEER_TIMEOUT_SECONDS = 5.0


def _counts(stats: model_stats.ModelStats) -> dict[str, object]:
    return {
        "last_inference": stats.last_inference_ms,
        "inference_count": stats.inference_count,
        "execution_count": stats.inference_count,
        "inference_stats": service_pb2.InferStatistics(
            success=service_pb2.StatisticDuration(count=stats.success.count, ns=stats.success.ns),
            fail=service_pb2.StatisticDuration(count=stats.fail.count, ns=stats.fail.ns),
        ),
    }


def encode(named: Sequence[tuple[str, str, model_stats.ModelStats]]) -> bytes:
    """A ``ModelStatisticsResponse`` of (name, version, counts) triples."""
    msg = service_pb2.ModelStatisticsResponse(
        model_stats=[
            service_pb2.ModelStatistics(name=name, version=version, **_counts(stats))
            for name, version, stats in named
        ]
    )
    data: bytes = msg.SerializeToString()
    return data


def decode(data: bytes) -> dict[str, model_stats.ModelStats]:
    """A peer's answer as counts by model id."""
    try:
        msg = service_pb2.ModelStatisticsResponse.FromString(data)
    except pb_message.DecodeError as e:
        raise errors.MeshError(f"a peer's statistics are not a valid message: {e}") from None
    out = {}
    for m in msg.model_stats:
        s = m.inference_stats
        out[m.name] = model_stats.ModelStats(
            model_stats.Duration(s.success.count, s.success.ns),
            model_stats.Duration(s.fail.count, s.fail.ns),
            m.last_inference,
        )
    return out


class StatisticsService:
    """Answers ``ModelStatistics`` on one node, for the mesh."""

    def __init__(
        self,
        mirror: placement_table.PlacementTable,
        book: model_stats.StatsBook,
        self_id: str,
        peer: Callable[[str], upstream.Upstream],
    ) -> None:
        self._table = mirror
        self._book = book
        self._self = self_id
        self._peer = peer

    async def answer(self, request: bytes, headers: request_parsing.Headers) -> bytes:
        """The ``ModelStatisticsResponse`` for a ``ModelStatisticsRequest``."""
        version = wire.read_version(request)
        has_name = bool(wire.read_name(request)) or any(
            k.lower().startswith((request_parsing.MODEL_HEADER, request_parsing.VMODEL_HEADER))
            for k, _ in headers
        )
        balanced = any(
            k.lower() == request_parsing.BALANCED_HEADER and v in ("true", b"true")
            for k, v in headers
        )
        if has_name:
            asked = await self._asked(request, headers)
            names = {asked[1]: asked[0]}
        else:
            names = {m: m for m in self._book.models()}
        counts = {m: s for m in names if (s := self._book.of(m)) is not None}
        if not balanced:
            for theirs in await self._peer_counts(request, list(names) if has_name else None):
                for model_id, stats in theirs.items():
                    if has_name and model_id not in names:
                        continue
                    names.setdefault(model_id, model_id)
                    counts[model_id] = counts.get(model_id, model_stats.ModelStats()).plus(stats)
        return encode(
            [(names[m], version, counts.get(m, model_stats.ModelStats())) for m in sorted(names)]
        )

    async def _asked(self, request: bytes, headers: request_parsing.Headers) -> tuple[str, str]:
        """The name the client used and the concrete model id it stands for."""
        asked = request_parsing.requested(request, headers)
        model_id = await request_parsing.resolve_current(self._table, asked)
        return asked.name, model_id

    async def _peer_counts(
        self, request: bytes, model_ids: list[str] | None
    ) -> list[Mapping[str, model_stats.ModelStats]]:
        """Every other live node's own counts (of ``model_ids``, or all)."""
        peers = [(i, r.endpoint) for i, r in self._table.instances().items() if i != self._self]
        asks = []
        for instance, endpoint in peers:
            if model_ids is None:
                asks.append(self._ask(instance, endpoint, request, None))
            else:
                asks.extend(self._ask(instance, endpoint, request, m) for m in model_ids)
        return [c for c in await asyncio.gather(*asks) if c is not None]

    async def _ask(
        self, instance: str, endpoint: str, request: bytes, model_id: str | None
    ) -> Mapping[str, model_stats.ModelStats] | None:
        metadata = [(request_parsing.BALANCED_HEADER, "true")]
        if model_id is not None:
            request = wire.rewrite_name(request, model_id)
        try:
            data = await self._peer(endpoint).call(METHOD, request, PEER_TIMEOUT_SECONDS, metadata)
            answer = decode(data)
        except (upstream.UpstreamError, errors.MeshError) as e:
            log.info("statistics of node %s left out: %s", instance, e)
            return None
        if model_id is not None:  # the peer names it as asked: by its concrete id
            return {model_id: answer[model_id]} if model_id in answer else {}
        return answer
