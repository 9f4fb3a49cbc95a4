"""The REST paths of the Kubernetes API, routed to the store, discovery and watches.

A client speaks HTTP to the stand-in exactly as to a real server: the same
paths (``/apis/<group>/<version>/namespaces/<ns>/<plural>/<name>/status``),
verbs, media types, status codes and ``Warning`` headers, so kopf and the
official client run unmodified. Every request is also counted in RBAC's
terms (:class:`Request`: the client's User-Agent, verb, group, resource,
namespaced or not), so a test can check that a client's Role and
ClusterRole allow everything it did, and nothing more is granted. A bearer
token, if one is set, is required (401 otherwise); authorization itself is
left out: every authenticated request is allowed.
"""

from __future__ import annotations

import collections
import dataclasses
import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from tests.kube.apiserver import api_status, discovery, object_writes, watch_stream
from tests.kube.apiserver.api_status import ApiError, Obj
from tests.kube.apiserver.object_store import ObjectStore
from tests.kube.apiserver.resource_types import ResourceType


@dataclasses.dataclass(frozen=True)
class Request:
    """One request as RBAC sees it."""

    agent: str
    """The client: the first word of its User-Agent (``kopf``, ``OpenAPI-Generator``...)."""
    verb: str
    """``get``, ``list``, ``watch``, ``create``, ``update``, ``patch``, ``delete``..."""
    group: str
    resource: str
    """``plural`` or ``plural/subresource``."""
    namespaced: bool
    """Whether the request named a namespace (else it was cluster-wide)."""


def _verb(method: str, item: bool, watch: bool) -> str:
    if method == "GET":
        return "get" if item else ("watch" if watch else "list")
    if method == "DELETE":
        return "delete" if item else "deletecollection"
    return {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, method.lower())


@dataclasses.dataclass(frozen=True)
class _Target:
    """What a resource path names."""

    rt: ResourceType
    namespace: str
    name: str
    sub: str


class Routes:
    """The HTTP handler of the stand-in, over one store."""

    def __init__(
        self,
        store: ObjectStore,
        port: Callable[[], int],
        token: str | None,
        bookmark_interval: float,
    ) -> None:
        self.store = store
        self._port = port
        self.token = token
        self.bookmark_interval = bookmark_interval
        self.requests: collections.Counter[Request] = collections.Counter()
        """What each client asked for, in RBAC's terms."""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            if self.token is not None:
                auth = request.headers.get("Authorization", "")
                if auth != f"Bearer {self.token}":
                    raise ApiError(401, "Unauthorized", "Unauthorized")
            return await self._route(request)
        except ApiError as e:
            return web.json_response(e.status(), status=e.code)

    async def _route(self, request: web.Request) -> web.StreamResponse:
        segs = [s for s in request.path.split("/") if s]
        found = self._discovery(segs)
        if found is not None:
            return web.json_response(found)
        group, version, rest = _locate(segs)
        types = self.store.types.get((group, version))
        if types is None:
            raise api_status.not_found()
        if not rest:
            return web.json_response(discovery.resource_list(self.store, group, version))
        target = self._target(group, version, rest)
        self._count(request, target)
        if not target.name:
            return await self._collection(request, target)
        return await self._item(request, target)

    def _discovery(self, segs: list[str]) -> Obj | None:
        if segs == ["version"]:
            return discovery.VERSION_INFO
        if segs == ["api"]:
            return discovery.api_versions(self._port())
        if segs == ["apis"]:
            return discovery.group_list(self.store)
        if len(segs) == 2 and segs[0] == "apis":
            found = discovery.group(self.store, segs[1])
            if found is None:
                raise api_status.not_found()
            return found
        return None

    def _target(self, group: str, version: str, rest: list[str]) -> _Target:
        types = self.store.types[(group, version)]
        namespace = ""
        if (
            rest[0] == "namespaces"
            and len(rest) >= 3
            and rest[2] in types
            and types[rest[2]].namespaced
        ):
            namespace, rest = rest[1], rest[2:]
        if len(rest) > 3:
            raise api_status.not_found()
        rt = self.store.resource_type(group, version, rest[0])
        name = rest[1] if len(rest) > 1 else ""
        sub = rest[2] if len(rest) > 2 else ""
        if name and rt.namespaced and not namespace:
            raise api_status.not_found()
        if sub and sub not in rt.subresources:
            raise api_status.not_found()
        return _Target(rt, namespace, name, sub)

    def _count(self, request: web.Request, target: _Target) -> None:
        rt = target.rt
        watch = request.query.get("watch") in ("true", "1")
        self.requests[
            Request(
                agent=request.headers.get("User-Agent", "").split("/")[0],
                verb=_verb(request.method, bool(target.name), watch),
                group=rt.group,
                resource=f"{rt.plural}/{target.sub}" if target.sub else rt.plural,
                namespaced=bool(target.namespace),
            )
        ] += 1

    async def _collection(self, request: web.Request, t: _Target) -> web.StreamResponse:
        params, method = request.query, request.method
        if method == "GET":
            if params.get("watch") in ("true", "1"):
                return await watch_stream.serve(
                    self.store, request, t.rt, t.namespace, self.bookmark_interval
                )
            return web.json_response(self.store.listing(t.rt, t.namespace, params))
        if method == "POST":
            body = await _body(request)
            created, warnings = object_writes.create(self.store, t.rt, t.namespace, body, params)
            response = self._written(t.rt, created, warnings)
            response.set_status(201)
            return response
        if method == "DELETE":
            found = object_writes.delete_collection(self.store, t.rt, t.namespace, params)
            return web.json_response(found)
        raise _not_allowed()

    async def _item(self, request: web.Request, t: _Target) -> web.StreamResponse:
        params, method, store = request.query, request.method, self.store
        if method == "GET":
            return web.json_response(store.out(t.rt, store.current(t.rt, t.namespace, t.name)))
        if method == "PUT":
            body = await _body(request)
            obj, warnings = object_writes.update(
                store, t.rt, t.namespace, t.name, body, t.sub, params
            )
            return self._written(t.rt, obj, warnings)
        if method == "PATCH":
            patch = await _body(request, allow_list=True)
            obj, warnings = object_writes.patch(
                store, t.rt, t.namespace, t.name, request.content_type, patch, t.sub, params
            )
            return self._written(t.rt, obj, warnings)
        if method == "DELETE" and not t.sub:
            options = await _body(request) if request.can_read_body else {}
            code, answer = object_writes.delete(store, t.rt, t.namespace, t.name, options, params)
            return web.json_response(answer, status=code)
        raise _not_allowed()

    def _written(self, rt: ResourceType, obj: Obj, warnings: list[str]) -> web.Response:
        headers = {"Warning": ", ".join(f'299 - "{w}"' for w in warnings)} if warnings else None
        return web.json_response(self.store.out(rt, obj), headers=headers)


def _locate(segs: list[str]) -> tuple[str, str, list[str]]:
    """The group, version and the rest of a resource path."""
    if len(segs) >= 2 and segs[0] == "api":
        return "", segs[1], segs[2:]
    if len(segs) >= 3 and segs[0] == "apis":
        return segs[1], segs[2], segs[3:]
    raise api_status.not_found()


def _not_allowed() -> ApiError:
    return ApiError(
        405,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource",
    )


async def _body(request: web.Request, allow_list: bool = False) -> Any:
    raw = await request.read()
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ApiError(400, "BadRequest", f"the body is not JSON: {e}") from None
    if not isinstance(body, dict) and not (allow_list and isinstance(body, list)):
        raise ApiError(400, "BadRequest", "the body must be a JSON object")
    return body
