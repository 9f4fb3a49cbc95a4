"""The mesh core: settings, errors, records, placement and cache rules, the
KV store, the placement-table mirror, the management API and the node's model
cache manager.

Everything else (``router``, ``puller``, ``runtime_adapters``) depends on this
package; this package depends on none of them. Where the core needs a runtime
or a storage backend it names an interface (:mod:`mesh.interfaces`) and the
composition root (:mod:`meshserve`) plugs an implementation in.
"""
