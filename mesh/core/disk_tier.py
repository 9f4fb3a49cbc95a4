"""The disk tier's rules: what to keep, what to drop, and when kept files
may be trusted again.

A model evicted from memory keeps its files on the node's disk, so that its
next load skips the pull (DESIGN.md §7). The tier is bounded in bytes and
drops the least recently kept or used model first (:func:`plan_keep`). Kept
files are trusted again only if nothing changed them: a :class:`Manifest`
of every file's name, size and modification time, and the model's source
(:func:`source_key`), is written when the files are kept and compared with
what lies on disk before a reload (:func:`manifest_problem`).

Pure: the files themselves are moved and listed by :mod:`puller.disk_tier`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping

from mesh.core import records

MANIFEST_VERSION = 1


@dataclasses.dataclass(frozen=True)
class DiskEntry:
    """A model whose files the tier holds."""

    model_id: str
    size_bytes: int
    used: float
    """When the model was kept or last reloaded (seconds, any clock)."""


@dataclasses.dataclass(frozen=True)
class KeepPlan:
    """What keeping a model's files takes."""

    keep: bool
    """Whether the files are kept at all (no bigger than the whole tier)."""
    drop: tuple[str, ...] = ()
    """Models to drop from the tier first, least recently used first."""


def plan_keep(entries: Iterable[DiskEntry], budget_bytes: int, incoming: DiskEntry) -> KeepPlan:
    """Keep ``incoming`` within ``budget_bytes``: drop the least recently used
    entries until it fits (an older entry of the same model is replaced).
    A model bigger than the budget is not kept, and nothing is dropped for
    it."""
    if incoming.size_bytes > budget_bytes:
        return KeepPlan(keep=False)
    others = sorted(
        (e for e in entries if e.model_id != incoming.model_id), key=lambda e: (e.used, e.model_id)
    )
    used = sum(e.size_bytes for e in others)
    drop: list[str] = []
    for e in others:
        if used + incoming.size_bytes <= budget_bytes:
            break
        drop.append(e.model_id)
        used -= e.size_bytes
    return KeepPlan(keep=True, drop=tuple(drop))


def over_budget(entries: Iterable[DiskEntry], budget_bytes: int) -> tuple[str, ...]:
    """Models to drop, least recently used first, until the rest fit
    ``budget_bytes`` (the tier found at start may exceed a smaller budget)."""
    ordered = sorted(entries, key=lambda e: (e.used, e.model_id))
    used = sum(e.size_bytes for e in ordered)
    drop: list[str] = []
    for e in ordered:
        if used <= budget_bytes:
            break
        drop.append(e.model_id)
        used -= e.size_bytes
    return tuple(drop)


def source_key(record: records.ModelRecord) -> str:
    """What the files were pulled from, as one string: kept files are reused
    only for a record of the same source (:meth:`records.ModelRecord.same_source`)."""
    return json.dumps(
        [
            record.model_type,
            record.path,
            record.storage_key,
            sorted(dict(record.storage_params).items()),
            record.schema_path,
            record.runtime,
        ],
        separators=(",", ":"),
    )


@dataclasses.dataclass(frozen=True)
class FileStamp:
    """One file as it lay on disk when the model was kept."""

    size: int
    mtime_ns: int


@dataclasses.dataclass(frozen=True)
class Manifest:
    """Every file of a kept model folder, and the model's source."""

    model_id: str
    source: str
    """:func:`source_key` of the record the files were pulled for."""
    files: Mapping[str, FileStamp]
    """Relative path (``/``-separated) → size and modification time."""

    @property
    def size_bytes(self) -> int:
        return sum(f.size for f in self.files.values())

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": MANIFEST_VERSION,
                "model_id": self.model_id,
                "source": self.source,
                "files": {k: [f.size, f.mtime_ns] for k, f in sorted(self.files.items())},
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> Manifest | None:
        """The manifest in ``text``, or ``None`` if it is not one (a
        damaged manifest means files not to trust)."""
        try:
            d = json.loads(text)
            if d["version"] != MANIFEST_VERSION:
                return None
            files = {str(k): FileStamp(int(v[0]), int(v[1])) for k, v in d["files"].items()}
            return cls(str(d["model_id"]), str(d["source"]), files)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            return None


def manifest_problem(
    manifest: Manifest, model_id: str, source: str, found: Mapping[str, FileStamp]
) -> str | None:
    """Why the kept files ``found`` (relative path → stamp, as on disk now)
    may not be loaded for ``model_id`` from ``source``, if they may not."""
    if manifest.model_id != model_id:
        return f"the kept files are those of model {manifest.model_id!r}"
    if manifest.source != source:
        return "the model's source changed since its files were kept"
    missing = sorted(set(manifest.files) - set(found))
    if missing:
        return f"{len(missing)} kept file(s) are missing ({missing[0]}...)"
    extra = sorted(set(found) - set(manifest.files))
    if extra:
        return f"{len(extra)} file(s) appeared among the kept files ({extra[0]}...)"
    changed = sorted(k for k, f in manifest.files.items() if found[k] != f)
    if changed:
        return f"{len(changed)} kept file(s) changed ({changed[0]}...)"
    return None
