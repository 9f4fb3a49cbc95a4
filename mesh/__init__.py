"""The mesh itself, in four rooms, each importing only from the rooms below it.

- :mod:`mesh.core`: pure rules and records (errors, ids, records, placement,
  eviction, sizes, vmodel transitions, settings); no I/O at all.
- :mod:`mesh.kv`: the placement table's storage: the KV interface, etcd, the
  in-memory KV for unit tests, the typed records store and the node's mirror.
- :mod:`mesh.node`: what a node does, transport-free: its cache, dispatch,
  management, cluster tasks and instruments (metrics, logs).
- :mod:`mesh.edges`: the transports over the node: gRPC services and status
  tables, peers, TLS, the operator's HTTP ports, payload logs, child processes.
"""
