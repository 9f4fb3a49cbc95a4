"""Model archives: a ``.tar.gz``, ``.tgz``, ``.tar`` or ``.zip`` object is
unpacked into the model folder after download.

An archive comes from outside the node, so every entry is checked before
anything is written: a name that is absolute or climbs out with ``..``
(zip-slip, tar path traversal), a link whose target lies outside the folder,
a hard link to something that is not in the archive, or a device or FIFO
refuses the whole archive with :class:`puller.store.UnsafeArchive`, naming
the entry. The checks are pure (:func:`check_entries` over :class:`Entry`
values); extraction re-checks each real path as it writes, so links inside
the archive cannot be chained to reach outside either.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import pathlib
import posixpath
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

from puller import store

Kind = Literal["file", "dir", "symlink", "hardlink", "other"]

SUFFIXES = {".tar.gz": "tar", ".tgz": "tar", ".tar": "tar", ".zip": "zip"}
"""File endings unpacked after download, and the archive format each means."""


@dataclasses.dataclass(frozen=True)
class Entry:
    """One entry of an archive, as the archive describes it."""

    name: str
    """Its path inside the archive."""
    kind: Kind
    """What it is."""
    link: str = ""
    """A link's target (a symbolic link's text, a hard link's entry name)."""
    size: int = 0
    """Bytes it unpacks to (files only)."""


def archive_format(name: str) -> str | None:
    """``"tar"`` or ``"zip"`` when a file called ``name`` is an archive to
    unpack, else ``None``."""
    lower = name.lower()
    for suffix, fmt in SUFFIXES.items():
        if lower.endswith(suffix):
            return fmt
    return None


def _strip_dir_slash(name: str) -> str:
    return name[:-1] if name.endswith("/") and len(name) > 1 else name


def check_entries(entries: Iterable[Entry]) -> int:
    """Raise :class:`puller.store.UnsafeArchive` naming the first entry that
    would write outside the model folder; return the bytes the archive
    unpacks to."""
    names: set[str] = set()
    total = 0
    listed = list(entries)
    for e in listed:
        names.add(_checked_name(e.name))
    for e in listed:
        name = _checked_name(e.name)
        if e.kind == "other":
            raise store.UnsafeArchive(f"archive entry {e.name!r} is a device, FIFO or socket")
        if e.kind == "symlink":
            if not e.link or e.link.startswith("/") or "\\" in e.link:
                raise store.UnsafeArchive(
                    f"archive entry {e.name!r} is a link to {e.link!r}, outside the model folder"
                )
            target = posixpath.normpath(posixpath.join(posixpath.dirname(name), e.link))
            if target == ".." or target.startswith("../"):
                raise store.UnsafeArchive(
                    f"archive entry {e.name!r} is a link to {e.link!r}, outside the model folder"
                )
        if e.kind == "hardlink":
            try:
                target = store.safe_relative(_strip_dir_slash(e.link))
            except store.UnsafeArchive:
                raise store.UnsafeArchive(
                    f"archive entry {e.name!r} is a hard link to {e.link!r}, outside the "
                    "model folder"
                ) from None
            if target not in names:
                raise store.UnsafeArchive(
                    f"archive entry {e.name!r} is a hard link to {e.link!r}, which is not "
                    "in the archive"
                )
        if e.kind == "file":
            total += max(e.size, 0)
    return total


def _checked_name(name: str) -> str:
    try:
        return store.safe_relative(_strip_dir_slash(name))
    except store.UnsafeArchive as e:
        raise store.UnsafeArchive(f"archive entry {e.message}") from None


def tar_entries(members: Sequence[tarfile.TarInfo]) -> list[Entry]:
    """The :class:`Entry` values of a tar archive's members."""
    out: list[Entry] = []
    for m in members:
        kind: Kind
        if m.isreg():
            kind = "file"
        elif m.isdir():
            kind = "dir"
        elif m.issym():
            kind = "symlink"
        elif m.islnk():
            kind = "hardlink"
        else:
            kind = "other"
        out.append(Entry(m.name, kind, m.linkname, m.size))
    return out


def _zip_kind(info: zipfile.ZipInfo) -> Kind:
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return "symlink"
    if info.is_dir():
        return "dir"
    if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
        return "other"
    return "file"


def zip_entries(zf: zipfile.ZipFile) -> list[Entry]:
    """The :class:`Entry` values of a zip archive's members (a symbolic
    link's target is its stored content)."""
    out: list[Entry] = []
    for info in zf.infolist():
        kind = _zip_kind(info)
        link = ""
        if kind == "symlink":
            link = zf.read(info).decode("utf-8", errors="replace")
        out.append(Entry(info.filename, kind, link, info.file_size))
    return out


_BROKEN = (tarfile.TarError, zipfile.BadZipFile, EOFError, gzip.BadGzipFile, zlib.error)


def unpack(
    archive: pathlib.Path, dest: pathlib.Path, check_room: Callable[[int], None] | None = None
) -> int:
    """Check every entry of ``archive``, then unpack it into ``dest`` (an
    existing folder). ``check_room(bytes)`` is called with the size the
    archive declares before anything is written (it raises to refuse).
    Returns the bytes written. Raises :class:`puller.store.UnsafeArchive`
    for a bad entry and :class:`puller.store.Corrupt` for a broken archive."""
    fmt = archive_format(archive.name)
    try:
        if fmt == "zip":
            with zipfile.ZipFile(archive) as zf:
                declared = check_entries(zip_entries(zf))
                if check_room is not None:
                    check_room(declared)
                return _unpack_zip(zf, dest)
        with tarfile.open(archive, "r:*") as tf:
            members = tf.getmembers()
            declared = check_entries(tar_entries(members))
            if check_room is not None:
                check_room(declared)
            try:
                tf.extractall(dest, filter="data")
            except tarfile.FilterError as e:
                raise store.UnsafeArchive(f"archive entry refused: {e}") from None
            return declared
    except _BROKEN as e:
        raise store.Corrupt(f"{archive.name!r} is not a readable {fmt} archive ({e})") from None


def _inside(root: str, path: str) -> bool:
    return path == root or path.startswith(root + os.sep)


def _unpack_zip(zf: zipfile.ZipFile, dest: pathlib.Path) -> int:
    root = os.path.realpath(dest)
    written = 0
    for info in zf.infolist():
        name = _checked_name(info.filename)
        kind = _zip_kind(info)
        target = os.path.join(root, *name.split("/"))
        parent = os.path.realpath(os.path.dirname(target))
        if not _inside(root, parent):
            raise store.UnsafeArchive(f"archive entry {info.filename!r} leads outside the folder")
        if kind == "dir":
            os.makedirs(target, exist_ok=True)
            continue
        os.makedirs(parent, exist_ok=True)
        final = os.path.join(parent, os.path.basename(target))
        if os.path.lexists(final) and os.path.isdir(final) and not os.path.islink(final):
            raise store.UnsafeArchive(f"archive entry {info.filename!r} overwrites a folder")
        if kind == "symlink":
            link = zf.read(info).decode("utf-8", errors="replace")
            resolved = os.path.realpath(os.path.join(parent, link))
            if not _inside(root, resolved):
                raise store.UnsafeArchive(
                    f"archive entry {info.filename!r} is a link to {link!r}, outside the "
                    "model folder"
                )
            if os.path.lexists(final):
                os.unlink(final)
            os.symlink(link, final)
            continue
        if os.path.islink(final):
            os.unlink(final)  # never write through a link the archive made
        with zf.open(info) as src, open(final, "wb") as out:
            shutil.copyfileobj(src, out, 1024 * 1024)
        written += info.file_size
    return written
