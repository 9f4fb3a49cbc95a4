"""Watches (``?watch=true``): the stream of changes a controller lives on.

A watch from a ``resourceVersion`` replays the retained history after it,
then streams live changes; with none (or ``0``) it starts with ADDED events
for what exists; ``sendInitialEvents=true`` ends that listing with the
``k8s.io/initial-events-end`` bookmark; a version older than the retained
history gets the real server's in-stream ERROR event with a 410 ``Expired``
Status; ``timeoutSeconds`` ends the stream; BOOKMARKs come every
``bookmark_interval`` seconds when asked for; and a label selector turns a
change that moves an object into or out of the selection into ADDED or
DELETED, as the watch cache does. kopf depends on every one of these.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping

from aiohttp import web

from tests.kube.apiserver import selectors
from tests.kube.apiserver.api_status import ApiError, Obj
from tests.kube.apiserver.object_store import Change, ObjectStore, Watcher
from tests.kube.apiserver.resource_types import ResourceType


def _since(params: Mapping[str, str]) -> int:
    """The version a watch starts after; ``-1``: from the current state."""
    since = params.get("resourceVersion", "")
    if since in ("", "0"):
        return -1
    try:
        return int(since)
    except ValueError:
        raise ApiError(400, "BadRequest", f"invalid resourceVersion {since!r}") from None


def _backlog(
    store: ObjectStore, rt: ResourceType, flt: selectors.Filter, since_rv: int, initial: bool
) -> list[tuple[str, Obj]] | None:
    """What a new watch sends before live changes; ``None`` if its version
    was compacted away (410 Gone)."""
    backlog: list[tuple[str, Obj]] = []
    if since_rv < 0 or initial:
        for _, obj in sorted(store.objects[rt.key].items()):
            if flt.matches(obj):
                backlog.append(("ADDED", store.out(rt, obj)))
        if initial:
            backlog.append(("BOOKMARK", bookmark(store, rt, initial_end=True)))
        return backlog
    if since_rv < store.compacted:
        return None
    for past in store.history:
        if past.key == rt.key and past.rv > since_rv:
            seen = view(flt, past)
            if seen is not None:
                backlog.append((seen[0], store.out(rt, seen[1])))
    return backlog


async def serve(
    store: ObjectStore,
    request: web.Request,
    rt: ResourceType,
    namespace: str,
    bookmark_interval: float,
) -> web.StreamResponse:
    """Answer a watch request: the backlog, then live changes until the
    timeout, the client leaving, or the server stopping."""
    params = request.query
    flt = store.filter(namespace, params)
    since_rv = _since(params)
    # Register before reading state: no await in between, so every later
    # change reaches the queue and none is replayed twice.
    watcher = Watcher(rt.key, flt, asyncio.Queue())
    store.watchers.append(watcher)
    backlog = _backlog(store, rt, flt, since_rv, params.get("sendInitialEvents") == "true")
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.enable_chunked_encoding()
    try:
        await response.prepare(request)
        if backlog is None:
            status = ApiError(
                410, "Expired", f"too old resource version: {since_rv} ({store.compacted})"
            ).status()
            await send(response, "ERROR", status)
            return response
        for type_, obj in backlog:
            await send(response, type_, obj)
        await _stream(store, request, response, rt, watcher, bookmark_interval)
    except (ConnectionError, RuntimeError):
        pass  # the client went away
    finally:
        store.watchers.remove(watcher)
    return response


async def _stream(
    store: ObjectStore,
    request: web.Request,
    response: web.StreamResponse,
    rt: ResourceType,
    watcher: Watcher,
    bookmark_interval: float,
) -> None:
    params = request.query
    bookmarks = params.get("allowWatchBookmarks") in ("true", "1")
    timeout = float(params.get("timeoutSeconds") or 0) or None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout if timeout else None
    next_bookmark = loop.time() + bookmark_interval
    while True:
        now = loop.time()
        if deadline is not None and now >= deadline:
            return
        if request.transport is None or request.transport.is_closing():
            return
        wait = min(1.0, next_bookmark - now, *(() if deadline is None else (deadline - now,)))
        try:
            change: Change | None = await asyncio.wait_for(watcher.queue.get(), max(0.0, wait))
        except TimeoutError:
            if bookmarks and loop.time() >= next_bookmark:
                await send(response, "BOOKMARK", bookmark(store, rt))
            if loop.time() >= next_bookmark:
                next_bookmark = loop.time() + bookmark_interval
            continue
        if change is None:
            return
        seen = view(watcher.filter, change)
        if seen is not None:
            await send(response, seen[0], store.out(rt, seen[1]))


def bookmark(store: ObjectStore, rt: ResourceType, initial_end: bool = False) -> Obj:
    meta: Obj = {"resourceVersion": str(store.rv)}
    if initial_end:
        meta["annotations"] = {"k8s.io/initial-events-end": "true"}
    return {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": meta}


def view(flt: selectors.Filter, change: Change) -> tuple[str, Obj] | None:
    """What a watch with this filter sees of a change, if anything."""
    now, before = flt.matches(change.new), flt.matches(change.old)
    if change.type == "ADDED":
        return ("ADDED", change.new) if now else None
    if change.type == "DELETED":
        return ("DELETED", change.new) if now or before else None
    if now and before:
        return ("MODIFIED", change.new)
    if now:
        return ("ADDED", change.new)
    if before:
        return ("DELETED", change.new)
    return None


async def send(response: web.StreamResponse, type_: str, obj: Obj) -> None:
    await response.write(json.dumps({"type": type_, "object": obj}).encode() + b"\n")
