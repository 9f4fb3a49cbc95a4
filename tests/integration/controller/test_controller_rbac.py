"""The RBAC in ``deploy/base/rbac.yaml`` is exactly what the controller uses.

The controller is run through a tour of its duties against the stand-in API
server, which counts every request in RBAC's terms: runtime Deployments
created, rewritten and deleted (by the controller itself: the stand-in runs
no garbage collector), a Predictor registered, loaded and deleted through its
finalizer, one no runtime serves (status and a Warning event). Every request
kopf and the controller made must be allowed by the Role and ClusterRole,
and every verb they grant must have been used.
"""

from __future__ import annotations

import pathlib
from typing import Any

import yaml

from kube import api_client, inference_service, runtime_deployment, runtime_replicas
from meshserve import samples
from tests.integration import controller_fixtures as cf
from tests.kube import crds
from tests.kube.apiserver import FakeApiServer, Request


def _tour(kube: cf.Kube, models: dict[str, samples.Sample]) -> None:
    """Every duty of the controller, once."""
    runtime = cf.unique_name("tour-runtime")
    kube.create("servingruntimes", cf.runtime_doc(runtime, [{"name": "sklearn"}]))
    deployment = runtime_deployment.deployment_name(runtime)
    cf.wait_for(lambda: kube.deployment(deployment), what="Deployment created")
    formats = [{"name": "sklearn"}, {"name": "xgboost"}]
    kube.patch("servingruntimes", runtime, {"spec": {"supportedModelFormats": formats}})
    cf.wait_for(
        lambda: "mt:xgboost" in str(kube.deployment(deployment)), what="Deployment rewritten"
    )
    hpa = ("horizontalpodautoscalers", deployment, "autoscaling", "v2")
    notes = {runtime_replicas.AUTOSCALER_CLASS: "hpa", runtime_replicas.MAX_SCALE: "2"}
    kube.patch("servingruntimes", runtime, {"metadata": {"annotations": notes}})
    cf.wait_for(lambda: kube.get(*hpa), what="HPA created")
    notes[runtime_replicas.MAX_SCALE] = "3"
    kube.patch("servingruntimes", runtime, {"metadata": {"annotations": notes}})
    cf.wait_for(lambda: (kube.get(*hpa) or {}).get("spec", {}).get("maxReplicas") == 3 or None)
    kube.patch("servingruntimes", runtime, {"spec": {"disabled": True}})
    cf.wait_for(lambda: kube.deployment(deployment) is None, what="Deployment deleted")
    cf.wait_for(lambda: kube.get(*hpa) is None or None, what="HPA deleted")

    served = cf.unique_name("tour-served")
    kube.create("predictors", cf.predictor_doc(served, models["iris"].folder))
    cf.wait_for(lambda: cf.loaded(kube, served), what="Loaded")
    kube.delete("predictors", served)
    cf.wait_for(lambda: kube.get("predictors", served) is None, what="Predictor released")
    isvc = cf.unique_name("tour-isvc")
    kube.create(inference_service.PLURAL, cf.isvc_doc(isvc, cf.sklearn_model(models["iris"])))
    cf.wait_for(lambda: cf.isvc_ready(kube, isvc), what="InferenceService Ready")
    kube.delete(inference_service.PLURAL, isvc, inference_service.GROUP, inference_service.VERSION)
    cf.wait_for(lambda: isvc not in kube.names_of(inference_service.PLURAL) or None, what="gone")
    nobody = cf.unique_name("tour-nobody")
    kube.create("predictors", cf.predictor_doc(nobody, models["iris"].folder, "no-such-format"))
    cf.wait_for(lambda: kube.status(nobody).get("lastFailureInfo"), what="InvalidSpec written")


def _rules() -> dict[str, list[dict[str, Any]]]:
    path = pathlib.Path(crds.REPO_ROOT, "deploy", "base", "rbac.yaml")
    rules: dict[str, list[dict[str, Any]]] = {"Role": [], "ClusterRole": []}
    for doc in yaml.safe_load_all(path.read_text()):
        if doc and doc.get("kind") in rules:
            rules[doc["kind"]].extend(doc.get("rules") or [])
    return rules


def test_the_rbac_in_deploy_allows_every_request_the_controller_makes_and_no_more(
    ctl: list[cf.ControllerThread],
    kube: cf.Kube,
    apiserver: FakeApiServer,
    models: dict[str, samples.Sample],
) -> None:
    _tour(kube, models)
    rules = _rules()

    def allowed(request: Request) -> bool:
        usable = rules["ClusterRole"] + (rules["Role"] if request.namespaced else [])
        return any(
            request.group in r.get("apiGroups", [])
            and request.resource in r.get("resources", [])
            and request.verb in r.get("verbs", [])
            and not r.get("resourceNames")
            for r in usable
        )

    made = {
        r
        for r in apiserver.call(lambda: list(apiserver.requests))
        if r.agent in ("kopf", api_client.USER_AGENT)
    }
    assert made, "no request from the controller was seen"
    denied = sorted(
        f"{r.verb} {r.group or 'core'}/{r.resource}{'' if r.namespaced else ' (cluster-wide)'}"
        for r in made
        if not allowed(r)
    )
    assert not denied, denied
    used = {(r.group, r.resource, r.verb) for r in made}
    granted = {
        (group, resource, verb)
        for kind in ("Role", "ClusterRole")
        for r in rules[kind]
        for group in r.get("apiGroups", [])
        for resource in r.get("resources", [])
        for verb in r.get("verbs", [])
    }
    unused = sorted(granted - used)
    assert not unused, f"granted but never used: {unused}"
