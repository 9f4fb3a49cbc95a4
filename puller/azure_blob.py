"""Azure Blob Storage, through azure-storage-blob.

Configuration fields, as in ModelMesh Serving: ``account_name`` and
``container``, with a ``connection_string`` for credentials; or no
credentials for a public container. Not in ModelMesh Serving but accepted:
``account_key`` or ``sas_token`` beside ``account_name``, and
``endpoint_url`` (the blob endpoint, for Azurite or a sovereign cloud).
Service-principal fields (``client_id``, ``client_secret``, ``tenant_id``)
need the azure-identity package, which this node does not carry: they are
refused with that reason.

Blobs are listed under the model's path and downloaded in chunks; a blob's
Content-MD5, where it has one, is passed on for the puller to check. Errors
are named from the storage error code, never from the request.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from azure.core import exceptions
from azure.storage import blob

from puller import store


@dataclasses.dataclass(frozen=True)
class AzureSettings:
    """What an ``azure`` storage configuration says."""

    container: str
    """The container holding the models."""
    account_name: str = ""
    """The storage account (needed unless the connection string names it)."""
    connection_string: str = ""
    """A storage connection string (holds the account key or a SAS)."""
    account_key: str = ""
    """The account's shared key, as an alternative to a connection string."""
    sas_token: str = ""
    """A shared access signature, as an alternative to a key."""
    endpoint_url: str = ""
    """The blob endpoint; empty: ``https://<account>.blob.core.windows.net``."""
    read_timeout_seconds: float = 60.0
    """How long one read may stall."""
    connect_timeout_seconds: float = 5.0
    """How long to wait for a connection before calling the endpoint unreachable."""
    retries: int = 2
    """Retries of a failed request (the SDK's default, 10, takes minutes on
    an unreachable endpoint)."""


def settings_from(fields: Mapping[str, Any]) -> AzureSettings:
    """:class:`AzureSettings` from a resolved configuration (pure); raises
    :class:`puller.store.BadConfig` naming a missing or malformed field."""

    def text(name: str) -> str:
        value = fields.get(name)
        if value is None:
            return ""
        if not isinstance(value, str):
            raise store.BadConfig(f'field "{name}" must be a string')
        return value.strip()

    container = text("container") or text("bucket")
    if not container:
        raise store.BadConfig('an "azure" storage configuration needs a "container"')
    principal = text("client_id") or text("client_secret") or text("tenant_id")
    if principal and not text("connection_string"):
        raise store.BadConfig(
            "service-principal authentication (client_id, client_secret, tenant_id) "
            "is not supported by this node (it needs azure-identity): use a "
            "connection_string"
        )
    settings = AzureSettings(
        container=container,
        account_name=text("account_name"),
        connection_string=text("connection_string"),
        account_key=text("account_key"),
        sas_token=text("sas_token"),
        endpoint_url=text("endpoint_url").rstrip("/"),
    )
    if not settings.connection_string and not settings.account_name:
        raise store.BadConfig(
            'an "azure" storage configuration needs an "account_name" or a "connection_string"'
        )
    return settings


def describe_error(e: Exception, what: str, endpoint: str) -> store.StoreError:
    """The :class:`puller.store.StoreError` for an azure-storage-blob failure."""
    if isinstance(e, exceptions.ClientAuthenticationError):
        code = getattr(e, "error_code", None) or "AuthenticationFailed"
        return store.AccessDenied(
            f"access denied reading {what}: the store rejected the credentials ({code})"
        )
    if isinstance(e, exceptions.ResourceNotFoundError):
        code = getattr(e, "error_code", None) or "NotFound"
        return store.NotFound(f"{what} does not exist ({code})")
    if isinstance(e, exceptions.HttpResponseError):
        code = getattr(e, "error_code", None) or "unknown"
        if e.status_code in (401, 403):
            return store.AccessDenied(
                f"access denied reading {what}: the store rejected the credentials or "
                f"their rights ({code})"
            )
        if e.status_code == 404:
            return store.NotFound(f"{what} does not exist ({code})")
        return store.StoreError(f"reading {what} failed: {code} (HTTP {e.status_code})")
    if isinstance(e, exceptions.ServiceRequestError):
        return store.Unreachable(f"the Azure Blob endpoint {endpoint} is unreachable")
    if isinstance(e, exceptions.ServiceResponseError | exceptions.IncompleteReadError):
        return store.Corrupt(f"the transfer of {what} broke off")
    if isinstance(e, ValueError):
        return store.BadConfig("the Azure connection string or account settings are malformed")
    return store.StoreError(f"reading {what} failed: {type(e).__name__}")


class AzureStore:
    """One container with its credentials."""

    def __init__(self, settings: AzureSettings) -> None:
        self.settings = settings
        try:
            if settings.connection_string:
                self._client = blob.ContainerClient.from_connection_string(
                    settings.connection_string,
                    settings.container,
                    read_timeout=settings.read_timeout_seconds,
                    connection_timeout=settings.connect_timeout_seconds,
                    retry_total=settings.retries,
                    retry_backoff_factor=0.2,
                )
            else:
                credential: Any = None
                if settings.account_key:
                    credential = {
                        "account_name": settings.account_name,
                        "account_key": settings.account_key,
                    }
                elif settings.sas_token:
                    credential = settings.sas_token
                self._client = blob.ContainerClient(
                    self._account_url(),
                    settings.container,
                    credential=credential,
                    read_timeout=settings.read_timeout_seconds,
                    connection_timeout=settings.connect_timeout_seconds,
                    retry_total=settings.retries,
                    retry_backoff_factor=0.2,
                )
        except ValueError:
            raise store.BadConfig(
                "the Azure connection string or account settings are malformed"
            ) from None
        self._endpoint = self._client.primary_endpoint.split("?", 1)[0].rsplit("/", 1)[0]

    def _account_url(self) -> str:
        if self.settings.endpoint_url:
            return self.settings.endpoint_url
        return f"https://{self.settings.account_name}.blob.core.windows.net"

    def location(self, path: str) -> str:
        account = self.settings.account_name or self._client.account_name or "?"
        return f"azure://{account}/{self.settings.container}/{path.lstrip('/')}"

    def list(self, path: str) -> list[store.RemoteObject]:
        try:
            return [
                store.RemoteObject(
                    key=item.name,
                    size=int(item.size or 0),
                    md5=bytes(item.content_settings.content_md5 or b"").hex(),
                )
                for item in self._client.list_blobs(name_starts_with=path.rstrip("/") or None)
            ]
        except Exception as e:
            raise describe_error(e, self.location(path), self._endpoint) from None

    def fetch(self, obj: store.RemoteObject, sink: store.Sink) -> None:
        try:
            downloader = self._client.download_blob(obj.key, max_concurrency=2)
            for chunk in downloader.chunks():
                sink.write(chunk)
        except store.StoreError:
            raise
        except Exception as e:
            raise describe_error(e, self.location(obj.key), self._endpoint) from None
