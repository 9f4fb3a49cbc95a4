"""Typed settings, read once from the environment.

One frozen dataclass per concern, each field documented. Variable names are
KServe ModelMesh's where ModelMesh has one (``KV_STORE``, ``MM_KVSTORE_PREFIX``,
``MM_SVC_GRPC_PORT``, ``MM_SVC_GRPC_MAX_MSG_SIZE``, ``MM_LABELS``...) and
``MESHSERVE_*`` otherwise. :func:`from_env` is pure: it takes the environment
as a mapping, so tests build settings without touching ``os.environ``, and a
malformed value raises :class:`mesh.core.errors.ConfigError` naming the variable.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import pathlib
import re
import urllib.parse
from collections.abc import Mapping

from mesh.core import errors


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
    popularity_half_life_seconds: float = 600.0
    """How fast past requests stop counting toward a model's popularity
    (``MESHSERVE_POPULARITY_HALF_LIFE``): a request counts half as much as
    one this many seconds later. Shorter follows shifts in popularity
    faster; longer tells steady favourites apart better."""


@dataclasses.dataclass(frozen=True)
class RoutingSettings:
    """How a request finds a copy across the mesh."""

    max_attempts: int = 6
    """Most routing decisions one request may take (a peer gone, a load
    claimed elsewhere, a failed load each cost one) (``MESHSERVE_ROUTE_ATTEMPTS``)."""
    default_deadline_seconds: float = 120.0
    """Deadline of a request whose client set none (``MESHSERVE_DEFAULT_DEADLINE``)."""


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


class ClientAuth(enum.Enum):
    """Whether clients of :8033 and :8008 must present a certificate
    (``MM_TLS_CLIENT_AUTH``, ModelMesh's values, any case)."""

    NONE = "none"
    """No client certificate is asked for."""
    OPTIONAL = "optional"
    """The REST port asks for a certificate and checks one that is sent; the
    gRPC port cannot ask without requiring (grpcio offers no such mode), so
    there it is the same as ``none``. The mesh never uses a client's identity,
    so both admit the same callers."""
    REQUIRE = "require"
    """A client without a certificate signed by ``MM_TLS_TRUST_CERT_PATH`` is
    refused during the TLS handshake."""


@dataclasses.dataclass(frozen=True)
class TLSSettings:
    """TLS of the node's ports, of its links to peers, and of its link to etcd.

    With a certificate set, :8033 (gRPC) and :8008 (REST) speak TLS only, and
    this node calls its peers over mutual TLS with the same certificate (as
    ModelMesh Serving does for its internal links). The link to the runtime
    stays plaintext: it never leaves the pod (127.0.0.1). Metrics and probes
    (:2112, :8089) stay plaintext for Prometheus and the kubelet. Files are
    re-read when they change (see :mod:`mesh.edges.tls`).
    """

    key_cert_path: pathlib.Path | None = None
    """PEM certificate (chain) the node presents to clients and, as its client
    certificate, to peers (``MM_TLS_KEY_CERT_PATH``). Unset: no TLS."""
    private_key_path: pathlib.Path | None = None
    """Unencrypted PEM private key of that certificate (``MM_TLS_PRIVATE_KEY_PATH``)."""
    client_auth: ClientAuth = ClientAuth.NONE
    """Whether clients must present a certificate (``MM_TLS_CLIENT_AUTH``)."""
    trust_cert_paths: tuple[pathlib.Path, ...] = ()
    """PEM CA certificates that sign client and peer certificates
    (``MM_TLS_TRUST_CERT_PATH``, comma-separated). Unset: peers are checked
    against ``key_cert_path`` itself, which is right for a self-signed
    certificate or a chain that ends with its CA."""
    peer_server_name: str = ""
    """Name a peer's certificate is checked against
    (``MESHSERVE_TLS_PEER_SERVER_NAME``); empty: the host of the peer's
    advertised endpoint. Set it when certificates name a Service rather than
    pod addresses."""
    reload_interval_seconds: float = 10.0
    """How often the certificate files are checked for changes
    (``MESHSERVE_TLS_RELOAD_INTERVAL``)."""
    etcd_ca_path: pathlib.Path | None = None
    """PEM CA certificate of etcd's server certificate (``MESHSERVE_ETCD_CA_PATH``).
    Set: the node talks to etcd over TLS. Read at start."""
    etcd_cert_path: pathlib.Path | None = None
    """Client certificate for etcd's ``--client-cert-auth`` (``MESHSERVE_ETCD_CERT_PATH``)."""
    etcd_key_path: pathlib.Path | None = None
    """Private key of that certificate (``MESHSERVE_ETCD_KEY_PATH``)."""
    etcd_server_name: str = ""
    """Name etcd's certificate is checked against (``MESHSERVE_ETCD_SERVER_NAME``);
    empty: the endpoint's host (one endpoint), required with several."""

    @property
    def enabled(self) -> bool:
        """Whether the node's ports and peer links use TLS."""
        return self.key_cert_path is not None


@dataclasses.dataclass(frozen=True)
class PayloadLogSettings:
    """Optional copies of inference requests and responses, as CloudEvents,
    sent off the request path (see :mod:`mesh.edges.payload_log`)."""

    target: str = ""
    """``file:///path`` (JSON lines) or ``http(s)://host/path`` (one POST per
    event) (``MESHSERVE_PAYLOAD_LOG``); empty: off."""
    queue_size: int = 1000
    """Most events waiting to be written (``MESHSERVE_PAYLOAD_LOG_QUEUE``);
    beyond it, events are dropped and counted, never waited for."""
    queue_bytes: int = 64 * 1024 * 1024
    """Most payload bytes waiting to be written (``MESHSERVE_PAYLOAD_LOG_QUEUE_BYTES``),
    so that large tensors cannot pile up in memory behind a slow sink."""


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
    tls: TLSSettings = dataclasses.field(default_factory=TLSSettings)
    payload_log: PayloadLogSettings = dataclasses.field(default_factory=PayloadLogSettings)


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTP]i?)?[Bb]?\s*$")
_UNITS = {
    None: 1,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
}


def parse_size(text: str, name: str = "size") -> int:
    """Bytes from ``512Mi``, ``2G``, ``1.5Gi`` or ``1048576``."""
    m = _SIZE.match(text)
    if not m:
        raise errors.ConfigError(
            f"{name}: {text!r} is not a size (use bytes or a suffix: 512Mi, 2G)"
        )
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def parse_endpoint(text: str, name: str) -> tuple[str, int]:
    """``(host, port)`` from ``host:port``."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise errors.ConfigError(f"{name}: {text!r} is not host:port")
    return host, int(port)


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


def _path(value: str | None) -> pathlib.Path | None:
    return pathlib.Path(value) if value else None


def parse_tls(env: Mapping[str, str], kv_store: str = "") -> TLSSettings:
    """:class:`TLSSettings` from ModelMesh's ``MM_TLS_*`` variables and the
    ``MESHSERVE_ETCD_*`` ones; a combination that cannot work names the
    variables involved."""

    def get(name: str) -> str | None:
        value = env.get(name)
        return value.strip() if value and value.strip() else None

    if get("MM_TLS_PRIVATE_KEY_PASSPHRASE"):
        raise errors.ConfigError(
            "MM_TLS_PRIVATE_KEY_PASSPHRASE: encrypted private keys are not supported "
            "(gRPC reads only unencrypted PEM keys); mount the key unencrypted"
        )
    cert, key = get("MM_TLS_KEY_CERT_PATH"), get("MM_TLS_PRIVATE_KEY_PATH")
    if bool(cert) != bool(key):
        given, missing = (
            ("MM_TLS_KEY_CERT_PATH", "MM_TLS_PRIVATE_KEY_PATH")
            if cert
            else ("MM_TLS_PRIVATE_KEY_PATH", "MM_TLS_KEY_CERT_PATH")
        )
        raise errors.ConfigError(f"{given} is set but {missing} is not: TLS needs both")
    auth_text = (get("MM_TLS_CLIENT_AUTH") or "none").lower()
    try:
        client_auth = ClientAuth(auth_text)
    except ValueError:
        known = ", ".join(a.value for a in ClientAuth)
        raise errors.ConfigError(
            f"MM_TLS_CLIENT_AUTH: {auth_text!r} is not one of {known}"
        ) from None
    trust = tuple(
        pathlib.Path(p.strip())
        for p in (get("MM_TLS_TRUST_CERT_PATH") or "").split(",")
        if p.strip()
    )
    if client_auth is not ClientAuth.NONE and not cert:
        raise errors.ConfigError(
            f"MM_TLS_CLIENT_AUTH={client_auth.value} needs MM_TLS_KEY_CERT_PATH and "
            "MM_TLS_PRIVATE_KEY_PATH: client certificates are only asked for over TLS"
        )
    if client_auth is ClientAuth.REQUIRE and not trust:
        raise errors.ConfigError(
            "MM_TLS_CLIENT_AUTH=require needs MM_TLS_TRUST_CERT_PATH: "
            "the CA certificate that signs the clients' certificates"
        )
    interval_text = get("MESHSERVE_TLS_RELOAD_INTERVAL")
    try:
        interval = float(interval_text) if interval_text else TLSSettings.reload_interval_seconds
    except ValueError:
        raise errors.ConfigError(
            f"MESHSERVE_TLS_RELOAD_INTERVAL: {interval_text!r} is not a number"
        ) from None
    if interval <= 0:
        raise errors.ConfigError("MESHSERVE_TLS_RELOAD_INTERVAL: must be more than 0 seconds")
    etcd_ca, etcd_cert, etcd_key = (
        get("MESHSERVE_ETCD_CA_PATH"),
        get("MESHSERVE_ETCD_CERT_PATH"),
        get("MESHSERVE_ETCD_KEY_PATH"),
    )
    if bool(etcd_cert) != bool(etcd_key):
        raise errors.ConfigError(
            "MESHSERVE_ETCD_CERT_PATH and MESHSERVE_ETCD_KEY_PATH go together: only "
            + ("MESHSERVE_ETCD_CERT_PATH" if etcd_cert else "MESHSERVE_ETCD_KEY_PATH")
            + " is set"
        )
    if etcd_cert and not etcd_ca:
        raise errors.ConfigError(
            "MESHSERVE_ETCD_CERT_PATH is set but MESHSERVE_ETCD_CA_PATH is not: "
            "a client certificate is only sent over TLS, which needs etcd's CA"
        )
    if "https://" in kv_store and not etcd_ca:
        raise errors.ConfigError(
            "KV_STORE names an https:// endpoint but MESHSERVE_ETCD_CA_PATH is not set "
            "(the CA certificate of etcd's server certificate)"
        )
    return TLSSettings(
        key_cert_path=_path(cert),
        private_key_path=_path(key),
        client_auth=client_auth,
        trust_cert_paths=trust,
        peer_server_name=get("MESHSERVE_TLS_PEER_SERVER_NAME") or "",
        reload_interval_seconds=interval,
        etcd_ca_path=_path(etcd_ca),
        etcd_cert_path=_path(etcd_cert),
        etcd_key_path=_path(etcd_key),
        etcd_server_name=get("MESHSERVE_ETCD_SERVER_NAME") or "",
    )


def parse_payload_log_target(text: str) -> str:
    """The payload log's target, checked: ``file:///abs/path`` or ``http(s)://host...``."""
    url = urllib.parse.urlsplit(text.strip())
    if url.scheme == "file":
        if url.netloc not in ("", "localhost") or not url.path.startswith("/"):
            raise errors.ConfigError(
                f"MESHSERVE_PAYLOAD_LOG: {text!r}: a file target is file:///absolute/path"
            )
    elif url.scheme in ("http", "https"):
        if not url.hostname:
            raise errors.ConfigError(f"MESHSERVE_PAYLOAD_LOG: {text!r} names no host")
    else:
        raise errors.ConfigError(
            f"MESHSERVE_PAYLOAD_LOG: {text!r}: use file:///path or http(s)://host/path"
        )
    return text.strip()


def etcd_connection_env(text: str, path: str, env: Mapping[str, str]) -> dict[str, str]:
    """The variables a ModelMesh ``etcd_connection`` file stands for (pure).

    ModelMesh Serving points ``KV_STORE=etcd:/path/etcd_connection`` at a JSON
    file (its ``model-serving-etcd`` Secret) such as ``{"endpoints":
    "https://etcd-0:2379,https://etcd-1:2379", "root_prefix": "modelmesh",
    "certificate_file": "/etc/etcd/ca.crt", "client_certificate_file": ...,
    "client_key_file": ...}``. This returns ``KV_STORE`` with the endpoints,
    the ``MESHSERVE_ETCD_*`` TLS files (unless set already) and a key prefix
    under ``root_prefix``. Inline certificates and user/password are refused
    with a message saying what to use instead.
    """
    where = f"KV_STORE: {path}"
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise errors.ConfigError(f"{where} is not valid JSON: {e}") from None
    if not isinstance(d, dict) or not d.get("endpoints"):
        raise errors.ConfigError(f'{where} must be a JSON object with "endpoints"')
    for unsupported, instead in (
        ("certificate", "certificate_file"),
        ("userid", "client certificates"),
        ("password", "client certificates"),
    ):
        if d.get(unsupported):
            raise errors.ConfigError(
                f"{where}: {unsupported!r} is not supported; use {instead} instead"
            )
    out = {"KV_STORE": f"etcd:{d['endpoints']}"}
    for field, variable in (
        ("certificate_file", "MESHSERVE_ETCD_CA_PATH"),
        ("client_certificate_file", "MESHSERVE_ETCD_CERT_PATH"),
        ("client_key_file", "MESHSERVE_ETCD_KEY_PATH"),
    ):
        if d.get(field) and not env.get(variable):
            out[variable] = str(d[field])
    root = str(d.get("root_prefix") or "").strip("/")
    if root:
        out["MM_KVSTORE_PREFIX"] = f"{root}/{(env.get('MM_KVSTORE_PREFIX') or 'mm').strip('/')}"
    return out


def from_env(env: Mapping[str, str]) -> Settings:
    """Settings from an environment mapping; unset variables keep defaults.

    Pure: a ModelMesh ``etcd_connection`` file and the host's name are read
    by :func:`mesh.edges.process_env.completed` before this is called."""
    if (env.get("KV_STORE") or "").startswith("etcd:/") and not env["KV_STORE"].startswith(
        "etcd://"
    ):
        raise errors.ConfigError(
            f"KV_STORE: {env['KV_STORE']!r} names a file; read it first "
            "(mesh.edges.process_env.completed)"
        )

    def get(name: str) -> str | None:
        value = env.get(name)
        return value if value not in (None, "") else None

    def integer(name: str, default: int) -> int:
        v = get(name)
        if v is None:
            return default
        try:
            return int(v)
        except ValueError:
            raise errors.ConfigError(f"{name}: {v!r} is not an integer") from None

    def number(name: str, default: float) -> float:
        v = get(name)
        if v is None:
            return default
        try:
            return float(v)
        except ValueError:
            raise errors.ConfigError(f"{name}: {v!r} is not a number") from None

    def size(name: str, default: int) -> int:
        v = get(name)
        return default if v is None else parse_size(v, name)

    kv_d, svc_d, cache_d, node_d, rt_d = (
        KVSettings(),
        ServiceSettings(),
        CacheSettings(),
        NodeSettings(),
        RuntimeSettings(),
    )
    route_d, scale_d = RoutingSettings(), ScalingSettings()
    kv_store = get("KV_STORE")
    kv = KVSettings(
        endpoints=parse_kv_store(kv_store) if kv_store else kv_d.endpoints,
        prefix=(get("MM_KVSTORE_PREFIX") or kv_d.prefix).strip("/"),
        lease_ttl_seconds=integer("MESHSERVE_LEASE_TTL", kv_d.lease_ttl_seconds),
    )
    port = integer("MM_SVC_GRPC_PORT", svc_d.grpc_port)
    if not 0 <= port < 65536:
        raise errors.ConfigError(f"MM_SVC_GRPC_PORT: {port} is not a port")

    def optional_port(name: str, default: int) -> int:
        value = integer(name, default)
        if not -1 <= value < 65536:
            raise errors.ConfigError(f"{name}: {value} is not a port (0: any free port, -1: off)")
        return value

    rest_port = optional_port("REST_PROXY_LISTEN_PORT", svc_d.rest_port)
    service = ServiceSettings(
        host=get("MESHSERVE_HOST") or svc_d.host,
        grpc_port=port,
        max_message_bytes=size("MM_SVC_GRPC_MAX_MSG_SIZE", svc_d.max_message_bytes),
        advertise_host=get("MESHSERVE_ADVERTISE_HOST") or svc_d.advertise_host,
        rest_port=rest_port,
        metrics_port=optional_port("MESHSERVE_METRICS_PORT", svc_d.metrics_port),
        probe_port=optional_port("MESHSERVE_PROBE_PORT", svc_d.probe_port),
        metrics_per_model=(get("MESHSERVE_METRICS_PER_MODEL") or "").lower()
        in ("1", "true", "yes"),
    )
    cache = CacheSettings(
        capacity_bytes=size("MESHSERVE_CAPACITY", cache_d.capacity_bytes),
        capacity_buffer_fraction=number(
            "MESHSERVE_CAPACITY_BUFFER", cache_d.capacity_buffer_fraction
        ),
        size_multiplier=number("MESHSERVE_SIZE_MULTIPLIER", cache_d.size_multiplier),
        min_model_size_bytes=size("MESHSERVE_MIN_MODEL_SIZE", cache_d.min_model_size_bytes),
        load_timeout_seconds=number("MESHSERVE_LOAD_TIMEOUT", cache_d.load_timeout_seconds),
        failure_expiry_seconds=number("MESHSERVE_FAILURE_EXPIRY", cache_d.failure_expiry_seconds),
        last_used_write_interval_seconds=number(
            "MESHSERVE_LAST_USED_INTERVAL", cache_d.last_used_write_interval_seconds
        ),
        churn_threshold_seconds=number(
            "MESHSERVE_CHURN_THRESHOLD", cache_d.churn_threshold_seconds
        ),
        eviction=(get("MESHSERVE_EVICTION") or cache_d.eviction).lower(),
        popularity_half_life_seconds=number(
            "MESHSERVE_POPULARITY_HALF_LIFE", cache_d.popularity_half_life_seconds
        ),
    )
    if cache.eviction not in EVICTION_RULES:
        raise errors.ConfigError(
            f"MESHSERVE_EVICTION: {cache.eviction!r} is not one of {', '.join(EVICTION_RULES)}"
        )
    if cache.popularity_half_life_seconds <= 0:
        raise errors.ConfigError("MESHSERVE_POPULARITY_HALF_LIFE: must be more than 0 seconds")
    routing = RoutingSettings(
        max_attempts=max(1, integer("MESHSERVE_ROUTE_ATTEMPTS", route_d.max_attempts)),
        default_deadline_seconds=number(
            "MESHSERVE_DEFAULT_DEADLINE", route_d.default_deadline_seconds
        ),
    )
    scaling = ScalingSettings(
        scale_up_rpm=integer("MESHSERVE_SCALE_UP_RPM", scale_d.scale_up_rpm),
        check_interval_seconds=number("MESHSERVE_SCALE_INTERVAL", scale_d.check_interval_seconds),
        handover_window_seconds=number(
            "MESHSERVE_HANDOVER_WINDOW", scale_d.handover_window_seconds
        ),
        drain_timeout_seconds=number("MESHSERVE_DRAIN_TIMEOUT", scale_d.drain_timeout_seconds),
        janitor_interval_seconds=number(
            "MESHSERVE_JANITOR_INTERVAL", scale_d.janitor_interval_seconds
        ),
        dead_node_grace_seconds=number(
            "MESHSERVE_DEAD_NODE_GRACE", scale_d.dead_node_grace_seconds
        ),
    )
    labels = tuple(x.strip() for x in (get("MM_LABELS") or "").split(",") if x.strip())
    storage_config = get("MESHSERVE_STORAGE_CONFIG")
    storage_config_dir = pathlib.Path(storage_config) if storage_config else None
    node = NodeSettings(
        instance_id=get("MM_INSTANCE_ID") or node_d.instance_id,
        labels=labels,
        data_dir=pathlib.Path(get("MESHSERVE_DATA_DIR") or node_d.data_dir),
        models_root=pathlib.Path(get("MESHSERVE_MODELS_ROOT") or node_d.models_root),
        storage_config_dir=storage_config_dir,
    )
    runtime_endpoint = get("MESHSERVE_RUNTIME_ENDPOINT") or ""
    if runtime_endpoint:
        parse_endpoint(runtime_endpoint, "MESHSERVE_RUNTIME_ENDPOINT")
    runtime = RuntimeSettings(
        kind=get("MESHSERVE_RUNTIME") or rt_d.kind,
        endpoint=runtime_endpoint,
        venv=pathlib.Path(get("MESHSERVE_RUNTIMES_DIR") or rt_d.venv),
        start_timeout_seconds=number("MESHSERVE_RUNTIME_START_TIMEOUT", rt_d.start_timeout_seconds),
    )
    if cache.capacity_bytes < 0:
        raise errors.ConfigError("MESHSERVE_CAPACITY: must not be negative (0: measure it)")
    if not 0 <= cache.capacity_buffer_fraction < 1:
        raise errors.ConfigError("MESHSERVE_CAPACITY_BUFFER: must be a fraction from 0 to 1")
    if service.max_message_bytes <= 0:
        raise errors.ConfigError("MM_SVC_GRPC_MAX_MSG_SIZE: must be more than 0 bytes")
    log_d = PayloadLogSettings()
    log_target = get("MESHSERVE_PAYLOAD_LOG")
    payload_log = PayloadLogSettings(
        target=parse_payload_log_target(log_target) if log_target else "",
        queue_size=max(1, integer("MESHSERVE_PAYLOAD_LOG_QUEUE", log_d.queue_size)),
        queue_bytes=size("MESHSERVE_PAYLOAD_LOG_QUEUE_BYTES", log_d.queue_bytes),
    )
    return Settings(
        kv=kv,
        service=service,
        cache=cache,
        node=node,
        runtime=runtime,
        routing=routing,
        scaling=scaling,
        tls=parse_tls(env, kv_store or ""),
        payload_log=payload_log,
    )
