"""A vmodel's chain walked inside the mesh: transformer, predictor, explainer.

KServe puts a transformer in front of a predictor and an explainer beside it
as separate services, each a network hop from the last. Here they are
models like any other (user code served by MLServer, see
``runtime_adapters/mlserver_runtimes``), named on the vmodel's record
(:attr:`mesh.core.records.VModelRecord.transformer` / ``explainer``), and the
node the client called walks the chain itself, each step routed, loaded and
evicted as usual:

- **infer** with a transformer: the request goes to the transformer with
  ``meshserve_stage: preprocess``; its answer, turned into a request on the
  wire (:mod:`router.chain_wire`), goes to the predictor; the predictor's
  answer goes back to the transformer with ``meshserve_stage: postprocess``,
  and that answer is the client's.
- **explain** (``mm-explain: true``, REST's ``:explain`` and ``/explain``):
  the request goes to the explainer with ``meshserve_predictor`` naming the
  concrete predictor model, which the explainer calls through the mesh.

Each step's time is a metric (``meshserve_chain_stage_milliseconds``) and a
step's error names the step. Only the node a client called walks a chain:
a step forwarded to a peer names a concrete model and is served as one.
Transport-free: the steps are routed by the data plane's own routing,
handed in as a callable.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from mesh.core import errors, records
from mesh.kv import placement_table
from mesh.node import metrics
from router import chain_wire, request_parsing, upstream, wire

Step = Callable[[str, bytes, float | None], Awaitable[bytes]]
"""Route a ``ModelInfer`` (bytes naming the concrete model) to the model."""


def chain_of(
    mirror: placement_table.PlacementTable, asked: request_parsing.Requested, method: str
) -> records.VModelRecord | None:
    """The vmodel whose chain this call walks, or ``None`` for a plain call.
    Raises :class:`mesh.core.errors.NoExplainer` for an explain call on a
    model without an explainer."""
    if method != "ModelInfer" or asked.balanced:
        return None
    vmodel = None if asked.kind == "model" else mirror.vmodel(asked.name)
    if asked.explain:
        if vmodel is None or not vmodel.explainer:
            raise errors.NoExplainer(asked.name)
        return vmodel
    return vmodel if vmodel is not None and vmodel.transformer else None


def refuse_stream(mirror: placement_table.PlacementTable, asked: request_parsing.Requested) -> None:
    """Raise :class:`mesh.core.errors.InvalidRequest` for a stream that would
    need a chain: its messages are not walked through a transformer (the
    predictor alone would answer untransformed rows) nor an explainer."""
    if asked.balanced or asked.kind == "model":
        return
    vmodel = mirror.vmodel(asked.name)
    if asked.explain or (vmodel is not None and vmodel.transformer):
        raise errors.InvalidRequest(
            f"{errors.shown(asked.name)!r} has a transformer (or the stream asks for "
            "explanations): streams are not walked through a chain; call ModelInfer"
        )


class ChainRunner:
    """Walks a vmodel's chain over the data plane's routing."""

    def __init__(self, step: Step, meters: metrics.Metrics) -> None:
        self._step = step
        self._metrics = meters

    async def run(
        self,
        vmodel: records.VModelRecord,
        asked: request_parsing.Requested,
        predictor: str,
        request: bytes,
        timeout: float | None,
    ) -> bytes:
        """The answer to ``request`` (which names the vmodel) through its
        chain; ``predictor``: the concrete model serving the vmodel now."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if asked.explain:
            asked_explainer = chain_wire.with_parameter(
                wire.rewrite_name(request, vmodel.explainer),
                chain_wire.PREDICTOR_PARAMETER,
                predictor,
            )
            answer = await self._run_step(
                asked.name, "explain", vmodel.explainer, asked_explainer, deadline
            )
            return wire.rewrite_name(answer, asked.name)
        transformer = vmodel.transformer
        pre = await self._run_step(
            asked.name,
            "preprocess",
            transformer,
            _staged(wire.rewrite_name(request, transformer), "preprocess"),
            deadline,
        )
        predicted = await self._run_step(
            asked.name,
            "predict",
            predictor,
            chain_wire.response_as_request(pre, predictor),
            deadline,
        )
        post = await self._run_step(
            asked.name,
            "postprocess",
            transformer,
            _staged(chain_wire.response_as_request(predicted, transformer), "postprocess"),
            deadline,
        )
        return wire.rewrite_name(post, asked.name)

    async def _run_step(
        self, vmodel_id: str, stage: str, model_id: str, request: bytes, deadline: float | None
    ) -> bytes:
        t0 = time.monotonic()
        remaining = None if deadline is None else deadline - t0
        if remaining is not None and remaining <= 0:
            raise errors.DeadlineExceeded(f"{stage} of {vmodel_id!r}: the deadline ran out")
        try:
            return await self._step(model_id, request, remaining)
        except upstream.UpstreamError as e:
            raise upstream.UpstreamError(e.code, _named(vmodel_id, stage, e.details)) from None
        except errors.MeshError as e:
            e.message = _named(vmodel_id, stage, e.message)
            e.args = (e.message,)
            raise
        finally:
            self._metrics.chain_stage(vmodel_id, stage, (time.monotonic() - t0) * 1000)


def _staged(request: bytes, stage: str) -> bytes:
    return chain_wire.with_parameter(request, chain_wire.STAGE_PARAMETER, stage)


def _named(vmodel_id: str, stage: str, message: str) -> str:
    return f"{stage} step of {errors.shown(vmodel_id)!r}: {message}"
