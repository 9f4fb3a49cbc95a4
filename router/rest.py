"""The V2 REST protocol on :8008, translated to the gRPC data plane's path.

A REST call must be routed exactly as a gRPC one is: resolve a Predictor name
to its concrete model, load on demand, forward to the peer holding a copy,
retry on another copy. All of that lives in
:meth:`router.dataplane.DataPlane.call`, which works on V2 protobuf bytes. So
this edge does not proxy to a runtime's own REST port; it builds the very
``ModelInferRequest`` (``ModelMetadataRequest``, ``ModelReadyRequest``) a
``tritonclient.grpc`` caller would have sent, hands it to the data plane with
the caller's ``mm-vmodel-id`` / ``mm-model-id`` headers, and turns the answer
back into V2 JSON. Peers and runtimes only ever see gRPC.

Three layers, I/O at the edge only:

- :mod:`router.v2json` and :mod:`router.tensor_packing` (pure): JSON and the
  binary tensor extension ↔ plain tensors, datatype packing;
- :mod:`router.rest_messages` (pure): plain tensors ↔ protobuf messages;
- :class:`RestServer`: aiohttp handlers that read a request, call the data
  plane, write the answer.

Routes: ``GET /v2`` (server metadata), ``GET /v2/health/live``,
``GET /v2/health/ready``, ``GET /v2/models/{name}[/versions/{v}]`` (model
metadata, routed), ``GET /v2/models/{name}[/versions/{v}]/ready`` (answered by
the mesh, as on gRPC), ``POST /v2/models/{name}[/versions/{v}]/infer``; and
``POST /v2/repository/index`` and ``/v2/repository/models/{name}/load|unload``
(:mod:`router.model_repository`);
KServe's V1 ``GET /v1/models/{name}`` and ``POST /v1/models/{name}:predict``
and ``:explain`` (:mod:`router.v1json`); ``POST /v2/models/{name}/explain``
(a V2 inference request answered by the vmodel's explainer, :mod:`router.chains`);
and Triton's ``GET /v2/models[/{name}[/versions/{v}]]/stats``, summed over
the mesh (:mod:`router.model_statistics`).

Health answers follow the V2 spec: 200 for true, 400 for false. Errors are
``{"error": "..."}`` with the status of :func:`router.http_status.status_of`,
this edge's one table: a mesh error goes through :mod:`mesh.edges.grpc_status`'s
table first, a runtime's error keeps its gRPC code, so one failure has the same
meaning on both ports.
A call without a deadline of its own gets the mesh's default deadline
(``MESHSERVE_DEFAULT_DEADLINE``), as a gRPC call without one does.

Size: a body over ``MM_SVC_GRPC_MAX_MSG_SIZE`` is refused with 413 (one whose
``Content-Length`` says so before a byte is read, and its connection closed;
otherwise aiohttp stops reading at the limit), and so is a request or response
whose V2 protobuf form is over it (the same check as on gRPC,
:class:`router.client_messages.MessageTooLarge`); the message names the limit.
JSON bodies count their JSON bytes: large tensors belong in the binary extension.

TLS: given an ``ssl.SSLContext`` (:func:`mesh.edges.tls.rest_ssl_context`, which
follows certificate rotations), the port speaks HTTPS only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Awaitable, Callable

from aiohttp import web
from tritonclient.grpc import service_pb2

from mesh.core import errors
from router import (
    client_messages,
    dataplane,
    http_status,
    infer_checks,
    model_repository,
    model_statistics,
    request_parsing,
    rest_messages,
    upstream,
    v1json,
    v2json,
)

log = logging.getLogger(__name__)

SERVER_NAME = "meshserve"
OFFLOAD_BYTES = 1024 * 1024
"""Bodies larger than this are parsed and rendered in a worker thread, so a
big JSON tensor does not stall the event loop that also serves gRPC."""

Readiness = Callable[[], Awaitable[bool]]
_JSON = "application/json"
_BINARY = "application/octet-stream"


def _json(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, content_type=_JSON)


def _error(status: int, message: str) -> web.Response:
    return _json(v2json.error_body(message), status)


def _mesh_headers(request: web.Request) -> list[tuple[str, bytes]]:
    """The caller's ``mm-*`` headers, as bytes: a value that is not UTF-8 is
    refused by the data plane with a message naming the header."""
    return [
        (key.lower(), value.encode("utf-8", "surrogateescape"))
        for key, value in request.headers.items()
        if key.lower().startswith("mm-")
    ]


def _model(request: web.Request) -> tuple[str, str]:
    return request.match_info["name"], request.match_info.get("version", "")


class RestServer:
    """The V2 REST endpoint of a node, over its :class:`DataPlane`."""

    def __init__(
        self,
        plane: dataplane.DataPlane,
        ready_fn: Readiness,
        version: str,
        host: str,
        port: int,
        max_body_bytes: int,
        ssl_context: ssl.SSLContext | None = None,
        statistics: model_statistics.StatisticsService | None = None,
        repository: model_repository.ModelRepository | None = None,
    ) -> None:
        self._plane = plane
        self._statistics = statistics
        self._repository = repository
        self._ssl_context = ssl_context
        self._ready = ready_fn
        self._version = version
        self._host = host
        self._port = port
        self._max_body_bytes = max_body_bytes
        self._runner: web.AppRunner | None = None

    @property
    def port(self) -> int:
        """The port listened on (the one the OS chose, once started, if 0 was asked)."""
        return self._port

    def app(self) -> web.Application:
        """The aiohttp application: the routes behind the error middleware."""
        app = web.Application(client_max_size=self._max_body_bytes, middlewares=[self._errors])
        get, post = web.get, web.post
        app.add_routes(
            [
                get("/v2", self._server_metadata),
                get("/v2/health/live", self._live),
                get("/v2/health/ready", self._server_ready),
                get("/v2/models/stats", self._model_stats),
                get("/v2/models/{name}/stats", self._model_stats),
                get("/v2/models/{name}/versions/{version}/stats", self._model_stats),
                get("/v2/models/{name}", self._model_metadata),
                get("/v2/models/{name}/versions/{version}", self._model_metadata),
                get("/v2/models/{name}/ready", self._model_ready),
                get("/v2/models/{name}/versions/{version}/ready", self._model_ready),
                post("/v2/models/{name}/infer", self._infer),
                post("/v2/models/{name}/versions/{version}/infer", self._infer),
                post("/v2/models/{name}/explain", self._explain),
                post("/v2/models/{name}/versions/{version}/explain", self._explain),
                post("/v2/repository/index", self._repository_index),
                post("/v2/repository/models/{name}/load", self._repository_load),
                post("/v2/repository/models/{name}/unload", self._repository_unload),
                get("/v1/models/{name}", self._v1_model),
                post("/v1/models/{name}", self._v1_verb),
            ]
        )
        return app

    async def start(self) -> None:
        """Listen; raises :class:`mesh.core.errors.ConfigError` if the port is taken."""
        runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(
            runner, self._host, self._port, reuse_port=False, ssl_context=self._ssl_context
        )
        try:
            await site.start()
        except OSError as e:
            await runner.cleanup()
            raise errors.ConfigError(
                f"V2 REST: cannot listen on {self._host}:{self._port}: {e}"
            ) from None
        self._runner = runner
        address = runner.addresses[0]
        self._port = int(address[1])
        log.info(
            "V2 REST listening on %s:%d%s",
            self._host,
            self._port,
            " (TLS)" if self._ssl_context else "",
        )

    async def stop(self) -> None:
        """Stop listening; requests in flight get two seconds to finish."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    def _too_large(self) -> web.Response:
        return _error(
            413,
            f"the request body is over the limit of {self._max_body_bytes} bytes "
            f"({client_messages.LIMIT_VARIABLE})",
        )

    @web.middleware
    async def _errors(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Every failure as a V2 JSON error with its status."""
        if (request.content_length or 0) > self._max_body_bytes:
            # Refused before a byte of the body is read, and the connection
            # closed: a client that declared more than it sends must not hold
            # it open waiting for the rest.
            too_large = self._too_large()
            too_large.force_close()
            return too_large
        try:
            return await handler(request)
        except (upstream.UpstreamError, errors.MeshError) as e:
            status, message = http_status.status_of(e)
            return _error(status, message)
        except web.HTTPRequestEntityTooLarge:
            return self._too_large()
        except web.HTTPNotFound:
            return _error(404, f"no V2 REST route {request.method} {request.path}")
        except web.HTTPMethodNotAllowed as e:
            allowed = ", ".join(sorted(e.allowed_methods))
            return _error(405, f"{request.method} {request.path}: use {allowed}")
        except web.HTTPException as e:
            if e.status < 400:
                raise
            return _error(e.status, e.text or e.reason)
        except ConnectionResetError:
            # The client went away mid-request (aiohttp: "Connection lost"):
            # nobody is left to answer, and it is not the node's failure.
            log.info("V2 REST %s %s: the client hung up", request.method, request.path)
            return _error(499, "the client closed the connection")
        except Exception:
            log.exception("V2 REST %s %s failed", request.method, request.path)
            return _error(500, f"{request.method} {request.path} failed; see the node's log")

    async def _server_metadata(self, request: web.Request) -> web.Response:
        return _json(
            v2json.render_server_metadata(SERVER_NAME, self._version, v2json.SERVED_EXTENSIONS)
        )

    async def _live(self, request: web.Request) -> web.Response:
        return _json(v2json.render_live(True))

    async def _server_ready(self, request: web.Request) -> web.Response:
        ready = await self._ready()
        return _json(v2json.render_ready(ready), 200 if ready else 400)

    async def _model_ready(self, request: web.Request) -> web.Response:
        name, version = _model(request)
        ready = self._plane.model_ready(
            rest_messages.ready_request(name, version), _mesh_headers(request)
        )
        return _json(v2json.render_ready(ready, name), 200 if ready else 400)

    async def _model_metadata(self, request: web.Request) -> web.Response:
        name, version = _model(request)
        answer = await self._plane.call(
            "ModelMetadata",
            rest_messages.metadata_request(name, version),
            _mesh_headers(request),
            None,
        )
        return _json(v2json.render_model_metadata(rest_messages.model_metadata(answer)))

    async def _explain(self, request: web.Request) -> web.Response:
        """``/explain``: an inference request answered by the vmodel's explainer."""
        return await self._infer(request, explain=True)

    async def _infer(self, request: web.Request, explain: bool = False) -> web.Response:
        name, version = _model(request)
        body = await request.read()
        length = v2json.header_length(request.headers.get(v2json.HEADER_LENGTH), len(body))
        big = len(body) > OFFLOAD_BYTES
        if big:
            parsed = await asyncio.to_thread(v2json.parse_infer_request, body, length)
        else:
            parsed = v2json.parse_infer_request(body, length)
        answer = await self._call_infer(request, name, version, parsed, explain)
        if big or len(answer) > OFFLOAD_BYTES:
            out, json_length = await asyncio.to_thread(_render, answer, parsed)
        else:
            out, json_length = _render(answer, parsed)
        if json_length is None:
            return _json(out)
        return web.Response(
            body=out,
            content_type=_BINARY,
            headers={v2json.HEADER_LENGTH: str(json_length)},
        )

    async def _call_infer(
        self,
        request: web.Request,
        name: str,
        version: str,
        parsed: v2json.InferRequest,
        explain: bool = False,
    ) -> bytes:
        """``ModelInfer`` through the data plane (to the explainer when
        ``explain``); a refusal that is the client's mistake is said so
        (:func:`router.infer_checks.refined`)."""
        forwarded = rest_messages.infer_request(name, version, parsed)
        headers = _mesh_headers(request)
        if explain:
            headers.append((request_parsing.EXPLAIN_HEADER, b"true"))
        try:
            return await self._plane.call("ModelInfer", forwarded, headers, None)
        except upstream.UpstreamError as e:
            raise infer_checks.refined("ModelInfer", forwarded, e) from None

    async def _model_stats(self, request: web.Request) -> web.Response:
        """Triton's statistics extension, summed over the mesh."""
        if self._statistics is None:
            return _error(501, "this node does not serve statistics")
        name, version = request.match_info.get("name", ""), request.match_info.get("version", "")
        asked = service_pb2.ModelStatisticsRequest(name=name, version=version).SerializeToString()
        answer = await self._statistics.answer(asked, _mesh_headers(request))
        return _json(rest_messages.stats_json(answer))

    def _repository_or_501(self) -> model_repository.ModelRepository:
        if self._repository is None:
            raise web.HTTPNotImplemented(text="this node does not serve the repository calls")
        return self._repository

    async def _repository_index(self, request: web.Request) -> web.Response:
        """Triton's REST index: a JSON list of ``{name, version, state, reason}``."""
        body = await request.read()
        doc = v2json.loads(body) if body.strip() else {}
        ready = isinstance(doc, dict) and bool(doc.get("ready"))
        asked = service_pb2.RepositoryIndexRequest(ready=ready).SerializeToString()
        answer = service_pb2.RepositoryIndexResponse.FromString(
            self._repository_or_501().index(asked)
        )
        models = [
            {"name": m.name, "version": m.version, "state": m.state, "reason": m.reason}
            for m in answer.models
        ]
        return _json(json.dumps(models, separators=(",", ":")).encode())

    async def _repository_load(self, request: web.Request) -> web.Response:
        asked = service_pb2.RepositoryModelLoadRequest(model_name=request.match_info["name"])
        await self._repository_or_501().load(asked.SerializeToString(), _mesh_headers(request))
        return _json(b"{}")

    async def _repository_unload(self, request: web.Request) -> web.Response:
        asked = service_pb2.RepositoryModelUnloadRequest(model_name=request.match_info["name"])
        await self._repository_or_501().unload(asked.SerializeToString(), _mesh_headers(request))
        return _json(b"{}")

    # -- KServe V1 -----------------------------------------------------------------------

    async def _v1_model(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        ready = self._plane.model_ready(
            rest_messages.ready_request(name, ""), _mesh_headers(request)
        )
        return _json(v1json.render_model(name, ready), 200 if ready else 503)

    async def _v1_verb(self, request: web.Request) -> web.Response:
        """``POST /v1/models/<m>:predict`` (and ``:explain``)."""
        name, _, verb = request.match_info["name"].rpartition(":")
        if verb == "predict" and name:
            parsed = v1json.parse_predict(await request.read())
            answer = await self._call_infer(request, name, "", parsed)
            return _json(v1json.render_predictions(rest_messages.infer_response(answer)))
        if verb == "explain" and name:
            parsed = v1json.parse_predict(await request.read())
            answer = await self._call_infer(request, name, "", parsed, explain=True)
            return _json(v1json.render_outputs(rest_messages.infer_response(answer)))
        return _error(404, f"no V1 REST route POST {request.path}: use :predict or :explain")


def _render(answer: bytes, request: v2json.InferRequest) -> tuple[bytes, int | None]:
    return v2json.render_infer_response(rest_messages.infer_response(answer), request)
