"""A stand-in Kubernetes API server that speaks the real REST and watch protocol.

Why it exists: the controller (:mod:`kube.controller`) is a kopf operator,
and what breaks operators is the API server's semantics, not their own
Python: a stale ``resourceVersion`` answered with 409, a status written
through the main resource silently dropped, an object that lingers with a
``deletionTimestamp`` until its last finalizer goes, a watch that must resume
exactly where it stopped or be told 410 Gone. No kube-apiserver, k3s, kind
or envtest can run on the project's machines (RUNTIMES.md), and the
emulators on PyPI assign no resource versions and mix status into objects.
So this package implements the protocol itself, on aiohttp, and the tests
drive it with the clients production uses: kopf and the official
``kubernetes`` client.

It is an API server and nothing more: no controller-manager loop runs in it,
garbage collection included (:mod:`~tests.kube.apiserver.object_writes`), so
every Deployment deleted in a test was deleted by a client, and a
Deployment gets no ReplicaSets and no status. Also left out: authorization
(every authenticated request is allowed, and counted for RBAC checks),
admission webhooks, server-side apply, conversion between CRD versions
(every served version returns the stored object under its own apiVersion),
the Table and protobuf encodings, and consistent snapshots for ``continue``
pages (a later page shows later data).

Its rooms: :mod:`~tests.kube.apiserver.resource_types` (the kinds served)
and :mod:`~tests.kube.apiserver.discovery`;
:mod:`~tests.kube.apiserver.object_store` (objects, ``resourceVersion``,
history) and :mod:`~tests.kube.apiserver.object_writes` (CRUD rules);
:mod:`~tests.kube.apiserver.validation` with
:mod:`~tests.kube.apiserver.schemas`; :mod:`~tests.kube.apiserver.patches`;
:mod:`~tests.kube.apiserver.selectors`;
:mod:`~tests.kube.apiserver.watch_stream`;
:mod:`~tests.kube.apiserver.http_routes`; and
:mod:`~tests.kube.apiserver.fake_server`, which a test starts.
"""

from tests.kube.apiserver.fake_server import FakeApiServer
from tests.kube.apiserver.http_routes import Request

__all__ = ["FakeApiServer", "Request"]
