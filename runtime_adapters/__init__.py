"""One adapter per model runtime (MLServer, Triton): start, status, capacity,
load, unload and size, each behind :class:`mesh.core.interfaces.RuntimeAdapter`."""
