"""Which runtime adapter a node runs, by the name its settings give.

``MESHSERVE_RUNTIME`` (or ``meshserve up --runtime``) names a runtime;
this table turns the name into an adapter configured from the node's
settings. A third runtime is one adapter module and one line in
:data:`RUNTIMES`.

The model formats each adapter serves follow from whether the node starts
its runtime (the builds ``make install`` makes: MLServer with meshserve's
onnxruntime class, Triton with the Python backend only) or reaches one at
``MESHSERVE_RUNTIME_ENDPOINT`` (the images in ``deploy/runtimes``:
``seldonio/mlserver`` without that class, NVIDIA's Triton with every
backend); the node labels itself ``mt:<format>`` for each.
"""

from __future__ import annotations

from collections.abc import Callable

from mesh.core import errors, interfaces, settings
from router import client_messages
from runtime_adapters import mlserver
from runtime_adapters.triton import adapter as triton_adapter
from runtime_adapters.triton import formats as triton_formats


def _mlserver(config: settings.Settings) -> interfaces.RuntimeAdapter:
    return mlserver.MLServerAdapter(
        mlserver.MLServerConfig(
            model_dir=config.node.model_dir,
            venv=config.runtime.venv / "mlserver",
            endpoint=config.runtime.endpoint,
            log_path=config.node.data_dir / "logs" / f"mlserver-{config.node.instance_id}.log",
            start_timeout_seconds=config.runtime.start_timeout_seconds,
            size_multiplier=config.cache.size_multiplier,
            min_model_size_bytes=config.cache.min_model_size_bytes,
            load_timeout_seconds=config.cache.load_timeout_seconds,
            max_message_bytes=client_messages.transport_limit(config.service.max_message_bytes),
            mesh_url=mesh_url(config),
        )
    )


def mesh_url(config: settings.Settings) -> str:
    """The node's V2 REST URL as its own runtime reaches it (loopback for a
    node listening on every address); empty when REST is off or behind TLS."""
    service = config.service
    if service.rest_port <= 0 or config.tls.key_cert_path is not None:
        return ""
    host = "127.0.0.1" if service.host in ("", "0.0.0.0", "::", "[::]") else service.host
    return f"http://{host}:{service.rest_port}"


def _triton(config: settings.Settings) -> interfaces.RuntimeAdapter:
    # Our own Triton is the nvidia-pytriton build (Python backend only); one
    # reached at an endpoint is NVIDIA's image (deploy/runtimes/triton.yaml),
    # which has every backend in the format table.
    served = (
        tuple(triton_formats.FORMATS)
        if config.runtime.endpoint
        else triton_formats.WHEEL_MODEL_TYPES
    )
    return triton_adapter.TritonAdapter(
        triton_adapter.TritonConfig(
            model_dir=config.node.model_dir,
            venv=config.runtime.venv / "triton",
            endpoint=config.runtime.endpoint,
            log_path=config.node.data_dir / "logs" / f"triton-{config.node.instance_id}.log",
            start_timeout_seconds=config.runtime.start_timeout_seconds,
            size_multiplier=config.cache.size_multiplier,
            min_model_size_bytes=config.cache.min_model_size_bytes,
            load_timeout_seconds=config.cache.load_timeout_seconds,
            model_types=served,
        )
    )


RUNTIMES: dict[str, Callable[[settings.Settings], interfaces.RuntimeAdapter]] = {
    "mlserver": _mlserver,
    "triton": _triton,
}
"""Runtime name → adapter factory: a third runtime is one adapter module and
one line here."""


def make_runtime(config: settings.Settings) -> interfaces.RuntimeAdapter:
    """The runtime adapter the settings ask for."""
    factory = RUNTIMES.get(config.runtime.kind)
    if factory is None:
        raise errors.ConfigError(
            f"MESHSERVE_RUNTIME: {config.runtime.kind!r} is not a known runtime "
            f"(known: {', '.join(sorted(RUNTIMES))})"
        )
    return factory(config)
