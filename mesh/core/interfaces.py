"""The seams between the mesh core and the outside world.

A node's cache manager (:mod:`mesh.node.cache_manager`) pulls a model's files with
a :class:`ModelPuller`, then loads them into the runtime with a
:class:`RuntimeAdapter`. The implementations live in ``puller/`` and
``runtime_adapters/``; the composition root (:mod:`meshserve.node`) picks
them. Adding a runtime or a storage backend means one new module that
satisfies one of these protocols, and nothing in ``mesh`` changes.

The model's files live in one folder per model, ``<model_dir>/<model_id>``:
the puller fills it, the adapter may add its own files there (MLServer's
``model-settings.json``, Triton's ``config.pbtxt``) because the runtime's
model repository *is* ``<model_dir>``.

:class:`PeerLoader` is the seam to the other nodes, so the management and
scaling logic can ask a peer to load a model without importing gRPC.
"""

from __future__ import annotations

import pathlib
from typing import Protocol

from mesh.core import records


class RuntimeAdapter(Protocol):
    """One model runtime process (MLServer, Triton) next to this node.

    Every method may raise :class:`mesh.core.errors.RuntimeUnavailable`; ``load``
    raises :class:`mesh.core.errors.ModelLoadFailed` with the runtime's own message
    when the runtime refuses the model.
    """

    name: str
    """The runtime's name (``mlserver``, ``triton``), used in labels."""

    @property
    def grpc_target(self) -> str:
        """``host:port`` of the runtime's V2 gRPC endpoint, for the router."""
        ...

    @property
    def pid(self) -> int | None:
        """The runtime process this adapter started (``None`` for one
        already running elsewhere), whose memory use is measured."""
        ...

    @property
    def counts_gpu_memory(self) -> bool:
        """Whether the models live in GPU memory: the node's capacity is then
        the GPU's memory, else host memory."""
        ...

    def supported_model_types(self) -> tuple[str, ...]:
        """Model formats this runtime can load (``sklearn``, ``xgboost``...)."""
        ...

    async def start(self) -> None:
        """Start the runtime (or connect to one already running) and wait
        until it is ready."""
        ...

    async def stop(self) -> None:
        """Stop the runtime if this adapter started it; idempotent."""
        ...

    async def ready(self) -> bool:
        """Whether the runtime answers ServerReady with true now."""
        ...

    async def load(self, model_id: str, model_type: str, model_path: pathlib.Path) -> int:
        """Load the model whose files are in ``model_path`` (which is
        ``<model_dir>/<model_id>``) under the name ``model_id``. Returns the
        bytes the loaded model takes, measured where the runtime allows it."""
        ...

    async def unload(self, model_id: str) -> None:
        """Unload the model and return once its memory is free. Unloading a
        model the runtime does not hold is not an error."""
        ...


class ModelPuller(Protocol):
    """Fetches a model's files onto this node."""

    async def pull(self, model_id: str, record: records.ModelRecord) -> pathlib.Path:
        """Put the model's files in ``<model_dir>/<model_id>`` (complete or
        not at all) and return that folder. Raises
        :class:`mesh.core.errors.ModelLoadFailed` naming the model and the cause."""
        ...

    async def remove(self, model_id: str) -> None:
        """Delete the model's local files; absent files are not an error."""
        ...

    async def retire(self, model_id: str, record: records.ModelRecord) -> bool:
        """The model left memory but stays registered: keep its files on disk
        for its next pull if the puller has a disk tier (``True``), else
        delete them (``False``)."""
        ...


class PeerLoader(Protocol):
    """Asks another node to load a model (:class:`mesh.edges.peers.Peers` on gRPC)."""

    async def ensure_local(
        self,
        endpoint: str,
        model_id: str,
        *,
        extra_copy: bool = False,
        sync: bool = True,
        timeout: float | None = None,
    ) -> bool:
        """Have the node at ``endpoint`` load ``model_id``; ``True`` once it
        holds it (with ``sync``). Raises the mesh error the peer answered."""
        ...
