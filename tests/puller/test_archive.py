"""Archives unpack into the model folder, and no entry may land outside it:
zip-slip, tar path traversal, absolute names, links pointing out, devices."""

from __future__ import annotations

import io
import pathlib
import stat
import tarfile
import zipfile

import pytest

from puller import archive, store


def make_tar(path: pathlib.Path, members: list[tuple[str, str, bytes | str]]) -> pathlib.Path:
    """``members``: (kind, name, data-or-link) with kind file, dir, sym, hard, fifo."""
    with tarfile.open(path, "w:gz") as tf:
        for kind, name, payload in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                data = payload if isinstance(payload, bytes) else payload.encode()
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
                continue
            info.type = {
                "dir": tarfile.DIRTYPE,
                "sym": tarfile.SYMTYPE,
                "hard": tarfile.LNKTYPE,
                "fifo": tarfile.FIFOTYPE,
            }[kind]
            info.linkname = str(payload)
            tf.addfile(info)
    return path


def make_zip(path: pathlib.Path, members: list[tuple[str, bytes]], links=()) -> pathlib.Path:  # type: ignore[no-untyped-def]
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members:
            zf.writestr(name, data)
        for name, target in links:
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return path


def test_a_tar_gz_unpacks_files_and_folders(tmp_path: pathlib.Path) -> None:
    tgz = make_tar(
        tmp_path / "model.tar.gz",
        [
            ("dir", "model", ""),
            ("file", "model/model.joblib", b"weights"),
            ("sym", "latest", "model"),
        ],
    )
    dest = tmp_path / "out"
    dest.mkdir()
    written = archive.unpack(tgz, dest)
    assert (dest / "model" / "model.joblib").read_bytes() == b"weights"
    assert (dest / "latest" / "model.joblib").read_bytes() == b"weights"
    assert written == len(b"weights")


def test_a_zip_unpacks_with_links_that_stay_inside(tmp_path: pathlib.Path) -> None:
    z = make_zip(
        tmp_path / "m.zip", [("a/model.joblib", b"w"), ("b/x", b"y")], links=[("a/link", "../b/x")]
    )
    dest = tmp_path / "out"
    dest.mkdir()
    archive.unpack(z, dest)
    assert (dest / "a" / "model.joblib").read_bytes() == b"w"
    assert (dest / "a" / "link").read_bytes() == b"y"


@pytest.mark.parametrize(
    ("members", "words"),
    [
        ([("file", "../../evil.sh", b"x")], "leads outside the model folder"),
        ([("file", "model/../../evil.sh", b"x")], "leads outside the model folder"),
        ([("file", "/etc/cron.d/evil", b"x")], "absolute path"),
        ([("sym", "link", "/etc/passwd")], "outside the model folder"),
        ([("sym", "link", "../../etc")], "outside the model folder"),
        ([("dir", "d", ""), ("sym", "d/up", "../..")], "outside the model folder"),
        ([("hard", "h", "/etc/shadow")], "hard link"),
        ([("hard", "h", "not-in-archive")], "not in the archive"),
        ([("fifo", "pipe", "")], "device, FIFO or socket"),
    ],
)
def test_tar_entries_that_would_escape_are_refused_before_anything_is_written(
    tmp_path: pathlib.Path, members: list[tuple[str, str, bytes | str]], words: str
) -> None:
    tgz = make_tar(tmp_path / "evil.tgz", [("file", "model.joblib", b"ok"), *members])
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(store.UnsafeArchive, match=words):
        archive.unpack(tgz, dest)
    assert list(dest.iterdir()) == []
    assert not (tmp_path / "evil.sh").exists()


@pytest.mark.parametrize(
    "name", ["../evil.sh", "a/../../evil.sh", "/tmp/evil.sh", "..\\evil.sh", "C:/evil.sh"]
)
def test_zip_slip_names_are_refused(tmp_path: pathlib.Path, name: str) -> None:
    z = make_zip(tmp_path / "slip.zip", [("model.joblib", b"ok"), (name, b"#!/bin/sh")])
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(store.UnsafeArchive):
        archive.unpack(z, dest)
    assert list(dest.iterdir()) == []
    assert not (tmp_path / "evil.sh").exists()


def test_zip_links_pointing_out_are_refused(tmp_path: pathlib.Path) -> None:
    z = make_zip(tmp_path / "l.zip", [("model.joblib", b"ok")], links=[("etc", "/etc")])
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(store.UnsafeArchive, match="'etc' is a link to '/etc'"):
        archive.unpack(z, dest)


def test_a_chain_of_links_cannot_reach_outside(tmp_path: pathlib.Path) -> None:
    """``d -> .`` is inside and so is ``d/e -> ..`` read literally, but
    through the first link the second would point above the folder."""
    z = make_zip(tmp_path / "c.zip", [], links=[("d", "."), ("d/e", "..")])
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(store.UnsafeArchive, match="outside the"):
        archive.unpack(z, dest)


def test_check_room_sees_the_declared_size_before_writing(tmp_path: pathlib.Path) -> None:
    z = make_zip(tmp_path / "big.zip", [("a", b"x" * 1000), ("b", b"y" * 500)])
    dest = tmp_path / "out"
    dest.mkdir()

    def refuse(n: int) -> None:
        raise store.NoSpace(f"{n} bytes do not fit")

    with pytest.raises(store.NoSpace, match="1500 bytes"):
        archive.unpack(z, dest, refuse)
    assert list(dest.iterdir()) == []


def test_a_broken_archive_is_reported_as_corrupt(tmp_path: pathlib.Path) -> None:
    good = make_tar(tmp_path / "m.tar.gz", [("file", "model.joblib", b"x" * 100_000)])
    broken = tmp_path / "cut.tar.gz"
    broken.write_bytes(good.read_bytes()[:60])
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    for path in (broken, tmp_path / "junk.zip"):
        with pytest.raises(store.Corrupt, match="not a readable"):
            archive.unpack(path, tmp_path)


@pytest.mark.parametrize(
    ("name", "fmt"),
    [("m.tar.gz", "tar"), ("M.TGZ", "tar"), ("m.tar", "tar"), ("m.zip", "zip"), ("m.joblib", None)],
)
def test_archives_are_recognised_by_their_ending(name: str, fmt: str | None) -> None:
    assert archive.archive_format(name) == fmt
