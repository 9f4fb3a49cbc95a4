"""How an environment variable's text reads as a typed value.

Every settings concern (:mod:`mesh.core.settings`, :mod:`mesh.core.tls_settings`,
:mod:`mesh.core.payload_log_settings`) reads its variables through one
:class:`EnvReader`, so an unset or empty variable keeps its default the same
way everywhere and a malformed one raises :class:`mesh.core.errors.ConfigError`
with the same words everywhere, naming the variable. Pure: the environment is a
mapping handed in, never ``os.environ``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

from mesh.core import errors

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTP]i?)?[Bb]?\s*$")
_UNITS = {
    None: 1,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
}


def parse_size(text: str, name: str = "size") -> int:
    """Bytes from ``512Mi``, ``2G``, ``1.5Gi`` or ``1048576``."""
    m = _SIZE.match(text)
    if not m:
        raise errors.ConfigError(
            f"{name}: {text!r} is not a size (use bytes or a suffix: 512Mi, 2G)"
        )
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def parse_endpoint(text: str, name: str) -> tuple[str, int]:
    """``(host, port)`` from ``host:port``."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise errors.ConfigError(f"{name}: {text!r} is not host:port")
    return host, int(port)


@dataclasses.dataclass(frozen=True)
class EnvReader:
    """Typed reads of an environment mapping; unset or empty keeps the default."""

    env: Mapping[str, str]
    """The variables, e.g. ``os.environ`` completed by :mod:`mesh.edges.process_env`."""
    strip: bool = False
    """Strip spaces around a value first, so that a value of only spaces is unset
    (the TLS variables are read so: a path mounted from a Secret may end in a
    newline)."""

    def text(self, name: str) -> str | None:
        """The value of ``name``; ``None`` when unset or empty."""
        value = self.env.get(name)
        if value is not None and self.strip:
            value = value.strip()
        return value or None

    def integer(self, name: str, default: int) -> int:
        """An integer, or ``default`` when unset."""
        v = self.text(name)
        if v is None:
            return default
        try:
            return int(v)
        except ValueError:
            raise errors.ConfigError(f"{name}: {v!r} is not an integer") from None

    def number(self, name: str, default: float) -> float:
        """A number (``0.5``, ``30``), or ``default`` when unset."""
        v = self.text(name)
        if v is None:
            return default
        try:
            return float(v)
        except ValueError:
            raise errors.ConfigError(f"{name}: {v!r} is not a number") from None

    def size(self, name: str, default: int) -> int:
        """Bytes (see :func:`parse_size`), or ``default`` when unset."""
        v = self.text(name)
        return default if v is None else parse_size(v, name)

    def port(self, name: str, default: int) -> int:
        """A port to listen on, 0 (any free port) to 65535."""
        value = self.integer(name, default)
        if not 0 <= value < 65536:
            raise errors.ConfigError(f"{name}: {value} is not a port")
        return value

    def optional_port(self, name: str, default: int) -> int:
        """A port to listen on, 0 (any free port) or -1 (off)."""
        value = self.integer(name, default)
        if not -1 <= value < 65536:
            raise errors.ConfigError(f"{name}: {value} is not a port (0: any free port, -1: off)")
        return value

    def flag(self, name: str) -> bool:
        """True for ``1``, ``true`` or ``yes`` (any case); false otherwise."""
        return (self.text(name) or "").lower() in ("1", "true", "yes")

    def items(self, name: str) -> tuple[str, ...]:
        """The comma-separated items of ``name``, stripped, empty ones dropped."""
        return tuple(x.strip() for x in (self.text(name) or "").split(",") if x.strip())
