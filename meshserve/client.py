"""The CLI's side of the management API: Predictor YAML in, tables out.

``meshserve predictor apply|delete|list|status``, ``meshserve models`` and
``meshserve nodes`` talk to any node's :8033 with the same ``mmesh.ModelMesh``
calls a ModelMesh Serving controller makes (a Predictor becomes a vmodel
owned by ``predictor`` whose target is a concrete model registered for
auto-delete), plus the read-only ``MeshAdmin`` listings.
"""

from __future__ import annotations

import dataclasses
import datetime
import pathlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import yaml

from kube import model_resources, predictor
from kube import predictor_status as kube_status
from mesh.core import clock, errors, records
from mesh.edges import tls
from mesh.edges.proto import model_mesh_pb2 as pb2


def tls_credentials(
    ca: pathlib.Path | None, cert: pathlib.Path | None = None, key: pathlib.Path | None = None
) -> Any:
    """Channel credentials for a node serving TLS (``None`` without a CA):
    trust ``ca``, and present ``cert``/``key`` to a node that requires client
    certificates. A file that cannot be read is an error naming the option."""
    if ca is None:
        if cert or key:
            raise errors.ConfigError("--tls-cert and --tls-key need --tls-ca")
        return None
    if (cert is None) != (key is None):
        raise errors.ConfigError("--tls-cert and --tls-key go together")
    plan = tls.ChannelPlan(
        roots=(tls.FileRef("--tls-ca", ca),),
        cert=tls.FileRef("--tls-cert", cert) if cert else None,
        key=tls.FileRef("--tls-key", key) if key else None,
    )
    return tls.grpc_channel_credentials(tls.load_channel(plan))


def load_predictors(text: str) -> list[predictor.PredictorSpec]:
    """Every Predictor and InferenceService in a YAML file (several documents
    allowed; an InferenceService with or without the ModelMesh annotation)."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        raise errors.InvalidRequest(f"not valid YAML: {e}") from None
    if not docs:
        raise errors.InvalidRequest("the file holds no Predictor or InferenceService")
    return [model_resources.parse(d) for d in docs]


# -- presentation -----------------------------------------------------------------


def human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def age(ms: int, now_ms: int | None = None) -> str:
    if ms <= 0:
        return "-"
    now_ms = now_ms if now_ms is not None else clock.now_ms()
    s = max(0, (now_ms - ms) // 1000)
    if s < 60:
        return f"{s}s ago"
    if s < 3600:
        return f"{s // 60}m ago"
    if s < 86400:
        return f"{s // 3600}h ago"
    return datetime.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M")


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    rows = [list(headers)] + [list(r) for r in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def models_table(models: Sequence[Any]) -> str:
    """One row per copy (or per model without copies): the placement table."""
    rows = []
    for m in models:
        size = human_bytes(m.size_bytes) if m.size_bytes else "-"
        used = age(m.last_used_ms)
        if not m.copies:
            rows.append([m.model_id, m.status, "-", size, used])
        for c in m.copies:
            rows.append([m.model_id, c.state, c.instance, size, used])
        for f in m.failures:
            if m.status == "LOADING_FAILED":
                rows.append([m.model_id, "FAILED", f.instance, "-", f.message[:80]])
    return table(["MODEL", "STATE", "NODE", "SIZE", "LAST USED"], rows)


def nodes_table(instances: Sequence[Any]) -> str:
    rows = [
        [
            i.instance_id,
            i.endpoint,
            human_bytes(i.capacity_bytes),
            human_bytes(i.used_bytes),
            str(i.model_count),
            age(i.lru_time_ms).removesuffix(" ago") if i.lru_time_ms else "-",
            str(i.rpm),
        ]
        for i in instances
    ]
    return table(["NODE", "ENDPOINT", "CAPACITY", "USED", "MODELS", "LRU AGE", "RPM"], rows)


def vmodels_table(vmodels: Sequence[Any]) -> str:
    rows = [
        [v.vmodel_id, v.status, v.active_model_status, v.active_model_id]
        + ([v.target_model_id] if v.target_model_id != v.active_model_id else ["-"])
        for v in vmodels
    ]
    return table(["PREDICTOR", "STATUS", "MODEL STATE", "ACTIVE MODEL", "TARGET MODEL"], rows)


@dataclasses.dataclass(frozen=True)
class PredictorStatus:
    """A Predictor's status in ModelMesh Serving's terms."""

    available: bool
    transition_status: str
    active_model_state: str
    target_model_state: str
    active_model_id: str
    target_model_id: str
    last_failure: str


_TRANSITIONS: Mapping[int, kube_status.TransitionStatus] = {
    pb2.VModelStatusInfo.DEFINED: kube_status.TransitionStatus.UP_TO_DATE,
    pb2.VModelStatusInfo.TRANSITIONING: kube_status.TransitionStatus.IN_PROGRESS,
    pb2.VModelStatusInfo.TRANSITION_FAILED: kube_status.TransitionStatus.BLOCKED_BY_FAILED_LOAD,
}
"""A vmodel's status in the gRPC API → its Predictor's ``transitionStatus``."""


def _model_state(status: int, unknown: str) -> str:
    """A model's status in the gRPC API as a Predictor's model state, through
    :data:`kube.predictor_status.MODEL_STATES` (the API's status names are the
    placement table's). A model the mesh does not know has no state here: only
    the controller knows that one is about to be registered (``Pending``)."""
    if status == pb2.ModelStatusInfo.NOT_FOUND:
        return kube_status.ModelState.NONE
    try:
        table_status = records.ModelStatus(pb2.ModelStatusInfo.ModelStatus.Name(status))
    except ValueError:
        return unknown
    return kube_status.MODEL_STATES[table_status]


def predictor_status(v: Any) -> PredictorStatus:
    """ModelMesh Serving's Predictor status fields from a VModelStatusInfo."""
    active = _model_state(v.activeModelStatus.status, "Unknown")
    errors_ = list(v.activeModelStatus.errors) + list(v.targetModelStatus.errors)
    return PredictorStatus(
        available=active in (kube_status.ModelState.LOADED, kube_status.ModelState.STANDBY),
        transition_status=_TRANSITIONS.get(v.status, "Unknown"),
        active_model_state=active,
        target_model_state=_model_state(v.targetModelStatus.status, "")
        if v.HasField("targetModelStatus")
        else "",
        active_model_id=v.activeModelId,
        target_model_id=v.targetModelId,
        last_failure=errors_[0] if errors_ else "",
    )
