"""The management API's logic, free of any transport.

:mod:`mesh.edges.management_grpc` is a thin servicer over this class: it turns
protobuf messages into these calls and :class:`mesh.core.errors.MeshError` into gRPC
statuses. Everything here is what ModelMesh's ``mmesh.ModelMesh`` service
means: register and unregister concrete models, load them ahead of traffic,
and keep vmodels (stable names such as a Predictor's) pointing at the right
concrete model, moving the pointer only once the new target is loaded.

Writes go to etcd with compare-and-set (:mod:`mesh.kv.records_store`); reads come from the
node's placement-table mirror, after waiting for it to reflect this call's own
writes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
from collections.abc import Coroutine, Mapping
from typing import Any

from mesh.core import (
    clock,
    errors,
    ids,
    interfaces,
    model_key,
    placement,
    records,
    settings,
    vmodel_transitions,
)
from mesh.kv import placement_table, records_store
from mesh.node import cache_manager, dispatch

log = logging.getLogger(__name__)

_MIRROR_WAIT_SECONDS = 10.0


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """Where a model's files are: ModelMesh's ``ModelInfo``."""

    type: str
    path: str = ""
    key: str = ""
    """A storage key, or JSON with key, parameters and schema path."""


@dataclasses.dataclass(frozen=True)
class ChainStep:
    """A model of a vmodel's chain, with where its files are."""

    model_id: str
    info: ModelInfo


@dataclasses.dataclass(frozen=True)
class ChainModels:
    """A vmodel's transformer and explainer (``None``: none)."""

    transformer: ChainStep | None = None
    explainer: ChainStep | None = None


@dataclasses.dataclass(frozen=True)
class CopyView:
    location: str
    status: records.ModelStatus
    time_ms: int


@dataclasses.dataclass(frozen=True)
class ModelStatusView:
    """ModelMesh's ``ModelStatusInfo``."""

    status: records.ModelStatus
    errors: tuple[str, ...] = ()
    copies: tuple[CopyView, ...] = ()


class VModelStatus(enum.StrEnum):
    NOT_FOUND = "NOT_FOUND"
    DEFINED = "DEFINED"
    TRANSITIONING = "TRANSITIONING"
    TRANSITION_FAILED = "TRANSITION_FAILED"


@dataclasses.dataclass(frozen=True)
class VModelStatusView:
    """ModelMesh's ``VModelStatusInfo``."""

    status: VModelStatus
    active_model_id: str = ""
    target_model_id: str = ""
    active: ModelStatusView = ModelStatusView(records.ModelStatus.NOT_FOUND)
    target: ModelStatusView | None = None
    owner: str = ""


def vmodel_status(v: records.VModelRecord | None) -> VModelStatus:
    if v is None:
        return VModelStatus.NOT_FOUND
    if not v.transitioning:
        return VModelStatus.DEFINED
    return VModelStatus.TRANSITION_FAILED if v.failed else VModelStatus.TRANSITIONING


class Management:
    """Registration and vmodel logic for one node."""

    def __init__(
        self,
        config: settings.Settings,
        record_store: records_store.RecordStore,
        mirror: placement_table.PlacementTable,
        manager: cache_manager.CacheManager,
        dispatcher: dispatch.Dispatcher,
        peer_channels: interfaces.PeerLoader,
    ) -> None:
        self._failure_expiry_ms = int(config.cache.failure_expiry_seconds * 1000)
        self._store = record_store
        self._table = mirror
        self._manager = manager
        self._dispatcher = dispatcher
        self._peers = peer_channels
        self._tasks: set[asyncio.Task[None]] = set()

    async def stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- concrete models ---------------------------------------------------

    async def register_model(
        self,
        model_id: str,
        info: ModelInfo,
        *,
        load_now: bool = False,
        sync: bool = False,
        last_used_ms: int = 0,
        auto_delete: bool = False,
        min_copies: int = 0,
        max_copies: int = 0,
    ) -> ModelStatusView:
        """Register ``model_id``, or update its definition if it changed (its
        loaded copies are then unloaded, and reloaded on demand). Registering
        the same definition again clears its recorded failures (a retry) and
        updates its copy limits."""
        ids.validate(model_id)
        if not info.type:
            raise errors.InvalidRequest("modelInfo.type is required (e.g. 'sklearn')")
        if max_copies and min_copies > max_copies:
            raise errors.InvalidRequest(
                f"minCopies ({min_copies}) is more than maxCopies ({max_copies})"
            )
        key = model_key.parse(info.key)
        new = records.ModelRecord(
            model_type=info.type,
            path=info.path,
            storage_key=key.storage_key,
            storage_params=key.storage_params,
            schema_path=key.schema_path,
            runtime=key.runtime,
            last_used_ms=last_used_ms or clock.now_ms(),
            auto_delete=auto_delete,
            registered_ms=clock.now_ms(),
            min_copies=min_copies,
            max_copies=max_copies,
        )

        def change(cur: records.ModelRecord | None) -> records.ModelRecord | None:
            if cur is None:
                return new
            if cur.same_source(new):
                again = dataclasses.replace(
                    cur, failures={}, min_copies=min_copies, max_copies=max_copies
                )
                return cur if again == cur else again
            # A new definition: the old copies are stale and get unloaded.
            return dataclasses.replace(new, last_used_ms=cur.last_used_ms)

        rec = await self._store.update_model(model_id, change)
        await self._table.wait_until(
            lambda: self._table.model(model_id) == rec, _MIRROR_WAIT_SECONDS
        )
        if load_now:
            await self._load(model_id, sync)
        return self.model_status(model_id)

    async def unregister_model(self, model_id: str) -> None:
        """Delete the model's registration and unload it everywhere. Unknown
        ids are not an error (as in ModelMesh)."""
        ids.validate(model_id)
        await self._store.update_model(model_id, lambda cur: None)
        await self._table.wait_until(
            lambda: self._table.model(model_id) is None, _MIRROR_WAIT_SECONDS
        )
        await self._manager.unload(model_id, "unregistered")

    def model_status(self, model_id: str) -> ModelStatusView:
        rec = self._table.model(model_id)
        status = records.model_status(rec, clock.now_ms(), self._failure_expiry_ms)
        if rec is None:
            return ModelStatusView(status)
        copies = sorted(rec.copies.items(), key=lambda kv: kv[1].since_ms, reverse=True)
        failures = records.recent_failures(rec, clock.now_ms(), self._failure_expiry_ms)
        return ModelStatusView(
            status=status,
            errors=tuple(f"{inst}: {f.message}" for inst, f in failures.items()),
            copies=tuple(
                CopyView(inst, records.ModelStatus(c.state.value), c.since_ms) for inst, c in copies
            )
            + tuple(
                CopyView(inst, records.ModelStatus.LOADING_FAILED, f.time_ms)
                for inst, f in failures.items()
            ),
        )

    async def get_model_status(self, model_id: str) -> ModelStatusView:
        ids.validate(model_id)
        return self.model_status(model_id)

    async def ensure_loaded(self, model_id: str, *, sync: bool = False) -> ModelStatusView:
        """Load a registered model now, without traffic."""
        ids.validate(model_id)
        if self._table.model(model_id) is None:
            raise errors.ModelNotFound(model_id)
        await self._load(model_id, sync)
        return self.model_status(model_id)

    async def _ensure_somewhere(self, model_id: str) -> None:
        """Have a ready copy somewhere: here or on the node placement picks."""

        async def here(unreachable: frozenset[str], remaining: float) -> None:
            await self._manager.ensure_loaded(model_id, remaining)

        async def there(route: placement.Route, _: frozenset[str], remaining: float) -> None:
            if route.action is placement.Action.FORWARD:
                return  # a ready copy is there already
            peer = self._table.instance(route.instance)
            if peer is None:
                raise errors.RuntimeUnavailable(f"node {route.instance} left the mesh")
            await self._peers.ensure_local(peer.endpoint, model_id, timeout=remaining)

        await self._dispatcher.run(model_id, None, here, there)

    async def _load(self, model_id: str, sync: bool) -> None:
        async def load() -> None:
            try:
                await self._ensure_somewhere(model_id)
            except errors.MeshError as e:  # recorded in the model's status
                log.info("load of %s requested by the API failed: %s", model_id, e.message)

        if sync:
            await load()
        else:
            self._spawn(load())

    # -- vmodels -------------------------------------------------------------

    async def set_vmodel(
        self,
        vmodel_id: str,
        target_model_id: str,
        *,
        owner: str = "",
        update_only: bool = False,
        model_info: ModelInfo | None = None,
        auto_delete_target: bool = False,
        load_now: bool = False,
        force: bool = False,
        sync: bool = False,
        expected_target_model_id: str = "",
        min_copies: int = 0,
        max_copies: int = 0,
        canary_percent: int | None = None,
        chain: ChainModels | None = None,
    ) -> VModelStatusView:
        """Create a vmodel or point it at a new target. The active model keeps
        serving until the target is loaded (unless ``force``, or the active
        model is not loaded anywhere), then the alias moves and a model no
        vmodel uses any more is deleted if it was registered for auto-delete.
        A ``canary_percent`` (0-99) holds the move and gives the loaded target
        that share of requests instead (:mod:`mesh.core.vmodel_transitions`).
        A ``chain`` registers its models (for auto-delete) and names them on
        the vmodel at once; ``None`` leaves the vmodel's chain as it is."""
        ids.validate(vmodel_id, "vmodel id")
        ids.validate(target_model_id, "target model id")
        vmodel_transitions.canary_of(canary_percent)  # refuse a bad percent before any write
        await self._register_target(
            target_model_id, model_info, auto_delete_target, (min_copies, max_copies)
        )
        request = vmodel_transitions.VModelRequest(
            vmodel_id,
            target_model_id,
            owner,
            update_only,
            force,
            expected_target_model_id,
            canary_percent,
            None if chain is None else await self._register_chain(chain),
        )
        new = await self._write_vmodel(request)
        if new.transitioning:
            task = self._spawn(self._complete_transition(vmodel_id, target_model_id))
            if sync:
                await asyncio.shield(task)
        elif load_now:
            await self._load(target_model_id, sync)
        return self.vmodel_status(vmodel_id)

    async def _write_vmodel(
        self, request: vmodel_transitions.VModelRequest
    ) -> records.VModelRecord:
        """Apply ``request`` to the vmodel's record, wait for the mirror to
        show it, and delete the auto-delete models it no longer uses."""
        vmodel_id = request.vmodel_id
        active_loaded = self._active_loaded(vmodel_id)
        before: list[records.VModelRecord | None] = [None]

        def change(cur: records.VModelRecord | None) -> records.VModelRecord | None:
            before[0] = cur
            return vmodel_transitions.requested(cur, request, active_loaded=active_loaded)

        new = await self._store.update_vmodel(vmodel_id, change)
        await self._table.wait_until(
            lambda: self._table.vmodel(vmodel_id) == new, _MIRROR_WAIT_SECONDS
        )
        assert new is not None
        await self._delete_unreferenced(
            vmodel_transitions.models_of(before[0]) - vmodel_transitions.models_of(new)
        )
        return new

    async def _register_target(
        self, model_id: str, info: ModelInfo | None, auto_delete: bool, copies: tuple[int, int]
    ) -> None:
        """Register a vmodel's target when its definition comes with it; else
        it must be registered already. ``copies``: its minimum and maximum."""
        if info is not None:
            await self.register_model(
                model_id, info, auto_delete=auto_delete, min_copies=copies[0], max_copies=copies[1]
            )
        elif self._table.model(model_id) is None:
            raise errors.ModelNotFound(model_id)

    async def _register_chain(self, chain: ChainModels) -> vmodel_transitions.Chain:
        """Register a chain's models (auto-delete: they go with the vmodel)."""
        for step in (chain.transformer, chain.explainer):
            if step is not None:
                ids.validate(step.model_id, "chain model id")
                await self.register_model(step.model_id, step.info, auto_delete=True)
        return vmodel_transitions.Chain(
            chain.transformer.model_id if chain.transformer else "",
            chain.explainer.model_id if chain.explainer else "",
        )

    def _active_loaded(self, vmodel_id: str) -> bool:
        """Whether the vmodel's active model is loaded somewhere now."""
        current = self._table.vmodel(vmodel_id)
        if current is None:
            return False
        status = records.model_status(
            self._table.model(current.active_model), clock.now_ms(), self._failure_expiry_ms
        )
        return status is records.ModelStatus.LOADED

    async def _complete_transition(self, vmodel_id: str, target: str) -> None:
        """Load the target, then move the alias to it."""
        failed = False
        try:
            await self._ensure_somewhere(target)
        except errors.MeshError as e:
            log.warning("vmodel %s: target %s failed to load: %s", vmodel_id, target, e.message)
            failed = True
        before: list[records.VModelRecord | None] = [None]

        def change(cur: records.VModelRecord | None) -> records.VModelRecord | None:
            before[0] = cur
            return vmodel_transitions.completed(cur, target, target_failed=failed)

        new = await self._store.update_vmodel(vmodel_id, change)
        if new is not None:
            # The mirror must show the move before references are counted,
            # or the old model still looks used and is never deleted.
            await self._table.wait_until(
                lambda: self._table.vmodel(vmodel_id) == new, _MIRROR_WAIT_SECONDS
            )
            await self._delete_unreferenced(
                vmodel_transitions.models_of(before[0]) - vmodel_transitions.models_of(new)
            )

    async def delete_vmodel(self, vmodel_id: str, owner: str = "") -> None:
        """Delete a vmodel (and its auto-delete models nothing else uses)."""
        ids.validate(vmodel_id, "vmodel id")
        before: list[records.VModelRecord | None] = [None]

        def change(cur: records.VModelRecord | None) -> records.VModelRecord | None:
            before[0] = cur
            vmodel_transitions.check_owner(vmodel_id, cur, owner)
            return None

        await self._store.update_vmodel(vmodel_id, change)
        await self._table.wait_until(
            lambda: self._table.vmodel(vmodel_id) is None, _MIRROR_WAIT_SECONDS
        )
        await self._delete_unreferenced(vmodel_transitions.models_of(before[0]))

    def vmodel_status(self, vmodel_id: str, owner: str = "") -> VModelStatusView:
        v = self._table.vmodel(vmodel_id)
        if v is None or (owner and v.owner and v.owner != owner):
            return VModelStatusView(VModelStatus.NOT_FOUND)
        return VModelStatusView(
            status=vmodel_status(v),
            active_model_id=v.active_model,
            target_model_id=v.target_model,
            active=self.model_status(v.active_model),
            target=self.model_status(v.target_model) if v.transitioning else None,
            owner=v.owner,
        )

    async def get_vmodel_status(self, vmodel_id: str, owner: str = "") -> VModelStatusView:
        ids.validate(vmodel_id, "vmodel id")
        return self.vmodel_status(vmodel_id, owner)

    # -- listings (the placement table) -----------------------------------------

    def models(self) -> Mapping[str, records.ModelRecord]:
        return self._table.models()

    def vmodels(self) -> Mapping[str, records.VModelRecord]:
        return self._table.vmodels()

    def instances(self) -> Mapping[str, records.InstanceRecord]:
        return self._table.instances()

    def references(self, model_id: str) -> int:
        """How many vmodels point at the model (derived, never stored)."""
        return sum(
            1 for v in self._table.vmodels().values() if model_id in vmodel_transitions.models_of(v)
        )

    async def _delete_unreferenced(self, model_ids: set[str]) -> None:
        referenced = set()
        for v in self._table.vmodels().values():
            referenced |= vmodel_transitions.models_of(v)
        for model_id in model_ids - referenced:
            rec = self._table.model(model_id)
            if rec is not None and rec.auto_delete:
                log.info("deleting model %s: no vmodel uses it any more", model_id)
                await self.unregister_model(model_id)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        t = asyncio.create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        return t
