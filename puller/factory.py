"""The puller a node uses, built from the node's settings.

The composition root (:mod:`meshserve.node`) calls :func:`make_puller` once at
start-up, before the runtime starts: it builds a
:class:`puller.model_puller.StoragePuller` for local folders, PVCs, HTTP(S),
S3, GCS and Azure Blob, and sweeps what an earlier run left in the model
directory.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable

from puller import disk_cache, model_puller


def make_puller(
    model_dir: pathlib.Path,
    models_root: pathlib.Path,
    storage_config_dir: pathlib.Path | None,
    *,
    max_concurrent_pulls: int = model_puller.PullerSettings.max_concurrent_pulls,
    on_pulled: Callable[[model_puller.PullReport], None] | None = None,
    disk_cache_bytes: int = 0,
    on_disk_event: disk_cache.EventHook | None = None,
) -> disk_cache.DiskCachePuller:
    """The node's puller, with the model directory swept of leftovers.

    ``model_dir`` is the runtime's model repository, ``models_root`` the base
    of relative local paths and of PVC mounts, ``storage_config_dir`` the
    mounted ``storage-config`` Secret (``None``: local files and URI paths
    only). Storage configuration files are re-read when they change.
    ``on_pulled`` receives a :class:`puller.model_puller.PullReport` after each
    successful pull (bytes, seconds, unpack time): the hook for a pull-time
    metric. ``disk_cache_bytes`` bounds the disk tier in front of it
    (:mod:`puller.disk_cache`; 0: off), whose hits, misses and drops go to
    ``on_disk_event``; what it kept from an earlier run is read back.
    """
    model_dir.mkdir(parents=True, exist_ok=True)
    puller = model_puller.StoragePuller(
        model_puller.PullerSettings(
            model_dir=model_dir,
            models_root=models_root,
            storage_config_dir=storage_config_dir,
            max_concurrent_pulls=max_concurrent_pulls,
        ),
        on_pulled=on_pulled,
    )
    puller.sweep()
    tier = disk_cache.DiskCachePuller(puller, model_dir, disk_cache_bytes, on_disk_event)
    tier.load_index()
    return tier
