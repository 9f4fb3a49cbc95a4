"""Creates, updates, patches and deletes, with the real server's rules.

These are the semantics operators trip over, so each is the real server's:
``uid``, ``creationTimestamp`` and ``generation`` (bumped when anything but
metadata and status changes) are the server's; a stale ``resourceVersion``
is a 409 Conflict (and a custom resource updated without one a 422); a write
that changes nothing is no write (no new version, no event); status is
written only through ``/status`` and kept by writes to the main resource;
an object with finalizers gets a ``deletionTimestamp`` and stays until an
update removes its last finalizer, and no finalizer may be added meanwhile.

**No garbage collection.** In a real cluster, dependents named by
``ownerReferences`` are deleted by the garbage collector, a loop of
kube-controller-manager, not by the API server; here no controller-manager
runs, so an owned object outlives its owner unless a client deletes it, as
with envtest. A test thus sees only the deletions its clients sent. As the
real server does, a delete with ``propagationPolicy`` ``Orphan`` or
``Foreground`` adds the ``orphan`` or ``foregroundDeletion`` finalizer for
that collector to act on, so such an object stays, marked deleted.
"""

from __future__ import annotations

import copy
import random
import string
import uuid
from collections.abc import Mapping
from typing import Any

from tests.kube.apiserver import patches, validation
from tests.kube.apiserver.api_status import ApiError, Obj
from tests.kube.apiserver.object_store import SERVER_META, ObjectStore, now, strip_server_fields
from tests.kube.apiserver.resource_types import ResourceType, crd_resource_types

_CRDS = ("apiextensions.k8s.io", "v1", "customresourcedefinitions")
_GC_FINALIZERS = {"Orphan": "orphan", "Foreground": "foregroundDeletion"}
"""The finalizer a deletion's propagation policy leaves for the garbage collector."""


def conflict(rt: ResourceType, name: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {rt.qualified} "{name}": the object has been '
        "modified; please apply your changes to the latest version and try again",
        {"name": name, "group": rt.group, "kind": rt.plural},
    )


def _uid_conflict(uid: str, actual: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f"Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}",
    )


# -- create ------------------------------------------------------------------------


def _new_name(rt: ResourceType, meta: Obj) -> str:
    """The name of an object to create (from ``generateName`` if it has none)."""
    name = meta.get("name") or ""
    if not name and meta.get("generateName"):
        suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
        name = meta["name"] = f"{meta['generateName']}{suffix}"
    if not name:
        raise validation.invalid(
            rt, "", ["metadata.name: Required value: name or generateName is required"]
        )
    errs = validation.name_errors(rt, name)
    if errs:
        raise validation.invalid(rt, str(name), errs)
    return str(name)


def _place(store: ObjectStore, rt: ResourceType, namespace: str, meta: Obj) -> None:
    """Check a new object's namespace against the request's, and set it."""
    if not rt.namespaced:
        meta.pop("namespace", None)
        return
    body_ns = meta.get("namespace")
    if body_ns and body_ns != namespace:
        raise ApiError(
            400,
            "BadRequest",
            "the namespace of the provided object does not match the namespace sent on the request",
        )
    if not namespace:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    if ("", namespace) not in store.objects[("", "namespaces")]:
        raise ApiError(
            404,
            "NotFound",
            f'namespaces "{namespace}" not found',
            {"name": namespace, "kind": "namespaces"},
        )
    meta["namespace"] = namespace


def create(
    store: ObjectStore,
    rt: ResourceType,
    namespace: str,
    body: Mapping[str, Any],
    params: Mapping[str, str] | None = None,
) -> tuple[Obj, list[str]]:
    """Store a new object: the stored object and the warnings to send."""
    obj = validation.check_object(rt, body)
    meta = obj["metadata"]
    if meta.get("resourceVersion"):
        raise ApiError(
            400, "BadRequest", "resourceVersion should not be set on objects to be created"
        )
    name = _new_name(rt, meta)
    _place(store, rt, namespace, meta)
    if (namespace, name) in store.objects[rt.key]:
        raise ApiError(
            409,
            "AlreadyExists",
            f'{rt.qualified} "{name}" already exists',
            {"name": name, "group": rt.group, "kind": rt.plural},
        )
    obj["metadata"] = strip_server_fields(meta)
    if "status" in rt.subresources and rt.plural != "customresourcedefinitions":
        obj.pop("status", None)
    obj, warnings = validation.admit(rt, None, obj, params or {})
    meta = obj["metadata"]
    meta["uid"] = str(uuid.uuid4())
    meta["creationTimestamp"] = now()
    if rt.custom or "spec" in obj:
        meta["generation"] = 1
    if rt.plural == "customresourcedefinitions":
        define(store, obj)
    meta["resourceVersion"] = str(store.next_rv())
    store.objects[rt.key][(namespace, name)] = obj
    store.emit(rt, "ADDED", None, obj)
    return obj, warnings


def define(store: ObjectStore, crd: Obj) -> None:
    """Serve a CRD's resource (and mark it Established, as the real server does)."""
    try:
        types = crd_resource_types(crd)
    except (KeyError, TypeError) as e:
        raise validation.invalid(
            store.resource_type(*_CRDS),
            crd["metadata"].get("name", ""),
            [f"spec: Invalid value: missing {e}"],
        ) from None
    for rt in types:
        store.register(rt)
    names = (crd.get("spec") or {}).get("names") or {}
    crd["status"] = {
        "acceptedNames": dict(names),
        "conditions": [
            {
                "type": "NamesAccepted",
                "status": "True",
                "reason": "NoConflicts",
                "lastTransitionTime": now(),
            },
            {
                "type": "Established",
                "status": "True",
                "reason": "InitialNamesAccepted",
                "lastTransitionTime": now(),
            },
        ],
        "storedVersions": [v["name"] for v in crd["spec"].get("versions", []) if v.get("storage")],
    }


# -- update and patch --------------------------------------------------------------


def update(
    store: ObjectStore,
    rt: ResourceType,
    namespace: str,
    name: str,
    body: Mapping[str, Any],
    sub: str,
    params: Mapping[str, str],
) -> tuple[Obj, list[str]]:
    """A PUT of the object (or of its ``/status``)."""
    cur = store.current(rt, namespace, name)
    new = validation.check_object(rt, body)
    meta = new["metadata"]
    if meta.get("name", name) != name:
        raise ApiError(
            400,
            "BadRequest",
            f"the name of the object ({meta.get('name')}) does not match the name on "
            f"the URL ({name})",
        )
    rv = meta.get("resourceVersion")
    if not rv and rt.custom:
        raise validation.invalid(
            rt,
            name,
            ["metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"],
        )
    if rv and rv != cur["metadata"]["resourceVersion"]:
        raise conflict(rt, name)
    uid = meta.get("uid")
    if uid and uid != cur["metadata"]["uid"]:
        raise _uid_conflict(uid, cur["metadata"]["uid"])
    return write(store, rt, cur, new, sub, params)


def _patched(rt: ResourceType, name: str, base: Obj, content_type: str, patch: Any) -> Any:
    """``base`` with a patch of this media type applied."""
    if content_type == "application/merge-patch+json" or (
        content_type == "application/strategic-merge-patch+json" and not rt.custom
    ):
        if not isinstance(patch, dict):
            raise ApiError(400, "BadRequest", "a merge patch must be a JSON object")
        return patches.merge_patch(base, patch)
    if content_type == "application/json-patch+json":
        if not isinstance(patch, list):
            raise ApiError(400, "BadRequest", "a JSON patch must be a JSON array")
        try:
            return patches.json_patch(base, patch)
        except patches.PatchTestFailed as e:
            raise validation.invalid(rt, name, [str(e)]) from None
        except (KeyError, IndexError, ValueError, TypeError) as e:
            raise validation.invalid(rt, name, [f"the patch cannot be applied: {e!r}"]) from None
    raise ApiError(
        415,
        "UnsupportedMediaType",
        "the body of the request was in an unknown format - accepted media types include: "
        "application/json-patch+json, application/merge-patch+json"
        + ("" if rt.custom else ", application/strategic-merge-patch+json")
        + f" (got {content_type!r})",
    )


def patch(
    store: ObjectStore,
    rt: ResourceType,
    namespace: str,
    name: str,
    content_type: str,
    body: Any,
    sub: str,
    params: Mapping[str, str],
) -> tuple[Obj, list[str]]:
    """A PATCH of the object (or of its ``/status``)."""
    cur = store.current(rt, namespace, name)
    patched = _patched(rt, name, copy.deepcopy(cur), content_type, body)
    if not isinstance(patched, dict):
        raise validation.invalid(rt, name, ["the patched object is not an object"])
    patched_meta = patched.get("metadata") or {}
    if patched_meta.get("resourceVersion") != cur["metadata"]["resourceVersion"]:
        raise conflict(rt, name)
    return write(store, rt, cur, validation.check_object(rt, patched), sub, params)


def _merged(rt: ResourceType, cur: Obj, new: Obj, sub: str) -> Obj:
    """What an update of ``cur`` to ``new`` stores, before admission: the
    status alone through ``/status``, everything but status otherwise."""
    cur_meta = cur["metadata"]
    if sub == "status":
        merged = copy.deepcopy(cur)
        if "status" in new:
            merged["status"] = new["status"]
        else:
            merged.pop("status", None)
        return merged
    merged = new
    meta = merged["metadata"] = {
        **{k: v for k, v in new["metadata"].items() if k not in SERVER_META},
        **{k: cur_meta[k] for k in SERVER_META if k in cur_meta},
    }
    meta["name"] = cur_meta["name"]
    if "namespace" in cur_meta:
        meta["namespace"] = cur_meta["namespace"]
    if "status" in rt.subresources:
        if "status" in cur:
            merged["status"] = copy.deepcopy(cur["status"])
        else:
            merged.pop("status", None)
    if cur_meta.get("deletionTimestamp"):
        added = set(meta.get("finalizers") or []) - set(cur_meta.get("finalizers") or [])
        if added:
            raise validation.invalid(
                rt,
                cur_meta["name"],
                [
                    "metadata.finalizers: Forbidden: no new finalizers can be added if the "
                    f"object is being deleted, found new finalizers {sorted(added)}"
                ],
            )
    return merged


def write(
    store: ObjectStore, rt: ResourceType, cur: Obj, new: Obj, sub: str, params: Mapping[str, str]
) -> tuple[Obj, list[str]]:
    """Store an update of ``cur`` (main resource or ``/status``)."""
    merged, warnings = validation.admit(rt, cur, _merged(rt, cur, new, sub), params)
    if merged == cur:
        return cur, warnings  # a no-op write: no new version, no event
    cur_meta, meta = cur["metadata"], merged["metadata"]
    if sub != "status" and "generation" in cur_meta and _spec_of(merged) != _spec_of(cur):
        meta["generation"] = int(cur_meta["generation"]) + 1
    meta["resourceVersion"] = str(store.next_rv())
    key = (meta.get("namespace", ""), meta["name"])
    if meta.get("deletionTimestamp") and not meta.get("finalizers"):
        del store.objects[rt.key][key]
        store.emit(rt, "DELETED", cur, merged)
        _removed(store, merged)
        return merged, warnings
    store.objects[rt.key][key] = merged
    if rt.plural == "customresourcedefinitions":
        define(store, merged)
    store.emit(rt, "MODIFIED", cur, merged)
    return merged, warnings


def _spec_of(obj: Mapping[str, Any]) -> Obj:
    """Everything that counts for ``generation``: all but metadata and status."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


# -- delete ------------------------------------------------------------------------


def _check_preconditions(rt: ResourceType, cur: Obj, options: Mapping[str, Any]) -> None:
    pre = options.get("preconditions") or {}
    if pre.get("uid") and pre["uid"] != cur["metadata"]["uid"]:
        raise _uid_conflict(pre["uid"], cur["metadata"]["uid"])
    if pre.get("resourceVersion") and pre["resourceVersion"] != cur["metadata"]["resourceVersion"]:
        raise conflict(rt, cur["metadata"]["name"])


def _mark_deleted(store: ObjectStore, rt: ResourceType, cur: Obj, finalizers: list[str]) -> Obj:
    """Hold a deleted object for its finalizers: set ``deletionTimestamp``
    (once) and the finalizers; the last one's removal deletes it."""
    new = copy.deepcopy(cur)
    meta = new["metadata"]
    meta.setdefault("deletionTimestamp", now())
    meta.setdefault("deletionGracePeriodSeconds", 0)
    meta["finalizers"] = finalizers
    if new == cur:
        return cur
    meta["resourceVersion"] = str(store.next_rv())
    store.objects[rt.key][(meta.get("namespace", ""), meta["name"])] = new
    store.emit(rt, "MODIFIED", cur, new)
    return new


def delete(
    store: ObjectStore,
    rt: ResourceType,
    namespace: str,
    name: str,
    options: Mapping[str, Any],
    params: Mapping[str, str],
) -> tuple[int, Obj]:
    """A DELETE: the HTTP code and body to answer with."""
    cur = store.current(rt, namespace, name)
    _check_preconditions(rt, cur, options)
    policy = str(options.get("propagationPolicy") or params.get("propagationPolicy") or "")
    finalizers = list(cur["metadata"].get("finalizers") or [])
    gc = _GC_FINALIZERS.get(policy)
    if gc is not None and gc not in finalizers:
        finalizers.append(gc)
    if finalizers:
        return 200, store.out(rt, _mark_deleted(store, rt, cur, finalizers))
    gone = copy.deepcopy(cur)
    gone["metadata"]["resourceVersion"] = str(store.next_rv())
    del store.objects[rt.key][(namespace, name)]
    store.emit(rt, "DELETED", cur, gone)
    _removed(store, gone)
    if rt.custom:
        return 200, store.out(rt, gone)
    return 200, {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {
            "name": name,
            "group": rt.group,
            "kind": rt.plural,
            "uid": cur["metadata"]["uid"],
        },
    }


def delete_collection(
    store: ObjectStore, rt: ResourceType, namespace: str, params: Mapping[str, str]
) -> Obj:
    flt = store.filter(namespace, params)
    for (ns, name), obj in sorted(store.objects[rt.key].items()):
        if flt.matches(obj):
            delete(store, rt, ns, name, {}, params)
    return store.listing(rt, namespace, {})


def _removed(store: ObjectStore, obj: Obj) -> None:
    """After ``obj`` is gone: stop serving a deleted CRD's resource. Its
    dependents stay: garbage collection is not the API server's job."""
    if obj.get("kind") == "CustomResourceDefinition":
        spec = obj.get("spec") or {}
        names = spec.get("names") or {}
        store.unregister(str(spec.get("group")), str(names.get("plural")))
