"""A runtime's pods: zero once nothing has needed it for the grace period,
back the moment something does, and an HPA's range where its annotations
ask for one (ModelMesh Serving's settings and annotations)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from kube import predictor, runtime_deployment, runtime_replicas, runtime_selection
from mesh.core import errors

GRACE = runtime_replicas.ScaleToZero(enabled=True, grace_seconds=60)


def runtime(name: str, fmt: str, annotations: dict[str, str] | None = None, **spec: Any) -> Any:
    return runtime_selection.parse_runtime(
        {
            "kind": "ServingRuntime",
            "metadata": {"name": name, "annotations": annotations or {}},
            "spec": {
                "multiModel": True,
                "supportedModelFormats": [{"name": fmt, "autoSelect": True}],
                "containers": [{"name": "mesh-node", "image": "meshserve:latest"}],
                **spec,
            },
        }
    )


def spec(model_type: str) -> predictor.PredictorSpec:
    return predictor.PredictorSpec(name="m", model_type=model_type, path="x")


RUNTIMES = {"sk": runtime("sk", "sklearn"), "xgb": runtime("xgb", "xgboost", replicas=3)}


def plan(specs: list[predictor.PredictorSpec], idle: dict[str, int], now: int, **kw: Any) -> Any:
    return runtime_replicas.plan(
        kw.pop("runtimes", RUNTIMES),
        specs,
        previous_idle=idle,
        now_ms=now,
        policy=kw.pop("policy", GRACE),
        default_replicas=1,
    )


def test_a_needed_runtime_keeps_its_replicas_and_an_idle_one_keeps_them_through_the_grace() -> None:
    p = plan([spec("sklearn")], {}, now=1_000)
    assert p.replicas == {"sk": 1, "xgb": 3}
    assert p.idle == {"xgb": 1_000}
    assert p.wake_at_ms == 61_000


def test_an_idle_runtime_goes_to_zero_when_its_grace_ends_and_comes_back_when_needed() -> None:
    later = plan([spec("sklearn")], {"xgb": 1_000}, now=61_000)
    assert later.replicas == {"sk": 1, "xgb": 0}
    assert later.wake_at_ms is None
    back = plan([spec("sklearn"), spec("xgboost")], later.idle, now=62_000)
    assert back.replicas == {"sk": 1, "xgb": 3}
    assert back.idle == {}


def test_a_runtime_serving_only_a_chains_transformer_is_needed_too() -> None:
    runtimes = {"sk": runtime("sk", "sklearn"), "py": runtime("py", "transformer")}
    chained = dataclasses.replace(spec("sklearn"), transformer=spec("transformer"))
    p = plan([chained], {"py": 1_000}, now=61_000, runtimes=runtimes)
    assert p.replicas == {"sk": 1, "py": 1}
    assert plan([spec("sklearn")], {"py": 1_000}, now=61_000, runtimes=runtimes).replicas == {
        "sk": 1,
        "py": 0,
    }


def test_with_scale_to_zero_off_nothing_goes_to_zero() -> None:
    off = runtime_replicas.ScaleToZero(enabled=False)
    p = plan([], {"sk": 0, "xgb": 0}, now=10**9, policy=off)
    assert p.replicas == {"sk": 1, "xgb": 3}
    assert p.wake_at_ms is None


def test_an_hpa_runtime_starts_at_its_minimum_and_loses_its_hpa_at_zero() -> None:
    notes = {
        runtime_replicas.AUTOSCALER_CLASS: "hpa",
        runtime_replicas.MIN_SCALE: "2",
        runtime_replicas.MAX_SCALE: "5",
        runtime_replicas.METRICS: "memory",
        runtime_replicas.TARGET_UTILIZATION: "70",
    }
    rts = {"sk": runtime("sk", "sklearn", notes)}
    p = plan([spec("sklearn")], {}, now=0, runtimes=rts)
    assert p.replicas == {"sk": 2}
    assert p.hpas == {"sk": runtime_replicas.HpaSpec(2, 5, "memory", 70)}
    idle = plan([], {"sk": 0}, now=60_000, runtimes=rts)
    assert idle.replicas == {"sk": 0} and idle.hpas == {}


def test_hpa_defaults_are_modelmesh_servings() -> None:
    rt = runtime("sk", "sklearn", {runtime_replicas.AUTOSCALER_CLASS: "hpa"})
    assert runtime_replicas.hpa_spec(rt) == runtime_replicas.HpaSpec(1, 1, "cpu", 80)
    assert runtime_replicas.hpa_spec(runtime("sk", "sklearn")) is None


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (runtime_replicas.MIN_SCALE, "0"),
        (runtime_replicas.MAX_SCALE, "many"),
        (runtime_replicas.METRICS, "gpu"),
        (runtime_replicas.TARGET_UTILIZATION, "-5"),
    ],
)
def test_a_malformed_autoscaler_annotation_is_named_and_means_no_hpa(key: str, value: str) -> None:
    rt = runtime("sk", "sklearn", {runtime_replicas.AUTOSCALER_CLASS: "hpa", key: value})
    with pytest.raises(errors.InvalidRequest, match=key):
        runtime_replicas.hpa_spec(rt)
    p = plan([spec("sklearn")], {}, now=0, runtimes={"sk": rt})
    assert p.hpas == {} and p.replicas == {"sk": 1}
    assert len(p.problems) == 1 and key in p.problems[0]


def test_the_hpa_targets_the_runtimes_deployment() -> None:
    rt = runtime("sk", "sklearn", {runtime_replicas.AUTOSCALER_CLASS: "hpa"})
    opts = runtime_deployment.DeploymentOptions(namespace="ns")
    hpa = runtime_replicas.hpa_manifest(rt, runtime_replicas.HpaSpec(1, 4, "cpu", 80), opts)
    name = runtime_deployment.deployment_name("sk")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["metadata"]["name"] == name and hpa["metadata"]["namespace"] == "ns"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": name,
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 4)
    target = hpa["spec"]["metrics"][0]["resource"]
    assert target == {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}


def pinned(model_type: str, copies: int, name: str = "m") -> predictor.PredictorSpec:
    return predictor.PredictorSpec(name=name, model_type=model_type, path="x", min_copies=copies)


def test_pinned_copies_raise_the_floor_by_count_and_by_bytes() -> None:
    sized = runtime(
        "sk",
        "sklearn",
        containers=[
            {"name": "mesh-node", "image": "meshserve:latest"},
            {"name": "mlserver", "resources": {"limits": {"memory": "1Gi"}}},
        ],
    )
    a, b = pinned("sklearn", 3, "a"), pinned("sklearn", 2, "b")
    gib = 1 << 30
    # Three copies of one model sit on three pods, whatever their size.
    p = plan([a], {}, now=0, runtimes={"sk": sized})
    assert p.replicas == {"sk": 3}
    # 3 × 0.5 GiB + 2 × 0.75 GiB = 3 GiB of pinned copies: 3 pods of 1 GiB.
    sizes = {a.model_id: gib // 2, b.model_id: 3 * gib // 4}
    p = runtime_replicas.plan(
        {"sk": sized},
        [a, b],
        previous_idle={},
        now_ms=0,
        policy=GRACE,
        default_replicas=1,
        sizes=sizes,
    )
    assert p.replicas == {"sk": 3}
    sizes[b.model_id] = gib  # 3.5 GiB: a fourth pod
    p = runtime_replicas.plan(
        {"sk": sized},
        [a, b],
        previous_idle={},
        now_ms=0,
        policy=GRACE,
        default_replicas=1,
        sizes=sizes,
    )
    assert p.replicas == {"sk": 4}


def test_an_hpa_never_goes_below_the_pinned_floor() -> None:
    notes = {runtime_replicas.AUTOSCALER_CLASS: "hpa", runtime_replicas.MAX_SCALE: "2"}
    rts = {"sk": runtime("sk", "sklearn", notes)}
    p = plan([pinned("sklearn", 3)], {}, now=0, runtimes=rts)
    assert p.hpas["sk"].min_replicas == 3 and p.hpas["sk"].max_replicas == 3
    assert p.replicas == {"sk": 3}
    unpinned = plan([pinned("xgboost", 3)], {}, now=0, runtimes=rts)
    assert unpinned.hpas["sk"].min_replicas == 1  # the pinned model is another runtime's
