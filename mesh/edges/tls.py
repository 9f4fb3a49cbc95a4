"""TLS for a node: which credentials each hop uses, reading and checking the
PEM files, and keeping them current while the node runs.

Operators rotate certificates without restarting pods (cert-manager renews a
Secret, the kubelet swaps the mounted files), and a node must pick up the new
files before the old certificate expires. So the files are watched
(:class:`Watched`: a ``stat`` every ``MESHSERVE_TLS_RELOAD_INTERVAL`` seconds,
a re-read and a check on change; a half-written or broken rotation keeps the
last good certificate and logs why), and each hop takes the new material the
way its transport allows, without closing a listener:

- **gRPC :8033**: :func:`grpc_server_credentials` wraps
  ``grpc.dynamic_ssl_server_credentials`` with a certificate-configuration
  fetcher. gRPC calls the fetcher before every new handshake; it returns the
  configuration prepared at the last change (certificate, key and trusted
  CAs), or ``None`` for no change. Open connections keep their session.
- **REST :8008**: :func:`rest_ssl_context` gives aiohttp one context whose
  SNI callback moves every new handshake to the context built at the last
  change (Python's ``ssl`` switches the certificate and the trust store with
  it).
- **Peers** (this node → other nodes' :8033, mutual TLS with this node's own
  certificate): :meth:`mesh.edges.peers.Peers.use_credentials` opens new channels
  with the new certificate and lets calls on the old ones finish.
- **etcd**: read once at start (the etcd client cannot change credentials
  under its watches); rotate by restarting the node.
- **runtime**: always plaintext on 127.0.0.1, inside the pod, as in ModelMesh.

Which files feed which hop is decided by pure functions (:func:`server_plan`,
:func:`channel_plan`) over :class:`mesh.core.tls_settings.TLSSettings`; reading them
(:func:`load_server`, :func:`load_channel`) raises
:class:`mesh.core.errors.ConfigError` naming the variable and the file.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
import os
import pathlib
import ssl
import threading
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import grpc

from mesh.core import errors, tls_settings

log = logging.getLogger(__name__)

_T = TypeVar("_T")


class Hop(enum.Enum):
    """An outgoing link of a node."""

    PEER = "peer"
    """To another node's :8033 (forwarded requests, peer loads)."""
    RUNTIME = "runtime"
    """To the runtime next to the node, on 127.0.0.1."""
    ETCD = "etcd"
    """To the placement table."""


@dataclasses.dataclass(frozen=True)
class FileRef:
    """A file named by a variable, so that errors can name both."""

    variable: str
    path: pathlib.Path


@dataclasses.dataclass(frozen=True)
class ServerPlan:
    """What a listener presents, and what it asks of clients."""

    cert: FileRef
    key: FileRef
    trust: tuple[FileRef, ...]
    client_auth: tls_settings.ClientAuth

    @property
    def files(self) -> tuple[FileRef, ...]:
        return (self.cert, self.key, *self.trust)


@dataclasses.dataclass(frozen=True)
class ChannelPlan:
    """What an outgoing channel trusts and which certificate it presents."""

    roots: tuple[FileRef, ...]
    cert: FileRef | None = None
    key: FileRef | None = None
    server_name: str = ""
    """Name the server's certificate is checked against; empty: the target's host."""

    @property
    def files(self) -> tuple[FileRef, ...]:
        own = tuple(f for f in (self.cert, self.key) if f is not None)
        return (*self.roots, *own)


# --- decisions (pure) ------------------------------------------------------------


def server_plan(tls: tls_settings.TLSSettings) -> ServerPlan | None:
    """The TLS of :8033 and :8008, or ``None`` for plaintext."""
    if tls.key_cert_path is None or tls.private_key_path is None:
        return None
    return ServerPlan(
        cert=FileRef("MM_TLS_KEY_CERT_PATH", tls.key_cert_path),
        key=FileRef("MM_TLS_PRIVATE_KEY_PATH", tls.private_key_path),
        trust=tuple(FileRef("MM_TLS_TRUST_CERT_PATH", p) for p in tls.trust_cert_paths),
        client_auth=tls.client_auth,
    )


def channel_plan(tls: tls_settings.TLSSettings, hop: Hop) -> ChannelPlan | None:
    """The TLS of an outgoing link, or ``None`` for plaintext.

    Peers: mutual TLS whenever the node has a certificate (whatever
    ``MM_TLS_CLIENT_AUTH`` says for outside clients), presenting the node's own
    certificate and trusting ``MM_TLS_TRUST_CERT_PATH``, else the node's own
    certificate file. Runtime: never (same pod, 127.0.0.1). etcd: with
    ``MESHSERVE_ETCD_CA_PATH``, and a client certificate if one is given.
    """
    if hop is Hop.RUNTIME:
        return None
    if hop is Hop.PEER:
        if tls.key_cert_path is None or tls.private_key_path is None:
            return None
        cert = FileRef("MM_TLS_KEY_CERT_PATH", tls.key_cert_path)
        roots = tuple(FileRef("MM_TLS_TRUST_CERT_PATH", p) for p in tls.trust_cert_paths)
        return ChannelPlan(
            roots=roots or (cert,),
            cert=cert,
            key=FileRef("MM_TLS_PRIVATE_KEY_PATH", tls.private_key_path),
            server_name=tls.peer_server_name,
        )
    if tls.etcd_ca_path is None:
        return None
    return ChannelPlan(
        roots=(FileRef("MESHSERVE_ETCD_CA_PATH", tls.etcd_ca_path),),
        cert=FileRef("MESHSERVE_ETCD_CERT_PATH", tls.etcd_cert_path)
        if tls.etcd_cert_path
        else None,
        key=FileRef("MESHSERVE_ETCD_KEY_PATH", tls.etcd_key_path) if tls.etcd_key_path else None,
        server_name=tls.etcd_server_name,
    )


# --- reading and checking the files ------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ServerMaterial:
    """A listener's certificate, key and trusted CAs, read and checked."""

    cert_chain: bytes
    private_key: bytes
    trust: bytes | None
    client_auth: tls_settings.ClientAuth
    ssl_context: ssl.SSLContext
    """The same, as a server context for the REST port."""


@dataclasses.dataclass(frozen=True)
class ChannelMaterial:
    """An outgoing channel's trusted CAs and own certificate, read and checked."""

    roots: bytes
    private_key: bytes | None
    cert_chain: bytes | None
    server_name: str


_PEM_MARKERS = {
    "certificate": b"-----BEGIN CERTIFICATE-----",
    "private key": b"PRIVATE KEY-----",
}


def read_pem(ref: FileRef, kind: str) -> bytes:
    """The bytes of a PEM file holding a ``certificate`` or a ``private key``."""
    try:
        data = ref.path.read_bytes()
    except OSError as e:
        raise errors.ConfigError(
            f"{ref.variable}: cannot read {ref.path}: {e.strerror or e}"
        ) from None
    if _PEM_MARKERS[kind] not in data:
        raise errors.ConfigError(f"{ref.variable}: {ref.path} holds no PEM {kind}")
    if kind == "private key" and b"ENCRYPTED" in data:
        raise errors.ConfigError(
            f"{ref.variable}: {ref.path} is an encrypted private key; gRPC reads only "
            "unencrypted ones"
        )
    return data


def _check_pair(context: ssl.SSLContext, cert: FileRef, key: FileRef) -> None:
    try:
        context.load_cert_chain(cert.path, key.path)
    except ssl.SSLError as e:
        if "KEY_VALUES_MISMATCH" in str(e):
            raise errors.ConfigError(
                f"{key.variable}: {key.path} is not the private key of the certificate in "
                f"{cert.variable} ({cert.path})"
            ) from None
        raise errors.ConfigError(
            f"{cert.variable} / {key.variable}: cannot use {cert.path} with {key.path}: "
            f"{e.reason or e}"
        ) from None
    except OSError as e:
        raise errors.ConfigError(
            f"{cert.variable} / {key.variable}: cannot read {cert.path} or {key.path}: "
            f"{e.strerror or e}"
        ) from None


def _read_trust(context: ssl.SSLContext, refs: Sequence[FileRef]) -> bytes:
    """The concatenated CA certificates, each file checked on its own."""
    parts = []
    for ref in refs:
        data = read_pem(ref, "certificate")
        try:
            context.load_verify_locations(cadata=data.decode("ascii", "replace"))
        except (ssl.SSLError, ValueError) as e:
            raise errors.ConfigError(
                f"{ref.variable}: {ref.path} is not a usable CA certificate: {e}"
            ) from None
        parts.append(data if data.endswith(b"\n") else data + b"\n")
    return b"".join(parts)


def load_server(plan: ServerPlan) -> ServerMaterial:
    """Read and check a listener's files (certificate and key belong together,
    CA files parse); raises :class:`mesh.core.errors.ConfigError` naming the
    variable and the file."""
    cert = read_pem(plan.cert, "certificate")
    key = read_pem(plan.key, "private key")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    _check_pair(context, plan.cert, plan.key)
    trust = _read_trust(context, plan.trust) if plan.trust else None
    context.verify_mode = {
        tls_settings.ClientAuth.NONE: ssl.CERT_NONE,
        tls_settings.ClientAuth.OPTIONAL: ssl.CERT_OPTIONAL if trust else ssl.CERT_NONE,
        tls_settings.ClientAuth.REQUIRE: ssl.CERT_REQUIRED,
    }[plan.client_auth]
    return ServerMaterial(cert, key, trust, plan.client_auth, context)


def load_channel(plan: ChannelPlan) -> ChannelMaterial:
    """Read and check an outgoing channel's files; raises
    :class:`mesh.core.errors.ConfigError` naming the variable and the file."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    roots = _read_trust(context, plan.roots)
    cert = key = None
    if plan.cert is not None and plan.key is not None:
        cert = read_pem(plan.cert, "certificate")
        key = read_pem(plan.key, "private key")
        _check_pair(context, plan.cert, plan.key)
    return ChannelMaterial(roots, key, cert, plan.server_name)


def grpc_channel_credentials(material: ChannelMaterial) -> Any:
    """``grpc.ChannelCredentials`` for an outgoing channel."""
    return grpc.ssl_channel_credentials(
        root_certificates=material.roots,
        private_key=material.private_key,
        certificate_chain=material.cert_chain,
    )


def channel_options(material: ChannelMaterial | None) -> list[tuple[str, str]]:
    """Channel options that go with the credentials (the name checked)."""
    if material is None or not material.server_name:
        return []
    return [("grpc.ssl_target_name_override", material.server_name)]


# --- keeping them current ---------------------------------------------------------


def _stamp(paths: Sequence[pathlib.Path]) -> tuple[tuple[int, int, int] | None, ...]:
    """What changes when a file is replaced (a Secret's symlinks are followed)."""
    out: list[tuple[int, int, int] | None] = []
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            out.append(None)
        else:
            out.append((st.st_ino, st.st_mtime_ns, st.st_size))
    return tuple(out)


class Watched(Generic[_T]):
    """The material read from some files, re-read when they change.

    :attr:`value` is always the last material that read and checked cleanly;
    :attr:`version` goes up by one with each new value. Listeners are called
    on the event loop (from :meth:`refresh`) with the new value.
    """

    def __init__(self, what: str, files: Sequence[FileRef], load: Callable[[], _T]) -> None:
        self.what = what
        self._paths = [f.path for f in files]
        self._load = load
        self._stamp = _stamp(self._paths)
        self.value: _T = load()
        self.version = 1
        self.last_error = ""
        self._listeners: list[Callable[[_T], None]] = []

    def add_listener(self, listener: Callable[[_T], None]) -> None:
        self._listeners.append(listener)

    def _read_if_changed(self) -> tuple[bool, _T | None, str]:
        stamp = _stamp(self._paths)
        if stamp == self._stamp:
            return False, None, ""
        self._stamp = stamp
        try:
            return True, self._load(), ""
        except errors.ConfigError as e:
            return True, None, e.message

    async def refresh(self) -> bool:
        """Re-read the files if they changed; ``True`` if a new value is in use."""
        changed, value, problem = await asyncio.to_thread(self._read_if_changed)
        if not changed:
            return False
        if value is None:
            self.last_error = problem
            log.warning(
                "%s: the changed files are not used, keeping the last good ones: %s",
                self.what,
                problem,
            )
            return False
        self.value, self.last_error = value, ""
        self.version += 1
        log.info("%s: certificates reloaded (version %d)", self.what, self.version)
        for listener in self._listeners:
            try:
                listener(value)
            except Exception:
                log.exception("%s: a listener of the reload failed", self.what)
        return True


class Reloader:
    """Polls a set of :class:`Watched` every ``interval`` seconds."""

    def __init__(self, watched: Sequence[Watched[Any]], interval: float) -> None:
        self._watched = list(watched)
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._watched and self._task is None:
            self._task = asyncio.create_task(self._run(), name="tls-reload")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            for w in self._watched:
                try:
                    await w.refresh()
                except Exception:
                    log.exception("%s: checking the certificate files failed", w.what)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def _grpc_config(material: ServerMaterial) -> Any:
    return grpc.ssl_server_certificate_configuration(
        [(material.private_key, material.cert_chain)], material.trust
    )


def grpc_server_credentials(watched: Watched[ServerMaterial]) -> Any:
    """``grpc.ServerCredentials`` for :8033 that follow ``watched``.

    The fetcher runs on gRPC's threads before each handshake: it only compares
    version numbers and hands over a configuration built ahead, so a
    handshake never waits on a file.
    """
    first = watched.value
    lock = threading.Lock()
    served = [watched.version]

    def fetch() -> Any:
        version = watched.version
        if version == served[0]:
            return None
        with lock:
            served[0] = version
        return _grpc_config(watched.value)

    return grpc.dynamic_ssl_server_credentials(
        _grpc_config(first),
        fetch,
        # grpcio can require a client certificate or not ask for one; it has
        # no "ask, and check one if sent" mode (see ClientAuth.OPTIONAL).
        require_client_authentication=first.client_auth is tls_settings.ClientAuth.REQUIRE,
    )


def rest_ssl_context(watched: Watched[ServerMaterial]) -> ssl.SSLContext:
    """An ``ssl.SSLContext`` for :8008 that follows ``watched``: each new
    handshake is moved to the context of the current material."""
    first = watched.value
    # The outer context only starts handshakes: the callback below runs on the
    # ClientHello, before a certificate is chosen or a client's is checked.
    outer = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    outer.verify_mode = first.ssl_context.verify_mode

    def switch(sock: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext) -> None:
        sock.context = watched.value.ssl_context

    outer.sni_callback = switch
    return outer
