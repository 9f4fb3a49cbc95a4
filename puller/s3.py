"""S3 storage (AWS S3, and any S3-compatible store: MinIO, Ceph, IBM COS),
through boto3.

Configuration fields, as in ModelMesh Serving: ``access_key_id``,
``secret_access_key``, ``endpoint_url``, ``region``, ``bucket`` (or
``default_bucket``) and an optional ``certificate`` (a PEM CA bundle for a
private endpoint). Without keys, boto3's own credential chain is used
(environment, web identity, instance profile).

Objects are listed with ``ListObjectsV2`` under the model's path and read
with one streaming ``GetObject`` each; the single-part ETag (an MD5) is
passed on so the puller can check what arrived. Errors are named from S3's
error codes, never from the request (which is signed with the secret).
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
import re
import tempfile
import threading
from collections.abc import Mapping
from typing import Any

import boto3
import botocore.config
import botocore.exceptions

from puller import store

CHUNK_BYTES = 1024 * 1024
_MD5_ETAG = re.compile(r'^"?([0-9a-fA-F]{32})"?$')
_DENIED = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
    "AllAccessDisabled",
    "AccountProblem",
    "403",
    "401",
}
_MISSING = {"NoSuchKey", "NoSuchBucket", "404", "NotFound"}


@dataclasses.dataclass(frozen=True)
class S3Settings:
    """What an ``s3`` storage configuration says."""

    bucket: str
    """The bucket holding the models."""
    endpoint_url: str = ""
    """The S3 endpoint (``https://...``); empty: AWS's own for the region."""
    region: str = "us-east-1"
    """The bucket's region (signatures depend on it)."""
    access_key_id: str = ""
    """Access key id; empty (with the secret): boto3's credential chain."""
    secret_access_key: str = ""
    """Secret access key."""
    certificate: str = ""
    """PEM CA bundle to trust for the endpoint, if it has a private CA."""
    connect_timeout_seconds: float = 5.0
    """How long to wait for a connection before calling the endpoint unreachable."""
    read_timeout_seconds: float = 60.0
    """How long a read may stall."""
    max_attempts: int = 3
    """Attempts per request (boto3's standard retry mode)."""


def settings_from(fields: Mapping[str, Any]) -> S3Settings:
    """:class:`S3Settings` from a resolved configuration (pure); raises
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
        raise store.BadConfig('an "s3" storage configuration needs a "bucket"')
    key_id, secret = text("access_key_id"), text("secret_access_key")
    if bool(key_id) != bool(secret):
        raise store.BadConfig('"access_key_id" and "secret_access_key" go together')
    endpoint = text("endpoint_url")
    if endpoint and "://" not in endpoint:
        endpoint = f"https://{endpoint}"
    return S3Settings(
        bucket=bucket,
        endpoint_url=endpoint,
        region=text("region") or "us-east-1",
        access_key_id=key_id,
        secret_access_key=secret,
        certificate=text("certificate"),
    )


def md5_from_etag(etag: str) -> str:
    """The MD5 an ETag carries (single-part uploads), else ``""`` (pure)."""
    m = _MD5_ETAG.match(etag or "")
    return m.group(1).lower() if m else ""


def describe_error(e: Exception, what: str, endpoint: str) -> store.StoreError:
    """The :class:`puller.store.StoreError` for a boto3 failure (pure): named
    from the error code and status, never from the signed request."""
    if isinstance(e, botocore.exceptions.ClientError):
        err = e.response.get("Error", {})
        code = str(err.get("Code", "")) or "unknown"
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in _DENIED or status in (401, 403):
            return store.AccessDenied(
                f"access denied reading {what}: the store rejected the credentials or "
                f"their rights ({code})"
            )
        if code == "NoSuchBucket":
            return store.NotFound(f"the bucket of {what} does not exist")
        if code in _MISSING or status == 404:
            return store.NotFound(f"{what} does not exist")
        return store.StoreError(f"reading {what} failed: S3 error {code} (HTTP {status})")
    if isinstance(
        e, botocore.exceptions.NoCredentialsError | botocore.exceptions.PartialCredentialsError
    ):
        return store.AccessDenied("no S3 credentials: the storage configuration has none")
    if isinstance(
        e,
        botocore.exceptions.EndpointConnectionError
        | botocore.exceptions.ConnectTimeoutError
        | botocore.exceptions.ReadTimeoutError
        | botocore.exceptions.ConnectionClosedError,
    ):
        return store.Unreachable(f"the S3 endpoint {endpoint or 'of AWS'} is unreachable")
    if isinstance(
        e, botocore.exceptions.ResponseStreamingError | botocore.exceptions.IncompleteReadError
    ):
        return store.Corrupt(f"the transfer of {what} broke off")
    if isinstance(e, botocore.exceptions.FlexibleChecksumError):
        # The store's own CRC/SHA of the object, checked by botocore before ours.
        return store.Corrupt(f"{what}: checksum mismatch ({e})")
    if isinstance(e, botocore.exceptions.SSLError):
        return store.Unreachable(f"TLS with the S3 endpoint {endpoint} failed")
    return store.StoreError(f"reading {what} failed: {type(e).__name__}")


_cert_files: list[str] = []
_cert_lock = threading.Lock()


def _certificate_file(pem: str) -> str:
    """A file holding ``pem`` (botocore wants a path), removed at exit."""
    fd, path = tempfile.mkstemp(prefix="meshserve-s3-ca-", suffix=".pem")
    with os.fdopen(fd, "w") as f:
        f.write(pem)
    with _cert_lock:
        if not _cert_files:
            atexit.register(_remove_cert_files)
        _cert_files.append(path)
    return path


def _remove_cert_files() -> None:
    for path in _cert_files:
        with contextlib.suppress(OSError):
            os.unlink(path)


class S3Store:
    """One bucket with its credentials."""

    def __init__(self, settings: S3Settings) -> None:
        self.settings = settings
        config = botocore.config.Config(
            connect_timeout=settings.connect_timeout_seconds,
            read_timeout=settings.read_timeout_seconds,
            retries={"max_attempts": settings.max_attempts, "mode": "standard"},
            s3={"addressing_style": "path"} if settings.endpoint_url else {},
            max_pool_connections=16,
        )
        verify: str | bool = True
        if settings.certificate:
            verify = _certificate_file(settings.certificate)
        session = boto3.session.Session()
        self._client = session.client(
            "s3",
            endpoint_url=settings.endpoint_url or None,
            region_name=settings.region,
            aws_access_key_id=settings.access_key_id or None,
            aws_secret_access_key=settings.secret_access_key or None,
            config=config,
            verify=verify,
        )

    def location(self, path: str) -> str:
        return f"s3://{self.settings.bucket}/{path.lstrip('/')}"

    def list(self, path: str) -> list[store.RemoteObject]:
        found: list[store.RemoteObject] = []
        try:
            paginator = self._client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.settings.bucket, Prefix=path.rstrip("/")):
                for item in page.get("Contents", []):
                    found.append(
                        store.RemoteObject(
                            key=str(item["Key"]),
                            size=int(item["Size"]),
                            md5=md5_from_etag(str(item.get("ETag", ""))),
                        )
                    )
        except Exception as e:
            raise describe_error(e, self.location(path), self.settings.endpoint_url) from None
        return found

    def fetch(self, obj: store.RemoteObject, sink: store.Sink) -> None:
        what = self.location(obj.key)
        try:
            response = self._client.get_object(Bucket=self.settings.bucket, Key=obj.key)
            body = response["Body"]
            try:
                while chunk := body.read(CHUNK_BYTES):
                    sink.write(chunk)
            finally:
                body.close()
        except store.StoreError:
            raise
        except Exception as e:
            raise describe_error(e, what, self.settings.endpoint_url) from None
