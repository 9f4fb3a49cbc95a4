"""The kinds of object the stand-in serves, as discovery describes them.

A client finds out what a server serves before it asks for anything: kopf
and ``kubectl`` read ``/apis`` to learn whether a resource is namespaced and
has a ``/status`` subresource, and the official client's dynamic API does the
same. So every kind here is one :class:`ResourceType`, whether built in
(:data:`BUILTINS`: the few kinds the controller and the tests touch) or
defined at run time by a CustomResourceDefinition
(:func:`crd_resource_types`), and the paths, the storage and discovery all
read the same record.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from tests.kube.apiserver.api_status import Obj

VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


@dataclasses.dataclass(frozen=True)
class ResourceType:
    """One resource of one group version, as discovery lists it."""

    group: str
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: frozenset[str] = frozenset()
    schema: Mapping[str, Any] | None = None
    """The ``openAPIV3Schema`` of a custom resource."""
    custom: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> tuple[str, str]:
        """Where objects are stored: every version of a resource shares it."""
        return (self.group, self.plural)

    @property
    def qualified(self) -> str:
        """``plural.group`` as error messages name a resource."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def discovery(self) -> list[Obj]:
        main: Obj = {
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": list(VERBS),
        }
        if self.short_names:
            main["shortNames"] = list(self.short_names)
        if self.categories:
            main["categories"] = list(self.categories)
        subs = [
            {
                "name": f"{self.plural}/{sub}",
                "singularName": "",
                "namespaced": self.namespaced,
                "kind": self.kind,
                "verbs": ["get", "patch", "update"],
            }
            for sub in sorted(self.subresources)
        ]
        return [main, *subs]


def _builtin(
    group: str,
    plural: str,
    kind: str,
    namespaced: bool = True,
    short: tuple[str, ...] = (),
    status: bool = False,
    version: str = "v1",
) -> ResourceType:
    return ResourceType(
        group=group,
        version=version,
        plural=plural,
        singular=kind.lower(),
        kind=kind,
        namespaced=namespaced,
        short_names=short,
        subresources=frozenset({"status"}) if status else frozenset(),
    )


BUILTINS: tuple[ResourceType, ...] = (
    _builtin("", "namespaces", "Namespace", namespaced=False, short=("ns",), status=True),
    _builtin("", "configmaps", "ConfigMap", short=("cm",)),
    _builtin("", "secrets", "Secret"),
    _builtin("", "services", "Service", short=("svc",), status=True),
    _builtin("", "serviceaccounts", "ServiceAccount", short=("sa",)),
    _builtin("", "events", "Event", short=("ev",)),
    _builtin("apps", "deployments", "Deployment", short=("deploy",), status=True),
    _builtin(
        "autoscaling",
        "horizontalpodautoscalers",
        "HorizontalPodAutoscaler",
        short=("hpa",),
        status=True,
        version="v2",
    ),
    _builtin("coordination.k8s.io", "leases", "Lease"),
    _builtin(
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        namespaced=False,
        short=("crd", "crds"),
        status=True,
    ),
)


def crd_resource_types(crd: Mapping[str, Any]) -> list[ResourceType]:
    """The served versions of a CustomResourceDefinition, as resource types."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    out = []
    for v in spec.get("versions") or []:
        if not v.get("served", True):
            continue
        subresources = frozenset((v.get("subresources") or {}).keys())
        out.append(
            ResourceType(
                group=str(spec["group"]),
                version=str(v["name"]),
                plural=str(names["plural"]),
                singular=str(names.get("singular") or str(names["kind"]).lower()),
                kind=str(names["kind"]),
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                subresources=subresources & {"status", "scale"},
                schema=(v.get("schema") or {}).get("openAPIV3Schema"),
                custom=True,
            )
        )
    return out
