"""Runtimes scale to zero when nothing needs them and back when something
does, and get a HorizontalPodAutoscaler while their annotations ask for one.

The stand-in API server, kopf running the real controller (its scale-to-zero
grace period short, 0.5 s), a real etcd and a mesh node. The Predictors here
name formats only these tests' runtimes list: what matters is which runtime
they need, not whether they load.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import kubernetes
import pytest

from kube import controller_settings, runtime_deployment, runtime_replicas
from tests.integration import controller_fixtures as cf

HPAS = ("autoscaling", "v2")


@pytest.fixture(scope="module")
def scaling_ctl(
    settings_for: Callable[..., controller_settings.ControllerSettings],
    kube_config: kubernetes.client.Configuration,
) -> Iterator[cf.ControllerThread]:
    config = dataclasses.replace(
        settings_for(), scale_to_zero=runtime_replicas.ScaleToZero(enabled=True, grace_seconds=0.5)
    )
    running = cf.ControllerThread(config, kube_config).start()
    running.wait_ready()
    try:
        yield running
    finally:
        running.stop()


def replicas(kube: cf.Kube, runtime: str) -> int | None:
    d = kube.deployment(runtime_deployment.deployment_name(runtime))
    return None if d is None else int(d["spec"]["replicas"])


def hpa(kube: cf.Kube, runtime: str) -> dict[str, Any] | None:
    return kube.get("horizontalpodautoscalers", runtime_deployment.deployment_name(runtime), *HPAS)


def runtime_for(fmt: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    name = cf.unique_name(fmt)
    doc = cf.runtime_doc(name, [{"name": fmt, "autoSelect": True}])
    doc["metadata"]["annotations"] = annotations or {}
    return doc


def test_a_runtime_nothing_needs_goes_to_zero_and_comes_back_for_a_predictor(
    scaling_ctl: cf.ControllerThread, kube: cf.Kube, models: dict[str, Any]
) -> None:
    fmt = cf.unique_name("fmt-a")
    doc = kube.create("servingruntimes", runtime_for(fmt))
    rt = doc["metadata"]["name"]
    cf.wait_for(lambda: replicas(kube, rt) == 0 or None, what="scaled to zero")
    pred = cf.unique_name("needs-it")
    kube.create("predictors", cf.predictor_doc(pred, models["iris"].folder, fmt))
    cf.wait_for(lambda: replicas(kube, rt) == 1 or None, what="scaled back to one")
    kube.delete("predictors", pred)
    cf.wait_for(lambda: replicas(kube, rt) == 0 or None, what="zero again once it is gone")


def test_an_hpa_follows_the_runtimes_annotations_and_its_scale_to_zero(
    scaling_ctl: cf.ControllerThread, kube: cf.Kube, models: dict[str, Any]
) -> None:
    fmt = cf.unique_name("fmt-b")
    notes = {
        runtime_replicas.AUTOSCALER_CLASS: "hpa",
        runtime_replicas.MIN_SCALE: "2",
        runtime_replicas.MAX_SCALE: "4",
        runtime_replicas.METRICS: "memory",
        runtime_replicas.TARGET_UTILIZATION: "70",
    }
    pred = cf.unique_name("keeps-it-up")
    kube.create("predictors", cf.predictor_doc(pred, models["iris"].folder, fmt))
    rt = kube.create("servingruntimes", runtime_for(fmt, notes))["metadata"]["name"]
    made = cf.wait_for(lambda: hpa(kube, rt), what="HPA created")
    assert (made["spec"]["minReplicas"], made["spec"]["maxReplicas"]) == (2, 4)
    metric = made["spec"]["metrics"][0]["resource"]
    assert metric == {"name": "memory", "target": {"type": "Utilization", "averageUtilization": 70}}
    assert made["spec"]["scaleTargetRef"]["name"] == runtime_deployment.deployment_name(rt)
    cf.wait_for(lambda: replicas(kube, rt) == 2 or None, what="the HPA's minimum")
    # The annotation goes: so does the HPA, and the runtime's own count returns.
    kube.patch(
        "servingruntimes",
        rt,
        {"metadata": {"annotations": {runtime_replicas.AUTOSCALER_CLASS: None}}},
    )
    cf.wait_for(lambda: hpa(kube, rt) is None or None, what="HPA deleted")
    cf.wait_for(lambda: replicas(kube, rt) == 1 or None, what="back to its own count")
    # Back on, then nothing needs the runtime: zero pods and no HPA.
    kube.patch("servingruntimes", rt, {"metadata": {"annotations": notes}})
    cf.wait_for(lambda: hpa(kube, rt), what="HPA again")
    kube.delete("predictors", pred)
    cf.wait_for(lambda: replicas(kube, rt) == 0 or None, what="scaled to zero")
    assert hpa(kube, rt) is None  # deleted before the Deployment was scaled down
