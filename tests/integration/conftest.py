"""Fixtures that start real servers (etcd, MLServer) on free 127.0.0.1 ports.

Each fixture module owns one kind of server; they are registered here."""

pytest_plugins = [
    "tests.integration.etcd_fixtures",
    "tests.integration.mlserver_fixtures",
    "tests.integration.mesh_fixtures",
]
