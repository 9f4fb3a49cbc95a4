"""Discovery: ``/version``, ``/api``, ``/apis`` and the per-group resource lists.

Clients ask these before anything else: kopf to learn whether a resource is
namespaced and has ``/status``, the official client's dynamic API and
kubectl to map a kind to its path. The answers are built from the kinds the
store serves, the built-in ones and those of every CustomResourceDefinition
created so far, so a CRD created (or deleted) at run time shows up (or goes)
as it does on a real server.
"""

from __future__ import annotations

from tests.kube.apiserver.api_status import Obj
from tests.kube.apiserver.object_store import ObjectStore

VERSION_INFO: Obj = {
    "major": "1",
    "minor": "33",
    "gitVersion": "v1.33.0-meshserve-fake",
    "platform": "linux/amd64",
}


def api_versions(port: int) -> Obj:
    """``/api``: the core group's versions."""
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{port}"}
        ],
    }


def groups(store: ObjectStore) -> list[Obj]:
    """Every named group, its versions and the preferred one (a CRD's storage version)."""
    by_group: dict[str, list[str]] = {}
    preferred: dict[str, str] = {}
    for group, version in store.types:
        if group:
            by_group.setdefault(group, []).append(version)
    for crd in store.objects.get(
        ("apiextensions.k8s.io", "customresourcedefinitions"), {}
    ).values():
        spec = crd.get("spec") or {}
        for v in spec.get("versions") or []:
            if v.get("storage"):
                preferred[str(spec.get("group"))] = str(v["name"])
    out = []
    for group in sorted(by_group):
        versions = sorted(by_group[group])
        pref = preferred.get(group, versions[0])
        out.append(
            {
                "name": group,
                "versions": [{"groupVersion": f"{group}/{v}", "version": v} for v in versions],
                "preferredVersion": {"groupVersion": f"{group}/{pref}", "version": pref},
            }
        )
    return out


def group_list(store: ObjectStore) -> Obj:
    """``/apis``."""
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups(store)}


def group(store: ObjectStore, name: str) -> Obj | None:
    """``/apis/<group>``, or ``None`` if no such group is served."""
    for g in groups(store):
        if g["name"] == name:
            return {"kind": "APIGroup", "apiVersion": "v1", **g}
    return None


def resource_list(store: ObjectStore, group_name: str, version: str) -> Obj:
    """``/api/v1`` or ``/apis/<group>/<version>``: its resources and subresources."""
    types = store.types[(group_name, version)]
    resources = [r for rt in sorted(types.values(), key=lambda t: t.plural) for r in rt.discovery()]
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group_name}/{version}" if group_name else version,
        "resources": resources,
    }
