"""The placement table's storage: a KV interface, etcd behind it, and the mirror.

Everything that reads or writes placement goes through :mod:`mesh.kv.kv_store`
(etcd in production, :mod:`mesh.kv.memory_kv` in unit tests) and the typed
:mod:`mesh.kv.records_store`; a node reads the table from its in-memory
:mod:`mesh.kv.placement_table`, which owns watching and catching up.
"""
