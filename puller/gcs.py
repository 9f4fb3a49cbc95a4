"""Google Cloud Storage, through google-cloud-storage.

Configuration fields, as in ModelMesh Serving: ``bucket``, and for a
service account ``private_key`` and ``client_email`` (with an optional
``token_uri``). Without them the bucket is read anonymously (public
buckets). ``endpoint_url`` (not in ModelMesh Serving) points the client at
another endpoint: a private one, or an emulator in tests.

Objects are listed under the model's path and read raw (no transcoding, so
sizes and MD5s match what was stored); GCS's MD5 is passed on for the
puller to check. Errors are named from the HTTP status, never from the
request.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Mapping
from typing import Any

from google.api_core import client_options, exceptions
from google.auth import credentials as auth_credentials
from google.auth import exceptions as auth_exceptions
from google.cloud import storage
from google.oauth2 import service_account

from puller import store

DEFAULT_TOKEN_URI = "https://oauth2.googleapis.com/token"


@dataclasses.dataclass(frozen=True)
class GCSSettings:
    """What a ``gcs`` storage configuration says."""

    bucket: str
    """The bucket holding the models."""
    private_key: str = ""
    """The service account's PEM private key; empty: anonymous access."""
    client_email: str = ""
    """The service account's e-mail."""
    token_uri: str = DEFAULT_TOKEN_URI
    """Where the service account gets its tokens."""
    endpoint_url: str = ""
    """Another API endpoint than Google's (an emulator, a private endpoint)."""
    timeout_seconds: float = 30.0
    """Timeout of one request."""
    retry_deadline_seconds: float = 20.0
    """How long transient errors (an unreachable endpoint) are retried."""


def settings_from(fields: Mapping[str, Any]) -> GCSSettings:
    """:class:`GCSSettings` from a resolved configuration (pure); raises
    :class:`puller.store.BadConfig` naming a missing or malformed field."""

    def text(name: str) -> str:
        value = fields.get(name)
        if value is None:
            return ""
        if not isinstance(value, str):
            raise store.BadConfig(f'field "{name}" must be a string')
        return value.strip()

    bucket = text("bucket") or text("default_bucket")
    if not bucket:
        raise store.BadConfig('a "gcs" storage configuration needs a "bucket"')
    key, email = text("private_key"), text("client_email")
    if bool(key) != bool(email):
        raise store.BadConfig('"private_key" and "client_email" go together')
    return GCSSettings(
        bucket=bucket,
        private_key=key,
        client_email=email,
        token_uri=text("token_uri") or DEFAULT_TOKEN_URI,
        endpoint_url=text("endpoint_url"),
    )


def md5_hex(b64: str | None) -> str:
    """GCS's base64 MD5 as hex, or ``""`` (pure)."""
    if not b64:
        return ""
    try:
        return base64.b64decode(b64).hex()
    except ValueError:
        return ""


def describe_error(e: Exception, what: str, endpoint: str) -> store.StoreError:
    """The :class:`puller.store.StoreError` for a google-cloud-storage failure."""
    if isinstance(e, exceptions.Forbidden | exceptions.Unauthorized):
        return store.AccessDenied(
            f"access denied reading {what}: the store rejected the credentials or their "
            f"rights (HTTP {e.code})"
        )
    if isinstance(e, auth_exceptions.GoogleAuthError):
        return store.AccessDenied(
            f"access denied reading {what}: the service account could not sign in "
            f"({type(e).__name__})"
        )
    if isinstance(e, exceptions.NotFound):
        return store.NotFound(f"{what} does not exist (or its bucket does not)")
    if isinstance(e, exceptions.RetryError | exceptions.ServiceUnavailable | ConnectionError):
        return store.Unreachable(f"the GCS endpoint {endpoint} is unreachable")
    if isinstance(e, exceptions.GoogleAPICallError):
        return store.StoreError(f"reading {what} failed: HTTP {e.code}")
    if type(e).__name__ in ("DataCorruption", "ChunkedEncodingError", "ProtocolError"):
        return store.Corrupt(f"the transfer of {what} broke off or was corrupted")
    if isinstance(e, OSError) and e.errno is None:
        return store.Unreachable(f"the GCS endpoint {endpoint} is unreachable")
    return store.StoreError(f"reading {what} failed: {type(e).__name__}")


class GCSStore:
    """One bucket with its credentials."""

    def __init__(self, settings: GCSSettings) -> None:
        self.settings = settings
        creds: auth_credentials.Credentials
        if settings.private_key:
            try:
                creds = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
                    {
                        "type": "service_account",
                        "private_key": settings.private_key,
                        "client_email": settings.client_email,
                        "token_uri": settings.token_uri,
                    },
                    scopes=["https://www.googleapis.com/auth/devstorage.read_only"],
                )
            except (ValueError, auth_exceptions.GoogleAuthError):
                raise store.BadConfig('"private_key" is not a valid PEM private key') from None
        else:
            creds = auth_credentials.AnonymousCredentials()  # type: ignore[no-untyped-call]
        options = (
            client_options.ClientOptions(api_endpoint=settings.endpoint_url)
            if settings.endpoint_url
            else None
        )
        self._client = storage.Client(
            project="meshserve", credentials=creds, client_options=options
        )
        self._retry = storage.retry.DEFAULT_RETRY.with_timeout(
            settings.retry_deadline_seconds
        ).with_delay(initial=0.2, maximum=2.0)
        self._endpoint = settings.endpoint_url or "storage.googleapis.com"

    def location(self, path: str) -> str:
        return f"gs://{self.settings.bucket}/{path.lstrip('/')}"

    def list(self, path: str) -> list[store.RemoteObject]:
        try:
            blobs = self._client.list_blobs(
                self.settings.bucket,
                prefix=path.rstrip("/"),
                timeout=self.settings.timeout_seconds,
                retry=self._retry,
            )
            return [
                store.RemoteObject(key=b.name, size=int(b.size or 0), md5=md5_hex(b.md5_hash))
                for b in blobs
            ]
        except Exception as e:
            raise describe_error(e, self.location(path), self._endpoint) from None

    def fetch(self, obj: store.RemoteObject, sink: store.Sink) -> None:
        blob = self._client.bucket(self.settings.bucket).blob(obj.key)
        try:
            blob.download_to_file(
                sink,
                raw_download=True,
                checksum=None,  # the puller checks the MD5 itself
                timeout=self.settings.timeout_seconds,
                retry=self._retry,
            )
        except store.StoreError:
            raise
        except Exception as e:
            raise describe_error(e, self.location(obj.key), self._endpoint) from None
