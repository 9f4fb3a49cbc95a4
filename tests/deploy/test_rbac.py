"""The controller's RBAC is exactly what `meshserve controller` uses: every
verb it needs, and nothing more.

CONTROLLER_NEEDS is the contract, one row per kind of API call the controller
makes (README.md, "Kubernetes"). The RBAC the rendered tree binds to the
controller's ServiceAccount is expanded into single grants and compared with it
both ways, for the base and both overlays.
"""

from __future__ import annotations

import pytest

from tests.deploy import manifests
from tests.deploy.manifests import CONTROLLER_SA, GROUP, NAMESPACE, Grant, Rendered, find, one

CLUSTER = "*"
"""Scope of a ClusterRoleBinding grant."""

# (scope, API group, resource or subresource, resourceName or "") -> verbs
CONTROLLER_NEEDS: dict[tuple[str, str, str, str], frozenset[str]] = {
    # kopf lists and watches Predictors and patches its finalizer and progress
    # annotations onto them; the status goes through the status subresource.
    # (These are the requests tests/integration/test_controller.py records.)
    (NAMESPACE, GROUP, "predictors", ""): frozenset({"list", "watch", "patch"}),
    (NAMESPACE, GROUP, "predictors/status", ""): frozenset({"patch"}),
    (NAMESPACE, GROUP, "inferenceservices", ""): frozenset({"list", "watch", "patch"}),
    (NAMESPACE, GROUP, "inferenceservices/status", ""): frozenset({"patch"}),
    # Runtimes are only read: one Deployment is kept per runtime.
    (NAMESPACE, GROUP, "servingruntimes", ""): frozenset({"list", "watch"}),
    # ClusterServingRuntimes are cluster-scoped: only a ClusterRole reaches them.
    (CLUSTER, GROUP, "clusterservingruntimes", ""): frozenset({"list", "watch"}),
    # The runtime Deployments it creates, keeps in step with the runtime spec
    # (update), watches, and deletes when a runtime is disabled.
    (NAMESPACE, "apps", "deployments", ""): frozenset(
        {"create", "list", "watch", "update", "delete"}
    ),
    # The HPAs of runtimes annotated for one, kept in step and deleted with
    # the annotation (listed on each pass, never watched).
    (NAMESPACE, "autoscaling", "horizontalpodautoscalers", ""): frozenset(
        {"create", "list", "update", "delete"}
    ),
    # Events about what it did (core v1 events).
    (NAMESPACE, "", "events", ""): frozenset({"create"}),
}

# Deliberately absent (see deploy/base/rbac.yaml): coordination.k8s.io leases
# and kopf.dev peerings (election is through etcd, kopf runs standalone),
# apiextensions CRDs and namespaces (kopf's scanning is off), pods, services,
# and Secrets (nodes read the mounted storage-config, the controller never does).


def needed() -> set[Grant]:
    return {
        Grant(scope, group, resource, name, verb)
        for (scope, group, resource, name), verbs in CONTROLLER_NEEDS.items()
        for verb in verbs
    }


@pytest.mark.parametrize("folder", ["base", "overlays/quickstart", "overlays/production"])
def test_the_controller_may_do_exactly_what_it_uses(
    rendered: dict[str, Rendered], folder: str
) -> None:
    granted = manifests.controller_grants(rendered[folder].objects, NAMESPACE, CONTROLLER_SA)
    missing = sorted(str(g) for g in needed() - granted)
    extra = sorted(str(g) for g in granted - needed())
    assert missing == [], f"deploy/{folder}: the controller would be refused these"
    assert extra == [], f"deploy/{folder}: granted but never used"


@pytest.mark.parametrize("folder", ["base", "overlays/quickstart", "overlays/production"])
def test_no_rule_uses_wildcards_and_only_the_controller_is_bound(
    rendered: dict[str, Rendered], folder: str
) -> None:
    objs = rendered[folder].objects
    for role in [*find(objs, "Role"), *find(objs, "ClusterRole")]:
        for rule in role["rules"]:
            for key in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule.get(key, []), f"{manifests.ident(role)}: {key} *"
    for binding in [*find(objs, "RoleBinding"), *find(objs, "ClusterRoleBinding")]:
        subjects = [(s["kind"], s.get("namespace"), s["name"]) for s in binding["subjects"]]
        assert subjects == [("ServiceAccount", NAMESPACE, CONTROLLER_SA)], manifests.ident(binding)


def test_the_controller_deployment_runs_as_the_bound_service_account(
    rendered: dict[str, Rendered],
) -> None:
    objs = rendered["overlays/quickstart"].objects
    deployment = one(objs, "Deployment", "meshserve-controller")
    assert deployment["metadata"]["namespace"] == NAMESPACE
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == CONTROLLER_SA
    sa = one(objs, "ServiceAccount", CONTROLLER_SA)
    assert sa["metadata"]["namespace"] == NAMESPACE
    # The other pods of the tree call no Kubernetes API and get no role.
    for other in find(objs, "Deployment"):
        if other is not deployment:
            assert "serviceAccountName" not in other["spec"]["template"]["spec"]


def test_a_missing_and_an_extra_verb_are_both_reported(rendered: dict[str, Rendered]) -> None:
    """The comparison is not vacuous."""
    objs = [dict(o) for o in rendered["base"].objects]
    role = one(objs, "Role", "meshserve-controller")
    rules = [dict(r) for r in role["rules"]]
    rules[0] = {**rules[0], "verbs": [v for v in rules[0]["verbs"] if v != "watch"] + ["delete"]}
    objs[objs.index(role)] = {**role, "rules": rules}
    granted = manifests.controller_grants(objs, NAMESPACE, CONTROLLER_SA)
    assert Grant(NAMESPACE, GROUP, "predictors", "", "watch") in needed() - granted
    assert Grant(NAMESPACE, GROUP, "predictors", "", "delete") in granted - needed()
