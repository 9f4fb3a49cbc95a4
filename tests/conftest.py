"""Shared test configuration.

Fixtures that start real servers (etcd, MLServer, a whole node) on free
127.0.0.1 ports live in ``tests/integration``, one module per kind of server,
registered here as plugins."""

pytest_plugins = [
    "tests.integration.etcd_fixtures",
    "tests.integration.mlserver_fixtures",
    "tests.integration.mesh_fixtures",
    "tests.integration.storage_fixtures",
    "tests.integration.triton_fixtures",
]
