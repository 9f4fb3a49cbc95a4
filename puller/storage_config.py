"""Storage configuration in KServe ModelMesh Serving's format.

Credentials and endpoints live in the ``storage-config`` Secret, mounted as a
folder with one file per key, each a JSON object::

    {"type": "s3", "access_key_id": "...", "secret_access_key": "...",
     "endpoint_url": "https://s3.example.com", "region": "us-east-1",
     "bucket": "models"}

(``gcs``, ``azure``, ``http`` and ``pvc`` types likewise; see README.md).
A model picks one with its storage key (a Predictor's ``spec.storage.key``);
its storage parameters (``spec.storage.parameters``) override the file's
fields. Without a key, ``default_<type>`` (when the parameters name a type)
or ``default`` applies, as in ModelMesh Serving. A model path may also be a
URI (``s3://bucket/key``, ``gs://bucket/key``, ``https://host/file``), which
names the type and bucket itself.

Without a key, an absolute path or ``file://`` URI is a local file, and so is
a relative path when no ``default`` configuration exists: models registered
before storage configuration existed keep loading from local folders.

:func:`resolve` decides, purely, which configuration a model uses and with
which fields. :class:`ConfigDir` reads the folder, re-reading a file only when
it changed (Kubernetes swaps a Secret's files in place), so an edited Secret
takes effect at the next pull without a restart. No field value is ever put
in a message or a log: :meth:`Source.secrets` lists the values that
:func:`redact` scrubs from any text that might echo them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import pathlib
import threading
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any

from puller import store

log = logging.getLogger(__name__)

TYPES = ("s3", "gcs", "azure", "http", "pvc", "local")
"""Storage types this puller knows; ``local`` is a file on the node."""

_ALIASES = {"https": "http", "gs": "gcs", "azure_blob": "azure", "file": "local"}

DEFAULT_KEY = "default"
"""The key used when a model names none (``default_<type>`` first when its
parameters name a type)."""

SECRET_FIELDS = frozenset(
    {
        "access_key_id",
        "secret_access_key",
        "session_token",
        "private_key",
        "private_key_id",
        "client_secret",
        "client_key",
        "connection_string",
        "account_key",
        "sas_token",
        "token",
        "password",
        "headers",
    }
)
"""Fields whose values are never shown (``headers`` may carry a bearer token)."""

REDACTED = "***"


@dataclasses.dataclass(frozen=True)
class Source:
    """Where one model's files come from, fully resolved."""

    type: str
    """One of :data:`TYPES`."""
    key: str
    """The storage-config key whose file was used (``default_s3``...); empty
    when none was (local files, or parameters alone)."""
    fields: Mapping[str, Any]
    """The configuration's fields with the model's parameters applied."""
    path: str
    """The model's path inside the store (the object key or prefix, the URL
    path below ``url``, the file path)."""

    @property
    def key_label(self) -> str:
        """``storage key 'name'`` for messages, or what stands in for one."""
        return f"storage key {self.key!r}" if self.key else "no storage key"

    def text(self, name: str, default: str = "") -> str:
        """Field ``name`` as a string (``default`` when absent or empty)."""
        value = self.fields.get(name)
        if value is None or value == "":
            return default
        return value if isinstance(value, str) else json.dumps(value)

    def secrets(self) -> tuple[str, ...]:
        """Every credential value in the fields, for :func:`redact`."""
        return tuple(sorted(_secret_values(self.fields), key=len, reverse=True))

    def digest(self) -> str:
        """A stable fingerprint of the fields (to reuse clients), not
        reversible to them."""
        canonical = json.dumps(
            {"type": self.type, **self.fields}, sort_keys=True, default=str
        ).encode()
        return hashlib.sha256(canonical).hexdigest()


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """The storage configuration as read at one moment."""

    configs: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    """Key → its parsed JSON object."""
    problems: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Key → why its file could not be used (never its content)."""
    origin: str = "no storage configuration was given to this node"
    """Where the configuration came from, for messages."""


def _secret_values(fields: Mapping[str, Any]) -> set[str]:
    found: set[str] = set()
    for name, value in fields.items():
        if name not in SECRET_FIELDS:
            continue
        found.update(_strings(value))
        if name == "connection_string" and isinstance(value, str):
            for part in value.split(";"):
                _, sep, v = part.partition("=")
                if sep and v:
                    found.add(v)
        if name == "private_key" and isinstance(value, str):
            found.update(line for line in value.splitlines() if len(line) >= 16)
    return {s for s in found if len(s) >= 4}


def _strings(value: object) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each secret replaced by ``***``."""
    for secret in sorted(secrets, key=len, reverse=True):
        if secret and len(secret) >= 4:
            text = text.replace(secret, REDACTED)
    return text


def normalise_type(value: object) -> str:
    """The canonical type name for ``value`` (``https`` → ``http``...), or
    ``""`` when it names none."""
    if not isinstance(value, str) or not value.strip():
        return ""
    t = value.strip().lower()
    return _ALIASES.get(t, t)


@dataclasses.dataclass(frozen=True)
class _Uri:
    type: str
    fields: Mapping[str, str]
    path: str


def parse_uri(path: str) -> _Uri | None:
    """What a URI-style model path says: ``s3://bucket/key`` and
    ``gs://bucket/key`` name a type, bucket and key; ``http(s)://...`` a URL;
    ``file://...`` a local file. ``None`` for a plain path."""
    if "://" not in path:
        return None
    parsed = urllib.parse.urlparse(path)
    scheme = parsed.scheme.lower()
    if scheme in ("s3", "gs"):
        if not parsed.netloc:
            raise store.BadConfig(f"{scheme}:// path {path!r} names no bucket")
        return _Uri(
            "s3" if scheme == "s3" else "gcs",
            {"bucket": parsed.netloc},
            parsed.path.lstrip("/"),
        )
    if scheme in ("http", "https"):
        return _Uri("http", {"url": path}, "")
    if scheme == "file":
        return _Uri("local", {}, path)
    raise store.BadConfig(f"{scheme}:// paths are not supported (use s3, gs, http, https, file)")


def resolve(
    storage_key: str,
    params: Mapping[str, str],
    path: str,
    snapshot: Snapshot,
) -> Source:
    """The :class:`Source` a model with this storage key, parameters and path
    uses, given the configuration ``snapshot``.

    Precedence, lowest first: the key's file (or ``default_<type>`` /
    ``default`` when no key is given), what a URI path says (bucket, URL),
    then the parameters. Raises :class:`puller.store.BadConfig` for a key
    that is not configured, a malformed file, or no usable type.
    """
    uri = parse_uri(path)
    param_type = normalise_type(params.get("type"))
    if not storage_key and _plainly_local(uri, param_type, path):
        return Source("local", "", {}, path)
    if storage_key:
        key, config = storage_key, _keyed_config(storage_key, snapshot)
    else:
        wanted = param_type or (uri.type if uri else "")
        key, config = _default_config(wanted, snapshot)
        if not config and not wanted:
            return Source("local", "", {}, path)
    fields = _merged_fields(key, config, uri, params, param_type)
    kind = _checked_type(key, fields)
    fields["type"] = kind
    return Source(kind, key, fields, uri.path if uri is not None else path)


def _plainly_local(uri: _Uri | None, param_type: str, path: str) -> bool:
    """Without a storage key: a ``file://`` URI, or an absolute path with no
    type in the parameters, is a local file whatever is configured."""
    if uri is not None and uri.type == "local":
        return True
    return uri is None and not param_type and path.startswith("/")


def _keyed_config(key: str, snapshot: Snapshot) -> Mapping[str, Any]:
    """The configuration a model's storage key names; it must exist."""
    if key in snapshot.problems:
        raise store.BadConfig(snapshot.problems[key])
    if key not in snapshot.configs:
        known = ", ".join(sorted(snapshot.configs)) or "none"
        raise store.BadConfig(
            f"storage key {key!r} is not in the storage configuration "
            f"({snapshot.origin}; keys there: {known})"
        )
    return snapshot.configs[key]


def _default_config(wanted: str, snapshot: Snapshot) -> tuple[str, Mapping[str, Any]]:
    """The key and configuration a model without a storage key uses:
    ``default_<wanted>`` when a type is wanted, else ``default``; ``("", {})``
    when that key is not configured."""
    key = f"{DEFAULT_KEY}_{wanted}" if wanted else DEFAULT_KEY
    if key in snapshot.problems:
        raise store.BadConfig(snapshot.problems[key])
    config = snapshot.configs.get(key, {})
    return (key, config) if config else ("", config)


def _merged_fields(
    key: str,
    config: Mapping[str, Any],
    uri: _Uri | None,
    params: Mapping[str, str],
    param_type: str,
) -> dict[str, Any]:
    """The configuration's fields, overridden by what a URI path says, then by
    the parameters (``default_bucket`` stands in for a missing ``bucket``)."""
    fields: dict[str, Any] = dict(config)
    if "bucket" not in fields and "default_bucket" in fields:
        fields["bucket"] = fields["default_bucket"]
    config_type = normalise_type(fields.get("type"))
    if uri is not None:
        if config_type and config_type != uri.type and not param_type:
            raise store.BadConfig(
                f"the path is a {uri.type} URI but storage key {key!r} is of type {config_type!r}"
            )
        fields.update(uri.fields)
        fields["type"] = uri.type
    fields.update(params)
    return fields


def _checked_type(key: str, fields: Mapping[str, Any]) -> str:
    """The canonical storage type the merged fields name; it must be one this
    puller knows."""
    kind = normalise_type(fields.get("type"))
    if not kind:
        raise store.BadConfig(
            f'storage key {key!r} has no "type"' if key else "the storage parameters name no type"
        )
    if kind not in TYPES:
        raise store.BadConfig(
            f"storage type {fields.get('type')!r} is not supported "
            f"(supported: {', '.join(TYPES[:-1])})"
        )
    return kind


def parse_config(key: str, text: str) -> Mapping[str, Any]:
    """One storage-config file's JSON object; raises
    :class:`puller.store.BadConfig` naming the key (never the content)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise store.BadConfig(
            f"storage config {key!r} is not valid JSON ({e.msg} at line {e.lineno} "
            f"column {e.colno})"
        ) from None
    if not isinstance(value, dict):
        raise store.BadConfig(f"storage config {key!r} is not a JSON object")
    return value


class ConfigDir:
    """The mounted ``storage-config`` folder, re-read when a file changes.

    Each call to :meth:`snapshot` lists the folder and parses only files whose
    identity (inode, size, modification time) changed since the last call, so
    an edited Secret is used at the next pull. Hidden entries (Kubernetes'
    ``..data`` links) are skipped. Thread-safe.
    """

    def __init__(self, folder: pathlib.Path | None) -> None:
        self.folder = folder
        self._cache: dict[str, tuple[tuple[int, int, int, int], Mapping[str, Any] | str]] = {}
        self._lock = threading.Lock()

    def snapshot(self) -> Snapshot:
        if self.folder is None:
            return Snapshot()
        origin = f"folder {self.folder}"
        try:
            entries = sorted(os.scandir(self.folder), key=lambda e: e.name)
        except FileNotFoundError:
            return Snapshot(origin=f"{origin} does not exist")
        except OSError as e:
            return Snapshot(origin=f"{origin} cannot be read: {e.strerror}")
        configs: dict[str, Mapping[str, Any]] = {}
        problems: dict[str, str] = {}
        with self._lock:
            seen: set[str] = set()
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                try:
                    if not entry.is_file():
                        continue
                    st = entry.stat()
                except OSError:
                    continue
                identity = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
                seen.add(entry.name)
                cached = self._cache.get(entry.name)
                if cached is None or cached[0] != identity:
                    cached = (identity, self._read(entry.name, pathlib.Path(entry.path)))
                    self._cache[entry.name] = cached
                if isinstance(cached[1], str):
                    problems[entry.name] = cached[1]
                else:
                    configs[entry.name] = cached[1]
            for gone in set(self._cache) - seen:
                del self._cache[gone]
        return Snapshot(configs, problems, origin)

    @staticmethod
    def _read(key: str, path: pathlib.Path) -> Mapping[str, Any] | str:
        try:
            parsed = parse_config(key, path.read_text(encoding="utf-8"))
        except store.BadConfig as e:
            log.warning("%s", e.message)
            return e.message
        except (OSError, UnicodeDecodeError) as e:
            message = f"storage config {key!r} cannot be read: {type(e).__name__}"
            log.warning("%s", message)
            return message
        log.info("storage config %r read (type %s)", key, parsed.get("type", "?"))
        return parsed
