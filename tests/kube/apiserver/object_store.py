"""The stand-in's storage: objects, one ``resourceVersion`` counter, and a history.

What breaks operators is the storage's semantics: a ``resourceVersion`` that
orders every change of every kind (one counter, as etcd's revision), a list
that says at which version it was taken, and a history that a watch resumes
from exactly where it stopped, or learns with 410 Gone that it was compacted
away. :class:`ObjectStore` holds all of it, and the kinds it serves; it
lives on the server's event loop and is changed only by
:mod:`tests.kube.apiserver.object_writes`, which calls :meth:`ObjectStore.emit`
for each change so that every watch sees it.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import copy
import dataclasses
import datetime
import json
from collections.abc import Iterator, Mapping
from typing import Any

from tests.kube.apiserver import api_status, selectors
from tests.kube.apiserver.api_status import ApiError, Obj
from tests.kube.apiserver.resource_types import BUILTINS, ResourceType

SERVER_META = (
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "resourceVersion",
    "managedFields",
    "selfLink",
)
"""Metadata only the server writes: a client's values are ignored."""


def now() -> str:
    """A timestamp as metav1.Time writes it (second precision)."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclasses.dataclass(frozen=True)
class Change:
    """One stored change, as the history keeps it and watches see it."""

    rv: int
    key: tuple[str, str]
    type: str
    old: Obj | None
    new: Obj


@dataclasses.dataclass
class Watcher:
    """An open watch: the resource it watches and the changes for it to send."""

    key: tuple[str, str]
    filter: selectors.Filter
    queue: asyncio.Queue[Change | None]


class ObjectStore:
    """Objects by resource, the kinds served, the version counter and the
    change history (``history`` changes kept; older versions are Gone)."""

    def __init__(self, history: int) -> None:
        self.types: dict[tuple[str, str], dict[str, ResourceType]] = {}
        """(group, version) → plural → type."""
        self.objects: dict[tuple[str, str], dict[tuple[str, str], Obj]] = {}
        """(group, plural) → (namespace, name) → stored object."""
        self.rv = 0
        self.history_size = history
        self.history: collections.deque[Change] = collections.deque()
        self.compacted = 0
        """The newest version dropped from the history: watches must start after it."""
        self.watchers: list[Watcher] = []
        for rt in BUILTINS:
            self.register(rt)

    # -- kinds -------------------------------------------------------------------

    def register(self, rt: ResourceType) -> None:
        self.types.setdefault((rt.group, rt.version), {})[rt.plural] = rt
        self.objects.setdefault(rt.key, {})

    def unregister(self, group: str, plural: str) -> None:
        """Stop serving a resource (its CRD is gone)."""
        for gv in list(self.types):
            if gv[0] == group:
                self.types[gv].pop(plural, None)
                if not self.types[gv]:
                    del self.types[gv]

    def resource_type(self, group: str, version: str, plural: str) -> ResourceType:
        rt = self.types.get((group, version), {}).get(plural)
        if rt is None:
            raise api_status.not_found()
        return rt

    def all_types(self) -> Iterator[ResourceType]:
        """Every resource served, once (whatever its number of versions)."""
        seen = set()
        for types in self.types.values():
            for rt in types.values():
                if rt.key not in seen:
                    seen.add(rt.key)
                    yield rt

    # -- versions and history ----------------------------------------------------

    def next_rv(self) -> int:
        self.rv += 1
        return self.rv

    def emit(self, rt: ResourceType, type_: str, old: Obj | None, new: Obj) -> None:
        """Record a change in the history and hand it to the open watches."""
        change = Change(
            int(new["metadata"]["resourceVersion"]),
            rt.key,
            type_,
            copy.deepcopy(old),
            copy.deepcopy(new),
        )
        self.history.append(change)
        while len(self.history) > self.history_size:
            self.compacted = self.history.popleft().rv
        for w in self.watchers:
            if w.key == rt.key:
                w.queue.put_nowait(change)

    def compact(self) -> int:
        """Forget the whole history, as etcd's compaction does."""
        self.compacted = self.rv
        self.history.clear()
        return self.rv

    # -- reads -------------------------------------------------------------------

    @staticmethod
    def out(rt: ResourceType, obj: Obj) -> Obj:
        """A stored object as sent, under the version it was asked for."""
        sent = copy.deepcopy(obj)
        sent["apiVersion"] = rt.api_version
        sent["kind"] = rt.kind
        return sent

    def current(self, rt: ResourceType, namespace: str, name: str) -> Obj:
        obj = self.objects[rt.key].get((namespace, name))
        if obj is None:
            raise ApiError(
                404,
                "NotFound",
                f'{rt.qualified} "{name}" not found',
                {"name": name, "group": rt.group, "kind": rt.plural},
            )
        return obj

    @staticmethod
    def filter(namespace: str, params: Mapping[str, str]) -> selectors.Filter:
        return selectors.Filter(
            namespace=namespace,
            labels=selectors.parse_label_selector(params.get("labelSelector", "")),
            fields=selectors.parse_field_selector(params.get("fieldSelector", "")),
        )

    def listing(self, rt: ResourceType, namespace: str, params: Mapping[str, str]) -> Obj:
        """A list answer: the selected objects, in pages of ``limit``."""
        flt = self.filter(namespace, params)
        items = sorted(
            ((k, o) for k, o in self.objects[rt.key].items() if flt.matches(o)),
            key=lambda kv: kv[0],
        )
        token = params.get("continue", "")
        if token:
            try:
                after = tuple(json.loads(base64.urlsafe_b64decode(token.encode())))
            except (ValueError, TypeError):
                raise ApiError(400, "BadRequest", "invalid continue token") from None
            items = [(k, o) for k, o in items if k > after]
        limit = int(params.get("limit") or 0)
        meta: Obj = {"resourceVersion": str(self.rv)}
        if limit and len(items) > limit:
            meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
            meta["continue"] = base64.urlsafe_b64encode(
                json.dumps(list(items[-1][0])).encode()
            ).decode()
        return {
            "apiVersion": rt.api_version,
            "kind": f"{rt.kind}List",
            "metadata": meta,
            "items": [self._list_item(rt, o) for _, o in items],
        }

    def _list_item(self, rt: ResourceType, obj: Obj) -> Obj:
        item = self.out(rt, obj)
        if not rt.custom:  # built-in lists carry no kind/apiVersion per item
            item.pop("kind", None)
            item.pop("apiVersion", None)
        return item


def strip_server_fields(meta: Mapping[str, Any]) -> Obj:
    return {k: v for k, v in meta.items() if k not in SERVER_META}
