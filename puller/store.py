"""The seam between the model puller and one storage backend.

Every backend (local folder or PVC, HTTP(S), S3, GCS, Azure Blob) answers two
questions through :class:`Store`: which objects lie at a model's path
(:meth:`Store.list`), and what bytes one of them holds (:meth:`Store.fetch`).
Everything else — where the files land, in which order, how they are checked,
what a failure is called — is decided once, here and in
:mod:`puller.model_puller`, so the backends stay small and alike.

The deciding parts are pure: :func:`plan` turns a listing into the files to
write (refusing any that would land outside the model folder), and
:func:`check_fetched` says whether what arrived is what the store announced.

Backends raise the :class:`StoreError` subclasses, whose messages are written
for a user and never carry a credential: the puller adds the model, the
storage key and the location.
"""

from __future__ import annotations

import dataclasses
import posixpath
import re
import urllib.parse
from collections.abc import Sequence
from typing import Protocol


class StoreError(Exception):
    """A storage backend could not deliver; the message says why, in words
    meant for a user, and holds no credential."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(StoreError):
    """No object, bucket, container or file at the given place."""


class AccessDenied(StoreError):
    """The store refused the credentials, or they lack the right to read."""


class Unreachable(StoreError):
    """The store's endpoint did not answer (DNS, connection, timeout)."""


class BadConfig(StoreError):
    """The storage configuration is missing a field or has a malformed one."""


class Corrupt(StoreError):
    """What arrived differs from what the store announced (size, checksum),
    or the transfer broke off part way."""


class UnsafeArchive(StoreError):
    """An archive holds an entry that would land outside the model folder."""


class NoSpace(StoreError):
    """The node's disk cannot hold the model."""


class Cancelled(StoreError):
    """The pull was cancelled (the load was abandoned or the node stops)."""


@dataclasses.dataclass(frozen=True)
class RemoteObject:
    """One object (file) a store holds."""

    key: str
    """Its name in the store: the object key, blob name, or path."""
    size: int
    """Its size in bytes as the store announces it; -1 when unknown until
    the transfer (a plain HTTP URL)."""
    md5: str = ""
    """Hex MD5 of its bytes where the store gives one, else empty."""
    name: str = ""
    """The file name to use when this object is the whole model (an HTTP
    URL's last segment); empty: the key's last segment."""
    handle: str = ""
    """Backend-specific locator (a local file's absolute path); opaque here."""


@dataclasses.dataclass(frozen=True)
class Target:
    """One file to write into the model folder."""

    obj: RemoteObject
    """What to fetch."""
    relative: str
    """Where it goes, relative to the model folder (``/``-separated, checked
    by :func:`safe_relative`)."""


class Sink(Protocol):
    """Where a store writes an object's bytes, in order."""

    def write(self, data: bytes, /) -> int:
        """Append ``data``; raises :class:`Cancelled` once the pull is cancelled."""
        ...

    def announce(self, size: int = -1, md5: str = "") -> None:
        """What the transfer itself announces (an HTTP Content-Length or
        Content-MD5), checked by the puller like a listed size or MD5."""
        ...


class Store(Protocol):
    """One configured storage backend (a bucket with its credentials, a URL
    base, a folder). Methods are blocking; the puller calls them from a
    worker thread. They raise :class:`StoreError` subclasses."""

    def location(self, path: str) -> str:
        """A user-readable address of ``path`` (``s3://bucket/models/iris``)
        for messages and logs: never a credential, a query string or a token."""
        ...

    def list(self, path: str) -> list[RemoteObject]:
        """The object named ``path`` and every object under the prefix
        ``path/`` (either, both or none may exist)."""
        ...

    def fetch(self, obj: RemoteObject, sink: Sink) -> None:
        """Write the bytes of ``obj`` to ``sink``, in order."""
        ...


_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:")


def safe_relative(relative: str) -> str:
    """``relative`` normalised, if it names a place inside a folder; raises
    :class:`UnsafeArchive` for an absolute path, a ``..`` that climbs out, a
    backslash or drive letter (a Windows path), a NUL, or nothing at all."""
    if "\x00" in relative:
        raise UnsafeArchive(f"{relative!r} contains a NUL character")
    if "\\" in relative or _WINDOWS_DRIVE.match(relative):
        raise UnsafeArchive(f"{relative!r} is a Windows path")
    if relative.startswith("/"):
        raise UnsafeArchive(f"{relative!r} is an absolute path")
    normal = posixpath.normpath(relative)
    if normal in ("", ".") or normal == ".." or normal.startswith("../"):
        raise UnsafeArchive(f"{relative!r} leads outside the model folder")
    return normal


def plan(path: str, objects: Sequence[RemoteObject]) -> list[Target]:
    """The files to write for a model stored at ``path``.

    An object named exactly ``path`` is a single-file model: it lands under
    its own name. Otherwise ``path`` is a folder (a prefix): every object
    under ``path/`` lands at its key minus that prefix, so ``models/iris``
    takes ``models/iris/model.joblib`` as ``model.joblib`` but never
    ``models/iris2/...``. Folder markers (keys ending in ``/``) are skipped.
    Raises :class:`NotFound` when nothing is there, and
    :class:`UnsafeArchive` for a key that would land outside the folder.
    """
    base = path.rstrip("/")
    exact = [o for o in objects if o.key == base and (base or o.name)]
    if exact:
        obj = exact[0]
        name = obj.name or posixpath.basename(obj.key)
        return [Target(obj, safe_relative(name or "_model"))]
    prefix = f"{base}/" if base else ""
    targets: list[Target] = []
    seen: set[str] = set()
    for obj in objects:
        if not obj.key.startswith(prefix) or obj.key.endswith("/"):
            continue
        relative = safe_relative(obj.key[len(prefix) :])
        if relative in seen:
            continue
        seen.add(relative)
        targets.append(Target(obj, relative))
    if not targets:
        raise NotFound("nothing is stored there")
    targets.sort(key=lambda t: t.relative)
    _refuse_file_folder_clashes(targets)
    return targets


def _refuse_file_folder_clashes(targets: Sequence[Target]) -> None:
    files = {t.relative for t in targets}
    for t in targets:
        parent = posixpath.dirname(t.relative)
        while parent:
            if parent in files:
                raise UnsafeArchive(f"{parent!r} is both a file and a folder in the store")
            parent = posixpath.dirname(parent)


def total_size(targets: Sequence[Target]) -> int:
    """Bytes the targets announce (unknown sizes count as 0)."""
    return sum(max(t.obj.size, 0) for t in targets)


def check_fetched(obj: RemoteObject, received: int, md5_hex: str) -> None:
    """Raise :class:`Corrupt` unless ``received`` bytes with MD5 ``md5_hex``
    match what the store announced for ``obj`` (sizes or checksums the store
    did not give are not checked)."""
    if 0 <= received < obj.size:
        raise Corrupt(
            f"{obj.key!r}: the transfer broke off: received {received} of the {obj.size} bytes "
            "the store announced"
        )
    if obj.size >= 0 and received != obj.size:
        raise Corrupt(f"{obj.key!r}: received {received} bytes, the store announced {obj.size}")
    if obj.md5 and md5_hex and obj.md5.lower() != md5_hex.lower():
        raise Corrupt(f"{obj.key!r}: MD5 checksum mismatch (store {obj.md5}, received {md5_hex})")


def public_url(url: str) -> str:
    """``url`` without user info, query or fragment, which may carry a token
    (pure). A string that is not a URL is returned as it is."""
    if "://" not in url:
        return url
    parsed = urllib.parse.urlparse(url)
    host = parsed.hostname or ""
    if parsed.port:
        host = f"{host}:{parsed.port}"
    return urllib.parse.urlunparse((parsed.scheme, host, parsed.path, "", "", ""))
