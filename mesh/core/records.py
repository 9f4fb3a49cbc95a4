"""The records kept in etcd, as small frozen dataclasses with explicit JSON.

One key per record (DESIGN.md §4)::

    <prefix>/registry/<model_id>      ModelRecord
    <prefix>/vmodels/<vmodel_id>      VModelRecord
    <prefix>/instances/<instance_id>  InstanceRecord (under the node's lease)

The JSON form is spelled out field by field rather than derived with
``dataclasses.asdict`` so that renaming a Python attribute can never silently
change what is stored; unknown JSON fields are ignored so that an older node
can read a newer node's record. Records are values: every change builds a new
record (``with_copy``, ``without_copy``...), and writers store it with a
compare-and-set on the key's mod revision.

Times are integer milliseconds since the Unix epoch.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import sys
from collections.abc import Mapping
from typing import Any

from mesh.core import errors


class CopyState(enum.StrEnum):
    """The state of one copy of a model on one instance."""

    LOADING = "LOADING"
    LOADED = "LOADED"


class ModelStatus(enum.StrEnum):
    """A model's cluster-wide status, with ModelMesh's names and meanings."""

    NOT_FOUND = "NOT_FOUND"
    NOT_LOADED = "NOT_LOADED"
    LOADING = "LOADING"
    LOADED = "LOADED"
    LOADING_FAILED = "LOADING_FAILED"


@dataclasses.dataclass(frozen=True)
class CopyInfo:
    """One copy of a model on one instance."""

    state: CopyState
    """Whether the copy is still loading or ready to serve."""
    since_ms: int
    """When the copy entered ``state``."""


@dataclasses.dataclass(frozen=True)
class FailureInfo:
    """The last failed load of a model on one instance."""

    time_ms: int
    """When the load failed; failures older than the expiry are ignored."""
    message: str
    """The runtime's (or puller's) own message."""


@dataclasses.dataclass(frozen=True)
class ModelRecord:
    """A registered concrete model: where its files are and where it is loaded."""

    model_type: str
    """The model format (``sklearn``, ``xgboost``...), which picks the runtime."""
    path: str
    """Where the files are, relative to the storage (a folder or file)."""
    storage_key: str = ""
    """Which storage configuration to fetch from; empty for local files."""
    storage_params: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Overrides of the storage configuration's fields."""
    schema_path: str = ""
    """Optional path of a schema file next to the model."""
    runtime: str = ""
    """The runtime the model is pinned to (label ``rt:<runtime>``); empty: any
    runtime serving its type."""
    copies: Mapping[str, CopyInfo] = dataclasses.field(default_factory=dict)
    """Instance id → the copy held there."""
    failures: Mapping[str, FailureInfo] = dataclasses.field(default_factory=dict)
    """Instance id → the last failed load there."""
    last_used_ms: int = 0
    """When the model last served a request anywhere (coarse: written lazily)."""
    size_bytes: int = 0
    """The size a loaded copy really takes, once measured; 0 until then."""
    auto_delete: bool = False
    """Delete the model when the last vmodel stops pointing at it."""
    registered_ms: int = 0
    """When the model was registered."""
    min_copies: int = 0
    """Copies kept loaded even without traffic (0: none, load on demand)."""
    max_copies: int = 0
    """Most copies the mesh adds for load (0: as many as there are nodes)."""
    last_node: str = ""
    """The node whose copy went last (evicted or unloaded): a new copy goes
    back there when it has room (:func:`mesh.core.placement.choose_node`)."""
    disk_copies: tuple[str, ...] = ()
    """Instances whose disk tier holds the model's files (placement prefers
    them: a load there skips the pull)."""

    def with_disk_copy(self, instance_id: str, held: bool) -> ModelRecord:
        """This record with ``instance_id``'s disk holding the files or not."""
        if (instance_id in self.disk_copies) == held:
            return self
        others = tuple(i for i in self.disk_copies if i != instance_id)
        return dataclasses.replace(
            self, disk_copies=tuple(sorted((*others, instance_id))) if held else others
        )

    def with_copy(self, instance_id: str, copy: CopyInfo) -> ModelRecord:
        """This record with ``copy`` on ``instance_id`` (a load ends a failure)."""
        failures = {k: v for k, v in self.failures.items() if k != instance_id}
        return dataclasses.replace(
            self, copies={**self.copies, instance_id: copy}, failures=failures
        )

    def without_copy(self, instance_id: str) -> ModelRecord:
        """This record with no copy on ``instance_id`` (itself if it had none)."""
        if instance_id not in self.copies:
            return self
        copies = {k: v for k, v in self.copies.items() if k != instance_id}
        return dataclasses.replace(self, copies=copies, last_node=instance_id)

    def with_failure(self, instance_id: str, failure: FailureInfo) -> ModelRecord:
        """This record with no copy on ``instance_id`` and ``failure`` recorded there."""
        copies = {k: v for k, v in self.copies.items() if k != instance_id}
        return dataclasses.replace(
            self, copies=copies, failures={**self.failures, instance_id: failure}
        )

    def same_source(self, other: ModelRecord) -> bool:
        """Whether both records load the same files the same way."""
        return (
            self.model_type == other.model_type
            and self.path == other.path
            and self.storage_key == other.storage_key
            and dict(self.storage_params) == dict(other.storage_params)
            and self.schema_path == other.schema_path
            and self.runtime == other.runtime
        )

    def to_json(self) -> bytes:
        return _dump(
            {
                "type": self.model_type,
                "path": self.path,
                "storage_key": self.storage_key,
                "storage_params": dict(self.storage_params),
                "schema_path": self.schema_path,
                "runtime": self.runtime,
                "copies": {
                    k: {"state": c.state.value, "since": c.since_ms} for k, c in self.copies.items()
                },
                "failures": {
                    k: {"time": f.time_ms, "message": f.message} for k, f in self.failures.items()
                },
                "last_used": self.last_used_ms,
                "size": self.size_bytes,
                "auto_delete": self.auto_delete,
                "registered": self.registered_ms,
                "min_copies": self.min_copies,
                "max_copies": self.max_copies,
                "last_node": self.last_node,
                **({"disk": list(self.disk_copies)} if self.disk_copies else {}),
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> ModelRecord:
        d = _load(data, "ModelRecord")
        try:
            return cls(
                model_type=str(d["type"]),
                path=str(d.get("path", "")),
                storage_key=str(d.get("storage_key", "")),
                storage_params={str(k): str(v) for k, v in d.get("storage_params", {}).items()},
                schema_path=str(d.get("schema_path", "")),
                runtime=str(d.get("runtime", "")),
                copies={
                    str(k): CopyInfo(CopyState(c["state"]), int(c["since"]))
                    for k, c in d.get("copies", {}).items()
                },
                failures={
                    str(k): FailureInfo(int(f["time"]), str(f["message"]))
                    for k, f in d.get("failures", {}).items()
                },
                last_used_ms=int(d.get("last_used", 0)),
                size_bytes=int(d.get("size", 0)),
                auto_delete=bool(d.get("auto_delete", False)),
                registered_ms=int(d.get("registered", 0)),
                min_copies=int(d.get("min_copies", 0)),
                max_copies=int(d.get("max_copies", 0)),
                last_node=str(d.get("last_node", "")),
                disk_copies=tuple(str(i) for i in d.get("disk", ())),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise errors.InvalidRequest(f"malformed ModelRecord: {e!r}") from e


@dataclasses.dataclass(frozen=True)
class VModelRecord:
    """A vmodel (a Predictor's name): a stable alias for a concrete model id.

    Requests go to ``active_model``. When the target changes, the active model
    keeps serving until the target is loaded, then the alias moves.
    """

    active_model: str
    """The concrete model id requests are routed to now."""
    target_model: str
    """The concrete model id the alias is moving to (equal when settled)."""
    owner: str = ""
    """Who manages this vmodel (e.g. ``predictor``); empty for anyone."""
    failed: bool = False
    """The target failed to load, so the transition is stuck."""
    canary_percent: int | None = None
    """While a canary rollout holds the transition: the share of requests
    (0-100) the loaded target takes from the active model
    (:mod:`mesh.core.traffic_split`); ``None``: no canary, the alias moves
    once the target is loaded."""
    transformer: str = ""
    """A concrete model of user code run around the predictor: an inference
    call goes through its preprocess, then the predictor, then its
    postprocess (:mod:`router.chains`); empty: none."""
    explainer: str = ""
    """A concrete model that answers the vmodel's ``explain`` calls by
    calling the predictor through the mesh; empty: none."""

    @property
    def transitioning(self) -> bool:
        return self.active_model != self.target_model

    def to_json(self) -> bytes:
        out: dict[str, object] = {
            "owner": self.owner,
            "active": self.active_model,
            "target": self.target_model,
            "failed": self.failed,
        }
        if self.canary_percent is not None:
            out["canary"] = self.canary_percent
        if self.transformer:
            out["transformer"] = self.transformer
        if self.explainer:
            out["explainer"] = self.explainer
        return _dump(out)

    @classmethod
    def from_json(cls, data: bytes) -> VModelRecord:
        d = _load(data, "VModelRecord")
        try:
            return cls(
                active_model=str(d["active"]),
                target_model=str(d["target"]),
                owner=str(d.get("owner", "")),
                failed=bool(d.get("failed", False)),
                canary_percent=None if d.get("canary") is None else int(d["canary"]),
                transformer=str(d.get("transformer", "")),
                explainer=str(d.get("explainer", "")),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise errors.InvalidRequest(f"malformed VModelRecord: {e!r}") from e


@dataclasses.dataclass(frozen=True)
class InstanceRecord:
    """One mesh node as the rest of the cluster sees it."""

    endpoint: str
    """``host:port`` of the node's gRPC service, for peers to forward to."""
    capacity_bytes: int
    """How many bytes of models this node's runtime may hold."""
    used_bytes: int = 0
    """Bytes taken by the models loaded (or loading) here."""
    lru_time_ms: int = 0
    """Last use of the least recently used model here (0: none loaded)."""
    victim_rank: float | None = None
    """How dear the copy this node would evict first is
    (:func:`mesh.core.eviction.victim_rank`); ``None`` when nothing here may
    be evicted now, or the node does not say (an older version)."""
    model_count: int = 0
    """Models loaded or loading here."""
    loading_slots: int = 1
    """How many loads this node runs at once."""
    in_flight_loads: int = 0
    """Loads running now."""
    rpm: int = 0
    """Requests served in the last minute."""
    labels: tuple[str, ...] = ()
    """What this node can serve (``mt:sklearn``, ``rt:mlserver``...)."""
    zone: str = ""
    """Failure zone, for spreading copies."""
    version: str = ""
    """The meshserve version the node runs."""
    start_ms: int = 0
    """When the node started."""
    shutting_down: bool = False
    """The node is draining: place nothing new here."""

    @property
    def free_bytes(self) -> int:
        return max(0, self.capacity_bytes - self.used_bytes)

    def to_json(self) -> bytes:
        return _dump(
            {
                "endpoint": self.endpoint,
                "capacity": self.capacity_bytes,
                "used": self.used_bytes,
                "lru": self.lru_time_ms,
                "victim": _finite(self.victim_rank),
                "count": self.model_count,
                "loading_slots": self.loading_slots,
                "loading": self.in_flight_loads,
                "rpm": self.rpm,
                "labels": list(self.labels),
                "zone": self.zone,
                "version": self.version,
                "start": self.start_ms,
                "shutting_down": self.shutting_down,
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> InstanceRecord:
        d = _load(data, "InstanceRecord")
        try:
            return cls(
                endpoint=str(d["endpoint"]),
                capacity_bytes=int(d["capacity"]),
                used_bytes=int(d.get("used", 0)),
                lru_time_ms=int(d.get("lru", 0)),
                victim_rank=None if d.get("victim") is None else float(d["victim"]),
                model_count=int(d.get("count", 0)),
                loading_slots=int(d.get("loading_slots", 1)),
                in_flight_loads=int(d.get("loading", 0)),
                rpm=int(d.get("rpm", 0)),
                labels=tuple(str(x) for x in d.get("labels", [])),
                zone=str(d.get("zone", "")),
                version=str(d.get("version", "")),
                start_ms=int(d.get("start", 0)),
                shutting_down=bool(d.get("shutting_down", False)),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise errors.InvalidRequest(f"malformed InstanceRecord: {e!r}") from e


def model_status(record: ModelRecord | None, now_ms: int, failure_expiry_ms: int) -> ModelStatus:
    """A model's cluster-wide status from its record (ModelMesh's rules).

    Any ready copy makes it ``LOADED``; else any loading copy ``LOADING``; else an
    unexpired failure ``LOADING_FAILED``; else ``NOT_LOADED``.
    """
    if record is None:
        return ModelStatus.NOT_FOUND
    states = {c.state for c in record.copies.values()}
    if CopyState.LOADED in states:
        return ModelStatus.LOADED
    if CopyState.LOADING in states:
        return ModelStatus.LOADING
    if recent_failures(record, now_ms, failure_expiry_ms):
        return ModelStatus.LOADING_FAILED
    return ModelStatus.NOT_LOADED


def recent_failures(
    record: ModelRecord, now_ms: int, failure_expiry_ms: int
) -> dict[str, FailureInfo]:
    """The failures not yet expired, by instance."""
    return {k: f for k, f in record.failures.items() if now_ms - f.time_ms < failure_expiry_ms}


def _finite(x: float | None) -> float | None:
    """``x`` as JSON can hold it: -inf (a rank below every other) becomes
    the lowest finite float, which still ranks below every other."""
    return None if x is None else max(x, -sys.float_info.max)


def _dump(d: Mapping[str, Any]) -> bytes:
    return json.dumps(d, separators=(",", ":"), sort_keys=True).encode()


def _load(data: bytes, what: str) -> dict[str, Any]:
    try:
        d = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise errors.InvalidRequest(f"malformed {what}: {e}") from e
    if not isinstance(d, dict):
        raise errors.InvalidRequest(f"malformed {what}: not a JSON object")
    return d
