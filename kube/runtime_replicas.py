"""How many pods each runtime gets: zero when nothing needs it, else its own
count, or a HorizontalPodAutoscaler's range.

ModelMesh Serving's rules, so its settings and annotations mean the same here:

- **Scale to zero** (its ``ScaleToZero`` setting, on by default): a runtime
  that no Predictor or InferenceService could be served by gets 0 replicas,
  once it has been unneeded for the grace period (60 s), and its replicas
  back the moment one arrives. A runtime counts as needed by a resource when
  :func:`kube.runtime_selection.support` lists it for the resource's spec.
- **HPA**: a ServingRuntime annotated ``serving.kserve.io/autoscalerClass:
  hpa`` gets a ``HorizontalPodAutoscaler`` (``autoscaling/v2``) on its
  Deployment, between ``serving.kserve.io/min-scale`` (default 1) and
  ``max-scale`` (default the minimum), on the resource named by
  ``serving.kserve.io/metrics`` (``cpu`` or ``memory``) at
  ``serving.kserve.io/targetUtilizationPercentage`` (default 80). The HPA goes
  when the annotation goes, and while the runtime is scaled to zero (an HPA
  cannot hold a Deployment at zero). While an HPA is in charge the controller
  leaves the Deployment's replica count to it.
- **A floor for pinned models** (beyond ModelMesh Serving): a runtime never
  gets fewer pods than the copies its resources pin with ``minCopies`` need,
  both in count (copies of one model sit on different pods) and in bytes
  (their measured sizes over a pod's model capacity), so neither a
  scale-down nor an HPA evicts a minimum.

Pure: runtimes and times in, counts and manifests out. The controller's
:mod:`kube.runtime_sync` applies them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from kube import predictor, runtime_deployment, runtime_selection
from mesh.core import errors

AUTOSCALER_CLASS = "serving.kserve.io/autoscalerClass"
HPA_CLASS = "hpa"
MIN_SCALE = "serving.kserve.io/min-scale"
MAX_SCALE = "serving.kserve.io/max-scale"
METRICS = "serving.kserve.io/metrics"
TARGET_UTILIZATION = "serving.kserve.io/targetUtilizationPercentage"
HPA_METRICS = ("cpu", "memory")
DEFAULT_UTILIZATION = 80


@dataclasses.dataclass(frozen=True)
class ScaleToZero:
    """ModelMesh Serving's ``ScaleToZero`` setting (``MESHSERVE_SCALE_TO_ZERO``,
    ``MESHSERVE_SCALE_TO_ZERO_GRACE``)."""

    enabled: bool = True
    grace_seconds: float = 60.0


@dataclasses.dataclass(frozen=True)
class HpaSpec:
    """What a runtime's autoscaler annotations ask for."""

    min_replicas: int = 1
    max_replicas: int = 1
    metric: str = "cpu"
    target_utilization: int = DEFAULT_UTILIZATION


def hpa_spec(rt: runtime_selection.Runtime) -> HpaSpec | None:
    """The HPA a runtime's annotations ask for; ``None`` without
    ``autoscalerClass: hpa``. Raises :class:`mesh.core.errors.InvalidRequest`
    naming a malformed annotation."""
    notes = rt.annotations
    if notes.get(AUTOSCALER_CLASS) != HPA_CLASS:
        return None

    def whole(key: str, default: int, least: int) -> int:
        text = str(notes.get(key, "")).strip()
        if not text:
            return default
        if not text.isdigit() or int(text) < least:
            raise errors.InvalidRequest(
                f"{rt.kind} {rt.name}: annotation {key} must be a whole number "
                f"of at least {least}, not {text!r}"
            )
        return int(text)

    low = whole(MIN_SCALE, 1, 1)
    high = max(low, whole(MAX_SCALE, low, 1))
    metric = str(notes.get(METRICS, "") or "cpu").strip()
    if metric not in HPA_METRICS:
        raise errors.InvalidRequest(
            f"{rt.kind} {rt.name}: annotation {METRICS} must be one of "
            f"{', '.join(HPA_METRICS)}, not {metric!r}"
        )
    return HpaSpec(low, high, metric, whole(TARGET_UTILIZATION, DEFAULT_UTILIZATION, 1))


@dataclasses.dataclass(frozen=True)
class ReplicaPlan:
    """What the runtimes' pods should be now."""

    replicas: Mapping[str, int]
    """Runtime name → its Deployment's replica count."""
    hpas: Mapping[str, HpaSpec]
    """Runtime name → its HPA (absent: the runtime has none now)."""
    idle: Mapping[str, int]
    """Runtime name → since when no resource needs it (ms)."""
    wake_at_ms: int | None
    """When the next grace period ends: plan again then."""
    problems: tuple[str, ...] = ()
    """Malformed autoscaler annotations (those runtimes get no HPA)."""


def pinned_floor(
    rt: runtime_selection.Runtime,
    specs: Iterable[predictor.PredictorSpec],
    sizes: Mapping[str, int],
    capacity: int | None,
) -> int:
    """The fewest pods that hold every copy pinned (``min_copies``) by the
    ``specs`` this runtime can serve: as many as the most copies of one model,
    and enough for their bytes (``sizes`` by model id; unmeasured: 0) when a
    pod's ``capacity`` is known."""
    pinned = [
        (s.min_copies, sizes.get(s.model_id, 0))
        for s in specs
        if s.min_copies and rt.name in runtime_selection.support(s, {rt.name: rt}).runtimes
    ]
    if not pinned:
        return 0
    by_count = max(copies for copies, _ in pinned)
    total = sum(copies * size for copies, size in pinned)
    by_bytes = -(-total // capacity) if capacity else 0
    return max(by_count, by_bytes)


def plan(
    runtimes: Mapping[str, runtime_selection.Runtime],
    specs: Iterable[predictor.PredictorSpec],
    *,
    previous_idle: Mapping[str, int],
    now_ms: int,
    policy: ScaleToZero,
    default_replicas: int,
    sizes: Mapping[str, int] | None = None,
) -> ReplicaPlan:
    """The replicas and HPAs of the usable ``runtimes``, given the specs of
    the namespace's resources and since when each runtime was idle before.
    An idle runtime is idle since ``previous_idle``'s time, else since now (a
    controller that starts gives every idle runtime the whole grace period).
    ``sizes``: the measured size of each model id, for :func:`pinned_floor`."""
    specs = list(specs)
    usable = {name: rt for name, rt in runtimes.items() if rt.usable}
    needed: set[str] = set()
    for spec in specs:
        for model in (spec, spec.transformer, spec.explainer):  # a chain's models too
            if model is not None:
                needed.update(runtime_selection.support(model, usable).runtimes)
    idle = {n: previous_idle.get(n, now_ms) for n in usable if n not in needed}
    grace_ms = int(policy.grace_seconds * 1000)
    counts: dict[str, int] = {}
    hpas: dict[str, HpaSpec] = {}
    problems: list[str] = []
    pending: list[int] = []
    for name, rt in usable.items():
        since = idle.get(name)
        if policy.enabled and since is not None and now_ms - since >= grace_ms:
            counts[name] = 0
            continue
        if policy.enabled and since is not None:
            pending.append(since + grace_ms)
        floor = pinned_floor(rt, specs, sizes or {}, runtime_deployment.node_capacity(rt))
        counts[name], hpa, problem = _running_count(rt, floor, default_replicas)
        if hpa is not None:
            hpas[name] = hpa
        if problem:
            problems.append(problem)
    return ReplicaPlan(counts, hpas, idle, min(pending) if pending else None, tuple(problems))


def _running_count(
    rt: runtime_selection.Runtime, floor: int, default_replicas: int
) -> tuple[int, HpaSpec | None, str]:
    """A runtime's count while it runs, its HPA (raised to the ``floor``),
    and the problem with its autoscaler annotations, if any."""
    try:
        hpa = hpa_spec(rt)
    except errors.InvalidRequest as e:
        hpa, problem = None, e.message
    else:
        problem = ""
    if hpa is not None:
        low = max(hpa.min_replicas, floor)
        hpa = dataclasses.replace(hpa, min_replicas=low, max_replicas=max(low, hpa.max_replicas))
        return low, hpa, problem
    own = rt.replicas if rt.replicas is not None else default_replicas
    return max(own, floor), None, problem


def hpa_manifest(
    rt: runtime_selection.Runtime, spec: HpaSpec, opts: runtime_deployment.DeploymentOptions
) -> dict[str, Any]:
    """The ``autoscaling/v2`` HorizontalPodAutoscaler of a runtime's Deployment."""
    name = runtime_deployment.deployment_name(rt.name)
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {
            "name": name,
            "namespace": opts.namespace,
            "labels": {
                **runtime_deployment.selector_labels(rt),
                runtime_deployment.LABEL_MANAGED_BY: runtime_deployment.MANAGED_BY,
            },
        },
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": spec.min_replicas,
            "maxReplicas": spec.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": spec.metric,
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": spec.target_utilization,
                        },
                    },
                }
            ],
        },
    }
