"""ServingRuntime documents as users write them, for the runtime selection and
runtime Deployment tests (:mod:`kube.runtime_selection`,
:mod:`kube.runtime_deployment`)."""

from __future__ import annotations

from typing import Any

from kube import runtime_selection


def runtime_doc(
    name: str,
    formats: list[dict[str, Any]],
    kind: str = runtime_selection.NAMESPACED_KIND,
    **spec: Any,
) -> dict[str, Any]:
    """An MLServer ServingRuntime named ``name`` listing ``formats``."""
    return {
        "apiVersion": runtime_selection.API_VERSION,
        "kind": kind,
        "metadata": {"name": name, "uid": f"uid-{name}"},
        "spec": {
            "supportedModelFormats": formats,
            "multiModel": True,
            "builtInAdapter": {"serverType": "mlserver", "runtimeManagementPort": 8001},
            "containers": [{"name": "mlserver", "image": "seldonio/mlserver:1.7.1"}],
            **spec,
        },
    }


def runtime(name: str, formats: list[dict[str, Any]], **spec: Any) -> runtime_selection.Runtime:
    """The parsed :func:`runtime_doc`."""
    return runtime_selection.parse_runtime(runtime_doc(name, formats, **spec))
