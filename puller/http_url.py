"""HTTP(S) storage: a model that is one file at a URL.

Configuration fields, as in ModelMesh Serving: ``url`` (the base; the
model's path is appended to it), optional ``headers`` (an object of header
names to a value or a list of values — an ``Authorization`` header, for
example), ``certificate`` (a PEM CA bundle to trust) and
``client_certificate`` / ``client_key`` (PEM, for mutual TLS). A model path
that is itself an ``http(s)://`` URL needs no configuration.

HTTP has no listing, so a model here is always a single file (an archive is
unpacked by the puller). The size comes from Content-Length and the MD5
from Content-MD5 when the server sends them; a body cut short is an error.
A URL is shown without its query string or user info, which may carry a
token.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import http.client
import json
import os
import posixpath
import ssl
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

from puller import store

CHUNK_BYTES = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class HTTPSettings:
    """What an ``http`` storage configuration says."""

    url: str
    """The base URL; the model's path is joined below its path."""
    headers: tuple[tuple[str, str], ...] = ()
    """Extra request headers (name, value)."""
    certificate: str = ""
    """PEM CA bundle to trust (besides the system's)."""
    client_certificate: str = ""
    """PEM client certificate for mutual TLS."""
    client_key: str = ""
    """PEM key of the client certificate."""
    timeout_seconds: float = 30.0
    """Connect and read timeout."""


def settings_from(fields: Mapping[str, Any]) -> HTTPSettings:
    """:class:`HTTPSettings` from a resolved configuration (pure); raises
    :class:`puller.store.BadConfig` naming a missing or malformed field."""
    url = fields.get("url")
    if not isinstance(url, str) or not url.strip():
        raise store.BadConfig('an "http" storage configuration needs a "url"')
    parsed = urllib.parse.urlparse(url.strip())
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise store.BadConfig('"url" must be an http:// or https:// URL')
    headers = fields.get("headers") or {}
    if isinstance(headers, str):
        try:
            headers = json.loads(headers)
        except ValueError:
            raise store.BadConfig('"headers" must be a JSON object') from None
    if not isinstance(headers, Mapping):
        raise store.BadConfig('"headers" must be an object of header names to values')
    pairs: list[tuple[str, str]] = []
    for name, value in headers.items():
        values = value if isinstance(value, list) else [value]
        for v in values:
            if not isinstance(v, str):
                raise store.BadConfig(f'header "{name}" must be a string or a list of strings')
            pairs.append((str(name), v))
    cert = fields.get("client_certificate") or ""
    key = fields.get("client_key") or ""
    if bool(cert) != bool(key):
        raise store.BadConfig('"client_certificate" and "client_key" go together')
    return HTTPSettings(
        url=url.strip(),
        headers=tuple(pairs),
        certificate=str(fields.get("certificate") or ""),
        client_certificate=str(cert),
        client_key=str(key),
    )


def join_url(base: str, path: str) -> str:
    """``base`` with ``path`` joined below its path (pure)."""
    parsed = urllib.parse.urlparse(base)
    if not path.strip("/"):
        return base
    joined = posixpath.join(parsed.path or "/", path.lstrip("/"))
    return urllib.parse.urlunparse(parsed._replace(path=joined))


def file_name(url: str) -> str:
    """The last segment of the URL's path (pure)."""
    return posixpath.basename(urllib.parse.unquote(urllib.parse.urlparse(url).path))


class HTTPStore:
    """A base URL with its headers and TLS settings."""

    def __init__(self, settings: HTTPSettings) -> None:
        self.settings = settings
        self._context = self._ssl_context()

    def _ssl_context(self) -> ssl.SSLContext | None:
        s = self.settings
        if urllib.parse.urlparse(s.url).scheme != "https":
            return None
        context = ssl.create_default_context()
        if s.certificate:
            try:
                context.load_verify_locations(cadata=s.certificate)
            except ssl.SSLError:
                raise store.BadConfig('"certificate" is not a valid PEM CA bundle') from None
        if s.client_certificate:
            with tempfile.TemporaryDirectory(prefix="meshserve-tls-") as d:
                cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
                for path, text in ((cert, s.client_certificate), (key, s.client_key)):
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
                    with os.fdopen(fd, "w") as f:
                        f.write(text)
                try:
                    context.load_cert_chain(cert, key)
                except ssl.SSLError:
                    raise store.BadConfig(
                        '"client_certificate" / "client_key" are not a valid PEM pair'
                    ) from None
        return context

    def location(self, path: str) -> str:
        return store.public_url(join_url(self.settings.url, path))

    def list(self, path: str) -> list[store.RemoteObject]:
        url = join_url(self.settings.url, path)
        name = file_name(url)
        if not name:
            raise store.BadConfig(
                f"{store.public_url(url)} names no file (HTTP storage has no folders)"
            )
        return [store.RemoteObject(key=path.rstrip("/"), size=-1, name=name, handle=url)]

    def fetch(self, obj: store.RemoteObject, sink: store.Sink) -> None:
        url = obj.handle
        shown = store.public_url(url)
        request = urllib.request.Request(url)
        for name, value in self.settings.headers:
            request.add_header(name, value)
        try:
            with contextlib.closing(
                urllib.request.urlopen(
                    request, timeout=self.settings.timeout_seconds, context=self._context
                )
            ) as response:
                length = response.headers.get("Content-Length")
                announced = response.headers.get("Content-MD5") or ""
                md5 = ""
                with contextlib.suppress(ValueError):
                    md5 = base64.b64decode(announced, validate=True).hex() if announced else ""
                sink.announce(int(length) if length and length.isdigit() else -1, md5)
                while chunk := response.read(CHUNK_BYTES):
                    sink.write(chunk)
        except store.StoreError:
            raise
        except urllib.error.HTTPError as e:
            if e.code in (401, 403):
                raise store.AccessDenied(
                    f"access denied fetching {shown}: the server answered HTTP {e.code}"
                ) from None
            if e.code == 404:
                raise store.NotFound(f"{shown} does not exist (HTTP 404)") from None
            raise store.StoreError(f"fetching {shown} failed: HTTP {e.code}") from None
        except http.client.IncompleteRead as e:
            raise store.Corrupt(
                f"the transfer of {shown} broke off after {len(e.partial)} bytes"
            ) from None
        except (TimeoutError, urllib.error.URLError, ConnectionError) as e:
            reason = getattr(e, "reason", e)
            if isinstance(reason, ssl.SSLError):
                raise store.Unreachable(f"TLS with {shown} failed") from None
            raise store.Unreachable(f"{shown} is unreachable ({type(reason).__name__})") from None
        except http.client.HTTPException as e:
            raise store.Corrupt(f"the transfer of {shown} broke off ({type(e).__name__})") from None
