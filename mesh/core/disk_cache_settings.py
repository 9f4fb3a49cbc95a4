"""Settings of the disk tier: how many bytes of evicted models a node keeps.

One frozen :class:`DiskCacheSettings` read from ``MESHSERVE_DISK_CACHE``. The
budget is either a size (``2Gi``, ``500M``, ``0`` for off) or a share of the
data folder's free space (``20%``); unset, :data:`DEFAULT_FREE_SHARE` of it.
Free space is I/O, so the share is turned into bytes by
:func:`budget_bytes` at the node's start, from the free bytes it measured.
Pure.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from mesh.core import env_reader, errors

DEFAULT_FREE_SHARE = 0.25
"""Share of the data folder's free space the tier may use when
``MESHSERVE_DISK_CACHE`` is unset: room is left for the models being
pulled and loaded (the node's capacity in memory is usually far below
its disk)."""


@dataclasses.dataclass(frozen=True)
class DiskCacheSettings:
    """The disk tier: files of models evicted from memory stay on the node's
    disk, least recently used dropped first, so a reload skips the pull."""

    size_bytes: int | None = None
    """Most bytes of evicted models kept (``MESHSERVE_DISK_CACHE``: ``2Gi``,
    ``500M``, ``0`` turns the tier off); ``None``: ``free_share`` of the
    free space."""
    free_share: float = DEFAULT_FREE_SHARE
    """Share of the data folder's free space used when no size is given
    (``MESHSERVE_DISK_CACHE=20%``)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> DiskCacheSettings:
        """From ``MESHSERVE_DISK_CACHE``: a size, a percentage, or unset."""
        text = env_reader.EnvReader(env, strip=True).text("MESHSERVE_DISK_CACHE")
        if text is None:
            return cls()
        if text.endswith("%"):
            try:
                share = float(text[:-1]) / 100
            except ValueError:
                share = -1.0
            if not 0 <= share <= 1:
                raise errors.ConfigError(
                    f"MESHSERVE_DISK_CACHE: {text!r} is not a share of free space (0% to 100%)"
                )
            return cls(free_share=share)
        return cls(size_bytes=env_reader.parse_size(text, "MESHSERVE_DISK_CACHE"))


def budget_bytes(settings: DiskCacheSettings, free_bytes: int) -> int:
    """Bytes the tier may hold, given the data folder's free bytes at start
    (what is already in the tier counts as free: it is the tier's own)."""
    if settings.size_bytes is not None:
        return max(0, settings.size_bytes)
    return max(0, int(free_bytes * settings.free_share))
