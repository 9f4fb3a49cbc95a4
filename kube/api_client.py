"""The controller's own calls to the Kubernetes API, and its credentials.

kopf makes most of the controller's requests (its watches, finalizers,
events); the few the controller makes itself (a Predictor's ``/status``, the
runtime Deployments) go through the official client here, in worker threads
because that client blocks. Both find the API server and its credentials the
same way, from :func:`kube_configuration`, so the two can never disagree on
which cluster they talk to. Every request carries :data:`USER_AGENT`, so the
requests a test records can be told apart from kopf's.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import Mapping
from typing import Any

import kopf
import kubernetes

from kube import inference_service, predictor, runtime_deployment, runtime_selection
from mesh.core import errors

GROUP, VERSION = runtime_selection.GROUP, runtime_selection.VERSION
PREDICTORS = (GROUP, VERSION, "predictors")
INFERENCE_SERVICES = (inference_service.GROUP, inference_service.VERSION, inference_service.PLURAL)
RESOURCES = {predictor.KIND: PREDICTORS, inference_service.KIND: INFERENCE_SERVICES}
"""The resource (group, version, plural) of each kind that names a model."""
SERVING_RUNTIMES = (GROUP, VERSION, "servingruntimes")
CLUSTER_SERVING_RUNTIMES = (GROUP, VERSION, "clusterservingruntimes")
DEPLOYMENTS = ("apps", "v1", "deployments")
HPAS = ("autoscaling", "v2", "horizontalpodautoscalers")
Resource = tuple[str, str, str]
"""(group, version, plural)."""
USER_AGENT = "meshserve-controller"
"""How the controller's own API calls name it (kopf's say ``kopf/<version>``)."""


def kube_configuration(kubeconfig: str = "") -> kubernetes.client.Configuration:
    """The API server and credentials: ``kubeconfig`` if given, else the pod's
    service account, else ``$KUBECONFIG`` / ``~/.kube/config``."""
    config = kubernetes.client.Configuration()
    try:
        if kubeconfig:
            kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig, client_configuration=config
            )
            return config
        try:
            kubernetes.config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=config
            )
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
                client_configuration=config
            )
    except (kubernetes.config.ConfigException, OSError) as e:
        raise errors.ConfigError(f"no Kubernetes credentials: {e}") from None
    return config


def connection_info(config: kubernetes.client.Configuration, namespace: str) -> kopf.ConnectionInfo:
    """kopf's credentials from the client's configuration (as kopf's own
    ``login_via_client`` reads them), with events about cluster-scoped
    objects posted in the controller's namespace."""
    header = config.get_api_key_with_prefix("BearerToken") or config.get_api_key_with_prefix(
        "authorization"
    )
    parts = header.split(" ", 1) if header else []
    scheme, token = (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0] if parts else None)
    return kopf.ConnectionInfo(
        server=config.host,
        ca_path=config.ssl_ca_cert,
        insecure=not config.verify_ssl,
        username=config.username or None,
        password=config.password or None,
        scheme=scheme,
        token=token,
        certificate_path=config.cert_file,
        private_key_path=config.key_file,
        default_namespace=namespace,
    )


class KubeApi:
    """The few API calls the controller makes itself (kopf makes the rest),
    through the official client in worker threads."""

    def __init__(self, config: kubernetes.client.Configuration, namespace: str) -> None:
        self.namespace = namespace
        self._client = kubernetes.client.ApiClient(config)
        self._client.user_agent = USER_AGENT
        self._objects = kubernetes.client.CustomObjectsApi(self._client)

    def close(self) -> None:
        self._client.close()  # type: ignore[no-untyped-call]

    async def patch_status(self, kind: str, name: str, status: Mapping[str, Any]) -> bool:
        """Merge-patch the ``/status`` of a Predictor or InferenceService
        (``kind``); ``False`` if it is gone."""
        group, version, plural = RESOURCES[kind]
        try:
            await asyncio.to_thread(
                self._objects.patch_namespaced_custom_object_status,
                group,
                version,
                self.namespace,
                plural,
                name,
                {"status": dict(status)},
                _content_type="application/merge-patch+json",
            )
        except kubernetes.client.ApiException as e:
            if e.status == 404:
                return False
            raise
        return True

    async def managed(self, resource: Resource) -> dict[str, dict[str, Any]]:
        """The namespace's objects of ``resource`` (Deployments, HPAs) this
        controller manages, by name."""
        managed = f"{runtime_deployment.LABEL_MANAGED_BY}={runtime_deployment.MANAGED_BY}"
        found = await asyncio.to_thread(
            self._objects.list_namespaced_custom_object,
            *resource[:2],
            self.namespace,
            resource[2],
            label_selector=managed,
        )
        items = found.get("items", []) if isinstance(found, dict) else []
        return {str(d["metadata"]["name"]): d for d in items}

    async def create(self, resource: Resource, manifest: Mapping[str, Any]) -> None:
        await asyncio.to_thread(
            self._objects.create_namespaced_custom_object,
            *resource[:2],
            self.namespace,
            resource[2],
            dict(manifest),
        )

    async def replace(
        self, resource: Resource, manifest: Mapping[str, Any], current: Mapping[str, Any]
    ) -> None:
        """Replace ``current`` with ``manifest`` (409 if it changed meanwhile)."""
        body = copy.deepcopy(dict(manifest))
        body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        await asyncio.to_thread(
            self._objects.replace_namespaced_custom_object,
            *resource[:2],
            self.namespace,
            resource[2],
            body["metadata"]["name"],
            body,
        )

    async def delete(self, resource: Resource, name: str) -> None:
        with contextlib.suppress(kubernetes.client.exceptions.NotFoundException):
            await asyncio.to_thread(
                self._objects.delete_namespaced_custom_object,
                *resource[:2],
                self.namespace,
                resource[2],
                name,
            )
