"""Free ports for child servers: inside MESHSERVE_PORT_RANGE, never the same
one twice while reserved, whichever process asks."""

from __future__ import annotations

import os
import pathlib
import socket
import time

import pytest

from mesh.edges import ports


@pytest.fixture
def own_reservations(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    """Reservations in a folder of this test's own, as a separate user would have."""
    folder = tmp_path / "reservations"
    folder.mkdir()
    monkeypatch.setattr(ports, "_reservations", lambda: folder)
    monkeypatch.setattr(ports, "_cursor", {})
    return folder


def test_ports_come_from_the_range_and_are_never_handed_out_twice(
    own_reservations: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ports.RANGE_VARIABLE, "21000-21009")
    handed = [ports.free_port() for _ in range(10)]
    assert sorted(handed) == list(range(21000, 21010))
    with pytest.raises(OSError, match="no free port left"):
        ports.free_port()


def test_another_process_walking_the_same_range_skips_reserved_ports(
    own_reservations: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ports.RANGE_VARIABLE, "21100-21104")
    first = {ports.free_port() for _ in range(3)}
    monkeypatch.setattr(ports, "_cursor", {})  # a fresh process: its own walk
    second = {ports.free_port() for _ in range(2)}
    assert not first & second
    assert first | second == set(range(21100, 21105))


def test_a_stale_reservation_lapses_and_a_bound_port_is_skipped(
    own_reservations: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ports.RANGE_VARIABLE, "21200-21201")
    stale = ports.free_port()
    old = time.time() - ports.RESERVED_SECONDS - 1
    os.utime(own_reservations / str(stale), (old, old))
    with socket.socket() as listener:
        other = 21201 if stale == 21200 else 21200
        listener.bind(("127.0.0.1", other))
        listener.listen()
        monkeypatch.setattr(ports, "_cursor", {})
        assert ports.free_port() == stale


def test_without_a_range_the_kernel_picks_and_the_port_is_reserved(
    own_reservations: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ports.RANGE_VARIABLE, raising=False)
    port = ports.free_port()
    assert (own_reservations / str(port)).exists()


@pytest.mark.parametrize("text", ["", "20000", "2-1", "0-10", "1-70000", "a-b"])
def test_a_malformed_range_is_named(text: str) -> None:
    with pytest.raises(ValueError, match=ports.RANGE_VARIABLE):
        ports.parse_range(text)


def test_consecutive_ports_are_reserved_together(
    own_reservations: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ports.RANGE_VARIABLE, "21300-21309")
    first = ports.free_ports(3)
    assert all((own_reservations / str(first + i)).exists() for i in range(3))
    assert ports.free_port() not in range(first, first + 3)
