"""The stand-in API server, driven by the official ``kubernetes`` client.

Each test checks one rule of the real API server that a controller relies
on, through the same client calls (and wire format) a user's tools make.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest

from tests.kube.apiserver import FakeApiServer

GROUP, VERSION = "serving.kserve.io", "v1alpha1"
NS = "default"
_names = itertools.count(1)


def _name(prefix: str = "p") -> str:
    return f"{prefix}-{next(_names)}"


def _predictor(name: str, model_type: str = "sklearn", **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Predictor",
        "metadata": {"name": name, **extra.pop("metadata", {})},
        "spec": {"modelType": {"name": model_type}, "storage": {"path": "models/x"}, **extra},
    }


class Objects:
    """``CustomObjectsApi`` with dict results (the client types them ``object``)."""

    def __init__(self, api: kubernetes.client.ApiClient) -> None:
        self.api = kubernetes.client.CustomObjectsApi(api)
        self.api_client = api

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.api, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            return method(*args, **kwargs)

        return call


@pytest.fixture
def objects(api: kubernetes.client.ApiClient) -> Objects:
    return Objects(api)


def _create(objects: Objects, body: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = objects.create_namespaced_custom_object(
        GROUP, VERSION, NS, "predictors", body
    )
    return out


def _get(objects: Objects, name: str) -> dict[str, Any]:
    out: dict[str, Any] = objects.get_namespaced_custom_object(
        GROUP, VERSION, NS, "predictors", name
    )
    return out


def _status_of(e: pytest.ExceptionInfo[kubernetes.client.ApiException]) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(e.value.body or "{}")
    return body


def test_discovery_serves_the_crds_and_builtins(api: kubernetes.client.ApiClient) -> None:
    groups = kubernetes.client.ApisApi(api).get_api_versions()
    names = {g.name for g in groups.groups}
    assert {GROUP, "apps", "apiextensions.k8s.io"} <= names
    dyn = kubernetes.dynamic.DynamicClient(api)  # type: ignore[no-untyped-call]
    predictors = dyn.resources.get(api_version=f"{GROUP}/{VERSION}", kind="Predictor")
    assert predictors.namespaced and predictors.name == "predictors"
    assert "status" in predictors.subresources
    runtimes = dyn.resources.get(api_version=f"{GROUP}/{VERSION}", kind="ClusterServingRuntime")
    assert not runtimes.namespaced
    deployments = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    assert deployments.namespaced


def test_create_assigns_uid_version_generation_and_time(
    objects: Objects, apiserver: FakeApiServer
) -> None:
    before = apiserver.resource_version
    created = _create(objects, _predictor(_name()))
    meta = created["metadata"]
    assert int(meta["resourceVersion"]) > before
    assert meta["uid"] and meta["creationTimestamp"].endswith("Z")
    assert meta["generation"] == 1 and meta["namespace"] == NS
    with pytest.raises(kubernetes.client.ApiException) as e:
        _create(objects, _predictor(meta["name"]))
    assert e.value.status == 409 and _status_of(e)["reason"] == "AlreadyExists"


def test_stale_resource_version_is_a_conflict_and_generation_follows_spec(
    objects: Objects,
) -> None:
    p = _create(objects, _predictor(_name()))
    name = p["metadata"]["name"]
    p["spec"]["modelType"]["name"] = "xgboost"
    updated = objects.replace_namespaced_custom_object(GROUP, VERSION, NS, "predictors", name, p)
    assert updated["metadata"]["generation"] == 2
    p["spec"]["modelType"]["name"] = "lightgbm"  # p still carries the old version
    with pytest.raises(kubernetes.client.ApiException) as e:
        objects.replace_namespaced_custom_object(GROUP, VERSION, NS, "predictors", name, p)
    assert e.value.status == 409 and _status_of(e)["reason"] == "Conflict"
    labelled = objects.patch_namespaced_custom_object(
        GROUP, VERSION, NS, "predictors", name, {"metadata": {"labels": {"a": "b"}}}
    )
    assert labelled["metadata"]["generation"] == 2  # metadata is not spec
    same = objects.patch_namespaced_custom_object(
        GROUP, VERSION, NS, "predictors", name, {"metadata": {"labels": {"a": "b"}}}
    )
    assert same["metadata"]["resourceVersion"] == labelled["metadata"]["resourceVersion"]
    del p["metadata"]["resourceVersion"]
    with pytest.raises(kubernetes.client.ApiException) as e:
        objects.replace_namespaced_custom_object(GROUP, VERSION, NS, "predictors", name, p)
    assert e.value.status == 422  # custom resources need a version to be updated


def test_status_subresource_is_separate_from_the_main_resource(
    objects: Objects,
) -> None:
    name = _name()
    _create(objects, {**_predictor(name), "status": {"available": True}})
    # Status is dropped on create (the CRD's status defaults, if any, fill it).
    assert _get(objects, name).get("status", {}).get("available") is not True
    objects.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        NS,
        "predictors",
        name,
        {"status": {"available": True, "activeModelState": "Loaded"}, "spec": {"path": "x"}},
    )
    got = _get(objects, name)
    assert got["status"]["available"] is True
    assert got["status"]["activeModelState"] == "Loaded"
    assert "path" not in got["spec"] and got["metadata"]["generation"] == 1
    objects.patch_namespaced_custom_object(
        GROUP, VERSION, NS, "predictors", name, {"status": {"available": False}}
    )
    assert _get(objects, name)["status"]["available"] is True  # main resource ignores status


def test_schema_violations_are_422_and_unknown_fields_are_pruned(
    objects: Objects, api: kubernetes.client.ApiClient
) -> None:
    bad = _predictor(_name())
    del bad["spec"]["modelType"]["name"]
    with pytest.raises(kubernetes.client.ApiException) as e:
        _create(objects, bad)
    assert e.value.status == 422
    status = _status_of(e)
    assert status["reason"] == "Invalid"
    assert "spec.modelType.name: Required value" in status["message"]
    wrong = _predictor(_name(), gpu="always")
    with pytest.raises(kubernetes.client.ApiException) as e:
        _create(objects, wrong)
    assert "spec.gpu: Unsupported value" in _status_of(e)["message"]
    name = _name()
    extra = _predictor(name, colour="blue")
    _, _, headers = objects.create_namespaced_custom_object_with_http_info(
        GROUP, VERSION, NS, "predictors", extra
    )
    assert "unknown field" in headers.get("Warning", "")
    assert "colour" not in _get(objects, name)["spec"]
    with pytest.raises(kubernetes.client.ApiException) as e:
        objects.create_namespaced_custom_object(
            GROUP,
            VERSION,
            NS,
            "predictors",
            _predictor(_name(), colour="red"),
            field_validation="Strict",
        )
    assert e.value.status == 400
    with pytest.raises(kubernetes.client.ApiException) as e:
        objects.patch_namespaced_custom_object_status(
            GROUP, VERSION, NS, "predictors", name, {"status": {"totalCopies": "two"}}
        )
    assert e.value.status == 422 and "status.totalCopies" in _status_of(e)["message"]


def test_finalizers_hold_a_deleted_object_until_the_last_one_goes(
    objects: Objects,
) -> None:
    name = _name()
    _create(objects, _predictor(name, metadata={"finalizers": ["test/one"]}))
    objects.delete_namespaced_custom_object(GROUP, VERSION, NS, "predictors", name)
    held = _get(objects, name)
    assert held["metadata"]["deletionTimestamp"]
    with pytest.raises(kubernetes.client.ApiException) as e:
        objects.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            NS,
            "predictors",
            name,
            {"metadata": {"finalizers": ["test/one", "test/two"]}},
        )
    assert e.value.status == 422 and "no new finalizers" in _status_of(e)["message"]
    objects.patch_namespaced_custom_object(
        GROUP, VERSION, NS, "predictors", name, {"metadata": {"finalizers": None}}
    )
    with pytest.raises(kubernetes.client.ApiException) as e:
        _get(objects, name)
    assert e.value.status == 404


def test_json_patch_test_operation_failure_is_422(
    objects: Objects,
) -> None:
    name = _name()
    p = _create(objects, _predictor(name))
    rv = p["metadata"]["resourceVersion"]
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
        {"op": "add", "path": "/metadata/finalizers", "value": ["test/x"]},
    ]
    patched = objects.patch_namespaced_custom_object(
        GROUP, VERSION, NS, "predictors", name, ops, _content_type="application/json-patch+json"
    )
    assert patched["metadata"]["finalizers"] == ["test/x"]
    with pytest.raises(kubernetes.client.ApiException) as e:
        objects.patch_namespaced_custom_object(
            GROUP, VERSION, NS, "predictors", name, ops, _content_type="application/json-patch+json"
        )
    assert e.value.status == 422
    with pytest.raises(kubernetes.client.ApiException) as e:
        objects.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            NS,
            "predictors",
            name,
            {"metadata": {"labels": {"a": "b"}}},
            _content_type="application/strategic-merge-patch+json",
        )
    assert e.value.status == 415  # not for custom resources


def _watch(objects: Objects, timeout: int = 1, **kwargs: Any) -> Iterator[dict[str, Any]]:
    w = kubernetes.watch.Watch()  # type: ignore[no-untyped-call]
    yield from w.stream(  # type: ignore[no-untyped-call]
        objects.list_namespaced_custom_object,
        GROUP,
        VERSION,
        NS,
        "predictors",
        timeout_seconds=timeout,
        **kwargs,
    )


def test_watch_resumes_from_a_resource_version_and_410_when_compacted(
    objects: Objects, apiserver: FakeApiServer
) -> None:
    name = _name()
    p = _create(objects, _predictor(name, metadata={"labels": {"w": name}}))
    rv = p["metadata"]["resourceVersion"]
    for model_type in ("xgboost", "lightgbm"):
        objects.patch_namespaced_custom_object(
            GROUP, VERSION, NS, "predictors", name, {"spec": {"modelType": {"name": model_type}}}
        )
    seen = [
        (e["type"], e["object"]["spec"]["modelType"]["name"])
        for e in _watch(objects, resource_version=rv, label_selector=f"w={name}")
    ]
    assert seen == [("MODIFIED", "xgboost"), ("MODIFIED", "lightgbm")]
    initial = [e["type"] for e in _watch(objects, label_selector=f"w={name}")]
    assert initial == ["ADDED"]  # no version: the current state first
    apiserver.compact()
    with pytest.raises(kubernetes.client.ApiException) as e:
        list(_watch(objects, resource_version=rv))
    assert e.value.status == 410


def test_watch_streams_live_changes_and_selector_transitions(
    objects: Objects,
) -> None:
    name = _name()
    rv = objects.list_namespaced_custom_object(GROUP, VERSION, NS, "predictors")["metadata"][
        "resourceVersion"
    ]
    events: list[tuple[str, str]] = []

    def watch() -> None:
        for e in _watch(objects, timeout=3, resource_version=rv, label_selector="sel=yes"):
            events.append((e["type"], e["object"]["metadata"]["name"]))
            if len(events) == 3:
                return

    t = threading.Thread(target=watch)
    t.start()  # it watches from ``rv``: whatever happens after is replayed, however late it starts
    _create(objects, _predictor(name, metadata={"labels": {"sel": "no"}}))
    patch = {"metadata": {"labels": {"sel": "yes"}}}
    objects.patch_namespaced_custom_object(GROUP, VERSION, NS, "predictors", name, patch)
    patch = {"metadata": {"labels": {"sel": "yes", "more": "1"}}}
    objects.patch_namespaced_custom_object(GROUP, VERSION, NS, "predictors", name, patch)
    objects.delete_namespaced_custom_object(GROUP, VERSION, NS, "predictors", name)
    t.join(10)
    assert events == [("ADDED", name), ("MODIFIED", name), ("DELETED", name)]


def test_list_pages_and_selectors(
    objects: Objects,
) -> None:
    tag = _name("page")
    for i in range(5):
        _create(objects, _predictor(f"{tag}-{i}", metadata={"labels": {"page": tag, "i": str(i)}}))
    sel = f"page={tag},i notin (3,4)"
    first = objects.list_namespaced_custom_object(
        GROUP, VERSION, NS, "predictors", label_selector=sel, limit=2
    )
    assert len(first["items"]) == 2 and first["metadata"]["continue"]
    rest = objects.list_namespaced_custom_object(
        GROUP,
        VERSION,
        NS,
        "predictors",
        label_selector=sel,
        limit=2,
        _continue=first["metadata"]["continue"],
    )
    names = [i["metadata"]["name"] for i in first["items"] + rest["items"]]
    assert names == [f"{tag}-0", f"{tag}-1", f"{tag}-2"]
    one = objects.list_namespaced_custom_object(
        GROUP, VERSION, NS, "predictors", field_selector=f"metadata.name={tag}-4"
    )
    assert [i["metadata"]["name"] for i in one["items"]] == [f"{tag}-4"]


def _deployment(name: str, labels: dict[str, str], **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, **meta},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            },
        },
    }


def test_deployments_are_checked_like_the_real_server(
    objects: Objects,
) -> None:
    name = _name("d")
    bad = _deployment(name, {"app": "x"})
    bad["spec"]["template"]["metadata"]["labels"] = {"app": "y"}
    with pytest.raises(kubernetes.client.ApiException) as e:
        objects.create_namespaced_custom_object("apps", "v1", NS, "deployments", bad)
    assert e.value.status == 422 and "does not match template" in _status_of(e)["message"]
    created = objects.create_namespaced_custom_object(
        "apps", "v1", NS, "deployments", _deployment(name, {"app": "x"})
    )
    changed = _deployment(name, {"app": "z"})
    changed["metadata"]["resourceVersion"] = created["metadata"]["resourceVersion"]
    with pytest.raises(kubernetes.client.ApiException) as e:
        objects.replace_namespaced_custom_object("apps", "v1", NS, "deployments", name, changed)
    assert e.value.status == 422 and "field is immutable" in _status_of(e)["message"]
    apps = kubernetes.client.AppsV1Api(objects.api_client)
    got = apps.read_namespaced_deployment(name, NS)  # the typed client reads it back
    assert got.spec is not None and got.spec.template.spec is not None
    assert got.spec.template.spec.containers[0].image == "busybox"


def test_an_owned_object_outlives_its_owner_as_no_garbage_collector_runs(
    objects: Objects, apiserver: FakeApiServer
) -> None:
    """Garbage collection is kube-controller-manager's, not the API server's:
    the stand-in must not do it, or it would hide whether a controller
    deleted what it owns. A delete asking for orphaning or foreground
    deletion leaves the collector's finalizer, so the object stays, marked."""
    rt_name = _name("rt")
    runtime = objects.create_namespaced_custom_object(
        GROUP,
        VERSION,
        NS,
        "servingruntimes",
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ServingRuntime",
            "metadata": {"name": rt_name},
            "spec": {
                "supportedModelFormats": [{"name": "sklearn"}],
                "containers": [{"name": "mlserver", "image": "seldonio/mlserver:1.7.1"}],
            },
        },
    )
    owner = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ServingRuntime",
        "name": rt_name,
        "uid": runtime["metadata"]["uid"],
        "controller": True,
    }
    dep = _name("d")
    objects.create_namespaced_custom_object(
        "apps", "v1", NS, "deployments", _deployment(dep, {"app": dep}, ownerReferences=[owner])
    )
    objects.delete_namespaced_custom_object(GROUP, VERSION, NS, "servingruntimes", rt_name)
    assert apiserver.get(GROUP, "servingruntimes", rt_name, NS) is None
    left = apiserver.get("apps", "deployments", dep, NS)
    assert left is not None and left["metadata"]["ownerReferences"] == [owner]
    assert "deletionTimestamp" not in left["metadata"]

    objects.delete_namespaced_custom_object(
        "apps", "v1", NS, "deployments", dep, propagation_policy="Orphan"
    )
    held = apiserver.get("apps", "deployments", dep, NS)
    assert held is not None and held["metadata"]["deletionTimestamp"]
    assert held["metadata"]["finalizers"] == ["orphan"]


def test_missing_namespace_generate_name_and_events(api: kubernetes.client.ApiClient) -> None:
    core = kubernetes.client.CoreV1Api(api)
    with pytest.raises(kubernetes.client.ApiException) as e:
        core.create_namespaced_config_map(
            "nowhere",
            kubernetes.client.V1ConfigMap(metadata=kubernetes.client.V1ObjectMeta(name="c")),
        )
    assert e.value.status == 404
    event = core.create_namespaced_event(
        NS,
        kubernetes.client.CoreV1Event(
            metadata=kubernetes.client.V1ObjectMeta(generate_name="kopf-event-"),
            involved_object=kubernetes.client.V1ObjectReference(
                kind="Predictor", name="x", namespace=NS
            ),
            reason="Logging",
            message="hello",
            type="Normal",
        ),
    )
    name = event.metadata.name if event.metadata else None
    assert name and name.startswith("kopf-event-") and len(name) == 16


def test_a_token_is_required_when_set(tmp_path_factory: pytest.TempPathFactory) -> None:
    from tests.kube import fixtures  # noqa: PLC0415 - the helper, not the fixtures

    server = FakeApiServer(token="s3cret")
    server.start()
    try:
        config = fixtures.client_configuration(server, tmp_path_factory.mktemp("tok"))
        with kubernetes.client.ApiClient(config) as client:
            names = kubernetes.client.CoreV1Api(client).list_namespace().items
            assert [n.metadata.name if n.metadata else "" for n in names] == ["default"]
        config.api_key = {}
        with (
            kubernetes.client.ApiClient(config) as client,
            pytest.raises(kubernetes.client.ApiException) as e,
        ):
            kubernetes.client.CoreV1Api(client).list_namespace()
        assert e.value.status == 401
    finally:
        server.stop()
