"""A node's TLS material: every file its settings name, read, checked and followed.

:mod:`mesh.edges.tls` knows how to read and check one hop's files and keep
them current; this module asks it for the three hops a node has (its own
ports :8033 and :8008, the channels to its peers, its etcd client) so that
the wiring in :mod:`meshserve.node` gets one value, and the start-up line
one phrase saying what is encrypted.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from mesh.core import tls_settings
from mesh.edges import tls
from mesh.kv import etcd_kv


@dataclasses.dataclass(frozen=True)
class NodeTLS:
    """A node's TLS material, read and checked (each part ``None`` when off)."""

    server: tls.Watched[tls.ServerMaterial] | None
    """Of :8033 and :8008; followed as the files change."""
    peers: tls.Watched[tls.ChannelMaterial] | None
    """Of the channels to peers; followed as the files change."""
    etcd: etcd_kv.EtcdTLS | None
    """Of the etcd client; read once."""

    def watched(self) -> list[tls.Watched[Any]]:
        return [w for w in (self.server, self.peers) if w is not None]


def load_tls(config: tls_settings.TLSSettings) -> NodeTLS:
    """Read and check every TLS file the settings name; raises
    :class:`mesh.core.errors.ConfigError` naming the variable and the file."""
    server_plan = tls.server_plan(config)
    peer_plan = tls.channel_plan(config, tls.Hop.PEER)
    etcd_plan = tls.channel_plan(config, tls.Hop.ETCD)
    server = peer = None
    if server_plan is not None:
        server = tls.Watched(
            "TLS of :8033 and :8008", server_plan.files, lambda: tls.load_server(server_plan)
        )
    if peer_plan is not None:
        peer = tls.Watched("TLS to peers", peer_plan.files, lambda: tls.load_channel(peer_plan))
    etcd = None
    if etcd_plan is not None:
        m = tls.load_channel(etcd_plan)
        etcd = etcd_kv.EtcdTLS(m.roots, m.private_key, m.cert_chain, m.server_name)
    return NodeTLS(server, peer, etcd)


def describe_tls(config: tls_settings.TLSSettings) -> str:
    """One phrase for the start-up line: what is encrypted, what is asked."""
    if not config.enabled:
        parts = ["plaintext"]
    else:
        parts = [f"TLS, client certificates {config.client_auth.value}, mutual TLS to peers"]
    if config.etcd_ca_path is not None:
        parts.append("TLS to etcd")
    return ", ".join(parts)
