"""TLS settings: the node's ports, its links to peers, and its link to etcd.

ModelMesh's ``MM_TLS_*`` variables (and ``MESHSERVE_TLS_*``/``MESHSERVE_ETCD_*``
for what ModelMesh has no name for) become one frozen :class:`TLSSettings`;
a combination that cannot work (a certificate without its key, client
certificates required without a CA to check them, an ``https://`` etcd without
its CA) raises :class:`mesh.core.errors.ConfigError` naming the variables
involved. Pure: the files named are opened by :mod:`mesh.edges.tls`, never here.
"""

from __future__ import annotations

import dataclasses
import enum
import pathlib
from collections.abc import Mapping

from mesh.core import env_reader, errors


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

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TLSSettings:
        """TLS settings from ``MM_TLS_*`` and ``MESHSERVE_ETCD_*`` (values
        stripped); a combination that cannot work names the variables involved."""
        read = env_reader.EnvReader(env, strip=True)
        cert, key = _key_pair(read)
        client_auth, trust = _client_auth(read, cert)
        interval = read.number("MESHSERVE_TLS_RELOAD_INTERVAL", cls.reload_interval_seconds)
        if interval <= 0:
            raise errors.ConfigError("MESHSERVE_TLS_RELOAD_INTERVAL: must be more than 0 seconds")
        etcd_ca, etcd_cert, etcd_key = _etcd_files(read, env.get("KV_STORE") or "")
        return cls(
            key_cert_path=_path(cert),
            private_key_path=_path(key),
            client_auth=client_auth,
            trust_cert_paths=trust,
            peer_server_name=read.text("MESHSERVE_TLS_PEER_SERVER_NAME") or "",
            reload_interval_seconds=interval,
            etcd_ca_path=_path(etcd_ca),
            etcd_cert_path=_path(etcd_cert),
            etcd_key_path=_path(etcd_key),
            etcd_server_name=read.text("MESHSERVE_ETCD_SERVER_NAME") or "",
        )


def _path(value: str | None) -> pathlib.Path | None:
    return pathlib.Path(value) if value else None


def _key_pair(read: env_reader.EnvReader) -> tuple[str | None, str | None]:
    """The node's certificate and key paths: both or neither, the key unencrypted."""
    if read.text("MM_TLS_PRIVATE_KEY_PASSPHRASE"):
        raise errors.ConfigError(
            "MM_TLS_PRIVATE_KEY_PASSPHRASE: encrypted private keys are not supported "
            "(gRPC reads only unencrypted PEM keys); mount the key unencrypted"
        )
    cert, key = read.text("MM_TLS_KEY_CERT_PATH"), read.text("MM_TLS_PRIVATE_KEY_PATH")
    if bool(cert) != bool(key):
        given, missing = (
            ("MM_TLS_KEY_CERT_PATH", "MM_TLS_PRIVATE_KEY_PATH")
            if cert
            else ("MM_TLS_PRIVATE_KEY_PATH", "MM_TLS_KEY_CERT_PATH")
        )
        raise errors.ConfigError(f"{given} is set but {missing} is not: TLS needs both")
    return cert, key


def _client_auth(
    read: env_reader.EnvReader, cert: str | None
) -> tuple[ClientAuth, tuple[pathlib.Path, ...]]:
    """Whether clients must present a certificate, and the CAs that sign them."""
    auth_text = (read.text("MM_TLS_CLIENT_AUTH") or "none").lower()
    try:
        client_auth = ClientAuth(auth_text)
    except ValueError:
        known = ", ".join(a.value for a in ClientAuth)
        raise errors.ConfigError(
            f"MM_TLS_CLIENT_AUTH: {auth_text!r} is not one of {known}"
        ) from None
    trust = tuple(pathlib.Path(p) for p in read.items("MM_TLS_TRUST_CERT_PATH"))
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
    return client_auth, trust


def _etcd_files(
    read: env_reader.EnvReader, kv_store: str
) -> tuple[str | None, str | None, str | None]:
    """etcd's CA, and the node's client certificate and key for etcd: a client
    certificate needs its key and the CA, an ``https://`` endpoint the CA."""
    etcd_ca, etcd_cert, etcd_key = (
        read.text("MESHSERVE_ETCD_CA_PATH"),
        read.text("MESHSERVE_ETCD_CERT_PATH"),
        read.text("MESHSERVE_ETCD_KEY_PATH"),
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
    return etcd_ca, etcd_cert, etcd_key
