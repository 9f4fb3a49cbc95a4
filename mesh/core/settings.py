"""Typed settings of a node, read once from the environment.

One frozen dataclass per concern, each field documented, each with its own
``from_env``; :func:`from_env` composes them into :class:`Settings`. Variable
names are KServe ModelMesh's where ModelMesh has one (``KV_STORE``,
``MM_KVSTORE_PREFIX``, ``MM_SVC_GRPC_PORT``, ``MM_SVC_GRPC_MAX_MSG_SIZE``,
``MM_LABELS``...) and ``MESHSERVE_*`` otherwise. TLS and the payload log have
their own modules (:mod:`mesh.core.tls_settings`,
:mod:`mesh.core.payload_log_settings`), and every concern reads its variables
through one :class:`mesh.core.env_reader.EnvReader`. Pure: the environment is a
mapping, so tests build settings without touching ``os.environ``, and a
malformed value raises :class:`mesh.core.errors.ConfigError` naming the variable.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Mapping

from mesh.core import disk_cache_settings, env_reader, errors, payload_log_settings, tls_settings
from mesh.core.env_reader import parse_endpoint, parse_size

# parse_size and parse_endpoint are mesh.core.env_reader's, public here too for their callers.
__all__ = [
    "EVICTION_RULES",
    "CacheSettings",
    "KVSettings",
    "NodeSettings",
    "RoutingSettings",
    "RuntimeSettings",
    "ScalingSettings",
    "ServiceSettings",
    "Settings",
    "from_env",
    "parse_endpoint",
    "parse_kv_store",
    "parse_size",
]


@dataclasses.dataclass(frozen=True)
class KVSettings:
    """Where the placement table lives."""

    endpoints: tuple[str, ...] = ("127.0.0.1:2379",)
    """etcd ``host:port`` endpoints (``KV_STORE=etcd:host:port[,host:port]``)."""
    prefix: str = "mm"
    """Key prefix of every record (``MM_KVSTORE_PREFIX``)."""
    lease_ttl_seconds: int = 10
    """TTL of the node's lease: its instance record vanishes this long after
    the node dies (``MESHSERVE_LEASE_TTL``)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> KVSettings:
        """From ``KV_STORE``, ``MM_KVSTORE_PREFIX`` and ``MESHSERVE_LEASE_TTL``;
        a ``KV_STORE`` naming an ``etcd_connection`` file must have been read
        first (by :func:`mesh.edges.process_env.completed`)."""
        read = env_reader.EnvReader(env)
        kv_store = read.text("KV_STORE")
        if kv_store and kv_store.startswith("etcd:/") and not kv_store.startswith("etcd://"):
            raise errors.ConfigError(
                f"KV_STORE: {kv_store!r} names a file; read it first "
                "(mesh.edges.process_env.completed)"
            )
        return cls(
            endpoints=parse_kv_store(kv_store) if kv_store else cls.endpoints,
            prefix=(read.text("MM_KVSTORE_PREFIX") or cls.prefix).strip("/"),
            lease_ttl_seconds=read.integer("MESHSERVE_LEASE_TTL", cls.lease_ttl_seconds),
        )


def parse_kv_store(text: str) -> tuple[str, ...]:
    """Endpoints from ModelMesh's ``KV_STORE=etcd:host:port[,host:port]``."""
    kind, sep, rest = text.partition(":")
    if kind != "etcd" or not sep:
        raise errors.ConfigError(f"KV_STORE: {text!r} must look like etcd:host:port")
    endpoints = tuple(e.strip() for e in rest.split(",") if e.strip())
    if not endpoints:
        raise errors.ConfigError("KV_STORE: no etcd endpoint given")
    bare = tuple(e.removeprefix("http://").removeprefix("https://") for e in endpoints)
    for e in bare:
        parse_endpoint(e, "KV_STORE")
    return bare


@dataclasses.dataclass(frozen=True)
class ServiceSettings:
    """The node's own gRPC service."""

    host: str = "0.0.0.0"
    """Address to listen on (``MESHSERVE_HOST``)."""
    grpc_port: int = 8033
    """Port of the V2 data plane and the management API (``MM_SVC_GRPC_PORT``)."""
    max_message_bytes: int = 16 * 1024 * 1024
    """Largest request or response on any hop (``MM_SVC_GRPC_MAX_MSG_SIZE``)."""
    advertise_host: str = "127.0.0.1"
    """Host peers use to reach this node (``MESHSERVE_ADVERTISE_HOST``)."""
    rest_port: int = 8008
    """Port of the V2 REST endpoint (``REST_PROXY_LISTEN_PORT``, ModelMesh
    Serving's name for its REST proxy's port): 0 picks a free port, -1 turns
    REST off."""
    metrics_port: int = 2112
    """Port of the Prometheus metrics (``MESHSERVE_METRICS_PORT``; ModelMesh's
    port): 0 picks a free port, -1 turns them off."""
    probe_port: int = 8089
    """Port of ``/live`` and ``/ready`` (``MESHSERVE_PROBE_PORT``): 0 picks a
    free port, -1 turns them off."""
    metrics_per_model: bool = False
    """Label per-model histograms with the model id
    (``MESHSERVE_METRICS_PER_MODEL=true``): one series per model."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ServiceSettings:
        """From ``MM_SVC_GRPC_*``, ``REST_PROXY_LISTEN_PORT`` and ``MESHSERVE_*``."""
        read = env_reader.EnvReader(env)
        service = cls(
            grpc_port=read.port("MM_SVC_GRPC_PORT", cls.grpc_port),
            rest_port=read.optional_port("REST_PROXY_LISTEN_PORT", cls.rest_port),
            host=read.text("MESHSERVE_HOST") or cls.host,
            max_message_bytes=read.size("MM_SVC_GRPC_MAX_MSG_SIZE", cls.max_message_bytes),
            advertise_host=read.text("MESHSERVE_ADVERTISE_HOST") or cls.advertise_host,
            metrics_port=read.optional_port("MESHSERVE_METRICS_PORT", cls.metrics_port),
            probe_port=read.optional_port("MESHSERVE_PROBE_PORT", cls.probe_port),
            metrics_per_model=read.flag("MESHSERVE_METRICS_PER_MODEL"),
        )
        if service.max_message_bytes <= 0:
            raise errors.ConfigError("MM_SVC_GRPC_MAX_MSG_SIZE: must be more than 0 bytes")
        return service


EVICTION_RULES = ("popularity", "lru")
"""The values of ``MESHSERVE_EVICTION``."""


@dataclasses.dataclass(frozen=True)
class CacheSettings:
    """How the node sizes and evicts models."""

    capacity_bytes: int = 0
    """Bytes of models this node may hold (``MESHSERVE_CAPACITY``, accepts
    ``512Mi``, ``2G``...). 0 (the default): measured from the runtime's
    memory when it starts — its GPU's memory for a runtime whose models live
    on the GPU, else the container's memory limit (or the machine's) — less
    the buffer and the runtime's own idle footprint."""
    capacity_buffer_fraction: float = 0.1
    """Share of the measured memory kept free for the runtime's working memory
    (``MESHSERVE_CAPACITY_BUFFER``); unused when the capacity is configured."""
    size_multiplier: float = 1.25
    """Predicted size of a model before its first load: bytes on disk × this
    (``MESHSERVE_SIZE_MULTIPLIER``)."""
    min_model_size_bytes: int = 1024 * 1024
    """Floor of any predicted or measured model size, so tiny files still
    cost something (``MESHSERVE_MIN_MODEL_SIZE``)."""
    load_timeout_seconds: float = 120.0
    """Longest a single load may take before it counts as failed
    (``MESHSERVE_LOAD_TIMEOUT``)."""
    failure_expiry_seconds: float = 15 * 60.0
    """How long a failed load is remembered (``MESHSERVE_FAILURE_EXPIRY``):
    the node that failed is not asked again, and once three nodes (or every
    node that could) have failed, requests fail fast with the recorded
    message. Registering the model again clears its failures."""
    churn_threshold_seconds: float = 0.0
    """A model used within this many seconds is never evicted to make room
    for another (``MESHSERVE_CHURN_THRESHOLD``); 0 turns the guard off. With
    it on, a request that would need such an eviction fails with
    RESOURCE_EXHAUSTED instead of thrashing the cache."""
    last_used_write_interval_seconds: float = 5.0
    """How often a model's last-used time is written back to etcd at most
    (``MESHSERVE_LAST_USED_INTERVAL``): the request path never waits on it."""
    eviction: str = "popularity"
    """Which models make room (``MESHSERVE_EVICTION``): ``popularity`` (the
    default) evicts the fewest recent requests per byte first, ``lru`` the
    least recently used first, as KServe ModelMesh does. Extra copies go
    first either way; see :mod:`mesh.core.eviction`."""
    popularity_half_life_seconds: float = 120.0
    """How fast past requests stop counting toward a model's popularity
    (``MESHSERVE_POPULARITY_HALF_LIFE``): a request counts half as much as
    one this many seconds later. Shorter follows shifts in popularity
    faster; longer tells steady favourites apart better. Two minutes: on
    the ``peers`` traces (a new favourite set every 70 s) 600 s made 1.2-1.6
    × the loads of plain LRU after a shift; on 1,000 models at steady
    popularity it keeps 0.87-0.97 of the offline optimum's hits (600 s:
    0.89-0.98)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> CacheSettings:
        """From ``MESHSERVE_CAPACITY`` and the other ``MESHSERVE_*`` of the cache."""
        read = env_reader.EnvReader(env)
        cache = cls(
            capacity_bytes=read.size("MESHSERVE_CAPACITY", cls.capacity_bytes),
            capacity_buffer_fraction=read.number(
                "MESHSERVE_CAPACITY_BUFFER", cls.capacity_buffer_fraction
            ),
            size_multiplier=read.number("MESHSERVE_SIZE_MULTIPLIER", cls.size_multiplier),
            min_model_size_bytes=read.size("MESHSERVE_MIN_MODEL_SIZE", cls.min_model_size_bytes),
            load_timeout_seconds=read.number("MESHSERVE_LOAD_TIMEOUT", cls.load_timeout_seconds),
            failure_expiry_seconds=read.number(
                "MESHSERVE_FAILURE_EXPIRY", cls.failure_expiry_seconds
            ),
            last_used_write_interval_seconds=read.number(
                "MESHSERVE_LAST_USED_INTERVAL", cls.last_used_write_interval_seconds
            ),
            churn_threshold_seconds=read.number(
                "MESHSERVE_CHURN_THRESHOLD", cls.churn_threshold_seconds
            ),
            eviction=(read.text("MESHSERVE_EVICTION") or cls.eviction).lower(),
            popularity_half_life_seconds=read.number(
                "MESHSERVE_POPULARITY_HALF_LIFE", cls.popularity_half_life_seconds
            ),
        )
        if cache.eviction not in EVICTION_RULES:
            raise errors.ConfigError(
                f"MESHSERVE_EVICTION: {cache.eviction!r} is not one of {', '.join(EVICTION_RULES)}"
            )
        if cache.popularity_half_life_seconds <= 0:
            raise errors.ConfigError("MESHSERVE_POPULARITY_HALF_LIFE: must be more than 0 seconds")
        if cache.capacity_bytes < 0:
            raise errors.ConfigError("MESHSERVE_CAPACITY: must not be negative (0: measure it)")
        if not 0 <= cache.capacity_buffer_fraction < 1:
            raise errors.ConfigError("MESHSERVE_CAPACITY_BUFFER: must be a fraction from 0 to 1")
        return cache


@dataclasses.dataclass(frozen=True)
class RoutingSettings:
    """How a request finds a copy across the mesh."""

    max_attempts: int = 6
    """Most routing decisions one request may take (a peer gone, a load
    claimed elsewhere, a failed load each cost one) (``MESHSERVE_ROUTE_ATTEMPTS``)."""
    default_deadline_seconds: float = 120.0
    """Deadline of a request whose client set none (``MESHSERVE_DEFAULT_DEADLINE``)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RoutingSettings:
        """From ``MESHSERVE_ROUTE_ATTEMPTS`` (at least 1) and ``MESHSERVE_DEFAULT_DEADLINE``."""
        read = env_reader.EnvReader(env)
        return cls(
            max_attempts=max(1, read.integer("MESHSERVE_ROUTE_ATTEMPTS", cls.max_attempts)),
            default_deadline_seconds=read.number(
                "MESHSERVE_DEFAULT_DEADLINE", cls.default_deadline_seconds
            ),
        )


@dataclasses.dataclass(frozen=True)
class ScalingSettings:
    """Extra copies for load, and what a node hands over when it leaves."""

    scale_up_rpm: int = 600
    """A copy serving more requests per minute than this gets a sibling on
    another node, up to the model's maximum (``MESHSERVE_SCALE_UP_RPM``)."""
    check_interval_seconds: float = 5.0
    """How often request rates and minimum copies are checked
    (``MESHSERVE_SCALE_INTERVAL``)."""
    handover_window_seconds: float = 600.0
    """At shutdown, models used within this window whose only copy is here
    are loaded on another node first (``MESHSERVE_HANDOVER_WINDOW``)."""
    drain_timeout_seconds: float = 30.0
    """Longest a shutting-down node spends handing models over
    (``MESHSERVE_DRAIN_TIMEOUT``)."""
    janitor_interval_seconds: float = 5.0
    """How often the leader prunes dead nodes' copies and expired failures
    (``MESHSERVE_JANITOR_INTERVAL``)."""
    dead_node_grace_seconds: float = 5.0
    """How long after a node's lease expired its copies are pruned
    (``MESHSERVE_DEAD_NODE_GRACE``)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ScalingSettings:
        """From ``MESHSERVE_SCALE_*``, ``MESHSERVE_HANDOVER_WINDOW`` and the like."""
        read = env_reader.EnvReader(env)
        return cls(
            scale_up_rpm=read.integer("MESHSERVE_SCALE_UP_RPM", cls.scale_up_rpm),
            check_interval_seconds=read.number(
                "MESHSERVE_SCALE_INTERVAL", cls.check_interval_seconds
            ),
            handover_window_seconds=read.number(
                "MESHSERVE_HANDOVER_WINDOW", cls.handover_window_seconds
            ),
            drain_timeout_seconds=read.number("MESHSERVE_DRAIN_TIMEOUT", cls.drain_timeout_seconds),
            janitor_interval_seconds=read.number(
                "MESHSERVE_JANITOR_INTERVAL", cls.janitor_interval_seconds
            ),
            dead_node_grace_seconds=read.number(
                "MESHSERVE_DEAD_NODE_GRACE", cls.dead_node_grace_seconds
            ),
        )


@dataclasses.dataclass(frozen=True)
class NodeSettings:
    """Who this node is and where its files go."""

    instance_id: str = "localhost"
    """Unique id of this node in the mesh (``MM_INSTANCE_ID``; a process
    started by ``meshserve`` defaults it to the host's name)."""
    labels: tuple[str, ...] = ()
    """Extra labels (``MM_LABELS``, comma-separated)."""
    data_dir: pathlib.Path = pathlib.Path(".data")
    """Where model copies and logs go (``MESHSERVE_DATA_DIR``)."""
    models_root: pathlib.Path = pathlib.Path(".")
    """Base of relative local storage paths (``MESHSERVE_MODELS_ROOT``)."""
    storage_config_dir: pathlib.Path | None = None
    """The mounted ``storage-config`` Secret: a folder with one JSON file per
    storage key, in KServe ModelMesh Serving's format
    (``MESHSERVE_STORAGE_CONFIG``). Files are re-read when they change.
    ``None``: models load from local files (and ``s3://``, ``gs://``,
    ``https://`` paths without credentials) only."""

    @property
    def model_dir(self) -> pathlib.Path:
        """The runtime's model repository: one folder per loaded model."""
        return self.data_dir / "models"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> NodeSettings:
        """From ``MM_INSTANCE_ID``, ``MM_LABELS`` and ``MESHSERVE_*`` folders."""
        read = env_reader.EnvReader(env)
        storage_config = read.text("MESHSERVE_STORAGE_CONFIG")
        return cls(
            instance_id=read.text("MM_INSTANCE_ID") or cls.instance_id,
            labels=read.items("MM_LABELS"),
            data_dir=pathlib.Path(read.text("MESHSERVE_DATA_DIR") or cls.data_dir),
            models_root=pathlib.Path(read.text("MESHSERVE_MODELS_ROOT") or cls.models_root),
            storage_config_dir=pathlib.Path(storage_config) if storage_config else None,
        )


@dataclasses.dataclass(frozen=True)
class RuntimeSettings:
    """The model runtime next to this node."""

    kind: str = "mlserver"
    """Which adapter (``MESHSERVE_RUNTIME``)."""
    endpoint: str = ""
    """``host:port`` of a runtime already running (``MESHSERVE_RUNTIME_ENDPOINT``);
    empty: the node starts its own runtime process."""
    venv: pathlib.Path = pathlib.Path(".runtimes")
    """Folder holding the runtimes' virtual environments
    (``MESHSERVE_RUNTIMES_DIR``), each in ``<venv>/<kind>``."""
    start_timeout_seconds: float = 60.0
    """Longest wait for the runtime to become ready (``MESHSERVE_RUNTIME_START_TIMEOUT``)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RuntimeSettings:
        """From ``MESHSERVE_RUNTIME*``; an endpoint must be ``host:port``."""
        read = env_reader.EnvReader(env)
        endpoint = read.text("MESHSERVE_RUNTIME_ENDPOINT") or ""
        if endpoint:
            parse_endpoint(endpoint, "MESHSERVE_RUNTIME_ENDPOINT")
        return cls(
            kind=read.text("MESHSERVE_RUNTIME") or cls.kind,
            endpoint=endpoint,
            venv=pathlib.Path(read.text("MESHSERVE_RUNTIMES_DIR") or cls.venv),
            start_timeout_seconds=read.number(
                "MESHSERVE_RUNTIME_START_TIMEOUT", cls.start_timeout_seconds
            ),
        )


@dataclasses.dataclass(frozen=True)
class Settings:
    """All of a node's settings."""

    kv: KVSettings = dataclasses.field(default_factory=KVSettings)
    service: ServiceSettings = dataclasses.field(default_factory=ServiceSettings)
    cache: CacheSettings = dataclasses.field(default_factory=CacheSettings)
    node: NodeSettings = dataclasses.field(default_factory=NodeSettings)
    runtime: RuntimeSettings = dataclasses.field(default_factory=RuntimeSettings)
    routing: RoutingSettings = dataclasses.field(default_factory=RoutingSettings)
    scaling: ScalingSettings = dataclasses.field(default_factory=ScalingSettings)
    tls: tls_settings.TLSSettings = dataclasses.field(default_factory=tls_settings.TLSSettings)
    payload_log: payload_log_settings.PayloadLogSettings = dataclasses.field(
        default_factory=payload_log_settings.PayloadLogSettings
    )
    disk_cache: disk_cache_settings.DiskCacheSettings = dataclasses.field(
        default_factory=disk_cache_settings.DiskCacheSettings
    )


def from_env(env: Mapping[str, str]) -> Settings:
    """Settings from an environment mapping; unset variables keep defaults.

    Pure: a ModelMesh ``etcd_connection`` file and the host's name are read
    by :func:`mesh.edges.process_env.completed` before this is called."""
    return Settings(
        kv=KVSettings.from_env(env),
        service=ServiceSettings.from_env(env),
        cache=CacheSettings.from_env(env),
        routing=RoutingSettings.from_env(env),
        scaling=ScalingSettings.from_env(env),
        node=NodeSettings.from_env(env),
        runtime=RuntimeSettings.from_env(env),
        payload_log=payload_log_settings.PayloadLogSettings.from_env(env),
        tls=tls_settings.TLSSettings.from_env(env),
        disk_cache=disk_cache_settings.DiskCacheSettings.from_env(env),
    )
