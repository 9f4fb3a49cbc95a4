"""Shared test configuration.

Fixtures that start real servers (etcd, MLServer, a whole node) on free
127.0.0.1 ports live in ``tests/integration``, one module per kind of server,
registered here as plugins.

Every port a test or a child process is handed comes from a range below the
kernel's ephemeral ports (32768 and up here), so an outgoing connection
cannot take a port between the moment it is handed out and the moment its
server binds it; reservations (:mod:`mesh.edges.ports`) keep the suite's
workers and their children from handing out the same one."""

import os

os.environ.setdefault("MESHSERVE_PORT_RANGE", "20000-32000")

pytest_plugins = [
    "tests.integration.etcd_fixtures",
    "tests.integration.mlserver_fixtures",
    "tests.integration.mesh_fixtures",
    "tests.integration.storage_fixtures",
    "tests.integration.triton_fixtures",
]
