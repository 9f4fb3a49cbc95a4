"""Which :class:`puller.store.Store` serves a resolved storage source.

One place maps a storage type to its backend module. Cloud SDKs are heavy to
import (boto3, google-cloud-storage, azure-storage-blob), so each backend
module is imported the first time a model needs it, not when the node
starts. Stores hold clients with connection pools, so a store is kept and
reused for the same configuration (by a fingerprint of its fields: a changed
Secret or a different bucket gets a new client).
"""

from __future__ import annotations

import collections
import pathlib
import threading

from puller import local_files, storage_config, store


class Stores:
    """Makes (and reuses) the store for a :class:`storage_config.Source`.
    Thread-safe: pulls run in worker threads."""

    def __init__(self, models_root: pathlib.Path, keep: int = 16) -> None:
        self._models_root = models_root
        self._keep = keep
        self._stores: collections.OrderedDict[str, store.Store] = collections.OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, source: storage_config.Source) -> store.Store:
        if source.type == "local":
            return local_files.LocalStore(self._models_root)
        if source.type == "pvc":
            return local_files.LocalStore(
                self._models_root, local_files.pvc_root(source.fields, self._models_root)
            )
        fingerprint = source.digest()
        with self._lock:
            found = self._stores.get(fingerprint)
            if found is not None:
                self._stores.move_to_end(fingerprint)
                return found
        made = build(source)
        with self._lock:
            self._stores[fingerprint] = made
            while len(self._stores) > self._keep:
                self._stores.popitem(last=False)
        return made


def build(source: storage_config.Source) -> store.Store:
    """A new store for an object-storage or HTTP source; raises
    :class:`puller.store.BadConfig` for a malformed configuration."""
    if source.type == "s3":
        from puller import s3  # noqa: PLC0415 - imports its SDK on first use

        return s3.S3Store(s3.settings_from(source.fields))
    if source.type == "gcs":
        from puller import gcs  # noqa: PLC0415 - imports its SDK on first use

        return gcs.GCSStore(gcs.settings_from(source.fields))
    if source.type == "azure":
        from puller import azure_blob  # noqa: PLC0415 - imports its SDK on first use

        return azure_blob.AzureStore(azure_blob.settings_from(source.fields))
    if source.type == "http":
        from puller import http_url  # noqa: PLC0415 - imports its SDK on first use

        return http_url.HTTPStore(http_url.settings_from(source.fields))
    raise store.BadConfig(f"storage type {source.type!r} has no backend")
