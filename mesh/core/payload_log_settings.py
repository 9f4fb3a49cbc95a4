"""Settings of the payload log: where copies of requests and responses go.

One frozen :class:`PayloadLogSettings` read from ``MESHSERVE_PAYLOAD_LOG*``,
with the target checked here (``file:///abs/path`` or ``http(s)://host/...``)
so that a node with a target it could never write to refuses to start. Pure:
the sink itself lives in :mod:`mesh.edges.payload_log`.
"""

from __future__ import annotations

import dataclasses
import urllib.parse
from collections.abc import Mapping

from mesh.core import env_reader, errors


@dataclasses.dataclass(frozen=True)
class PayloadLogSettings:
    """Optional copies of inference requests and responses, as CloudEvents,
    sent off the request path (see :mod:`mesh.edges.payload_log`)."""

    target: str = ""
    """``file:///path`` (JSON lines) or ``http(s)://host/path`` (one POST per
    event) (``MESHSERVE_PAYLOAD_LOG``); empty: off."""
    queue_size: int = 1000
    """Most events waiting to be written (``MESHSERVE_PAYLOAD_LOG_QUEUE``);
    beyond it, events are dropped and counted, never waited for."""
    queue_bytes: int = 64 * 1024 * 1024
    """Most payload bytes waiting to be written (``MESHSERVE_PAYLOAD_LOG_QUEUE_BYTES``),
    so that large tensors cannot pile up in memory behind a slow sink."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> PayloadLogSettings:
        """Payload log settings from ``MESHSERVE_PAYLOAD_LOG*``; unset: off."""
        read = env_reader.EnvReader(env)
        target = read.text("MESHSERVE_PAYLOAD_LOG")
        return cls(
            target=parse_payload_log_target(target) if target else "",
            queue_size=max(1, read.integer("MESHSERVE_PAYLOAD_LOG_QUEUE", cls.queue_size)),
            queue_bytes=read.size("MESHSERVE_PAYLOAD_LOG_QUEUE_BYTES", cls.queue_bytes),
        )


def parse_payload_log_target(text: str) -> str:
    """The payload log's target, checked: ``file:///abs/path`` or ``http(s)://host...``."""
    url = urllib.parse.urlsplit(text.strip())
    if url.scheme == "file":
        if url.netloc not in ("", "localhost") or not url.path.startswith("/"):
            raise errors.ConfigError(
                f"MESHSERVE_PAYLOAD_LOG: {text!r}: a file target is file:///absolute/path"
            )
    elif url.scheme in ("http", "https"):
        if not url.hostname:
            raise errors.ConfigError(f"MESHSERVE_PAYLOAD_LOG: {text!r} names no host")
    else:
        raise errors.ConfigError(
            f"MESHSERVE_PAYLOAD_LOG: {text!r}: use file:///path or http(s)://host/path"
        )
    return text.strip()
