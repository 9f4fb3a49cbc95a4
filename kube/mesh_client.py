"""A client of a node's management API, as the controller and the CLI use it.

A Predictor (or, later, any resource that names a model) becomes a vmodel
owned by ``predictor`` whose target is a concrete model registered for
auto-delete, through the same ``mmesh.ModelMesh`` calls a ModelMesh Serving
controller makes; the read-only ``MeshAdmin`` listings serve ``meshserve
models`` and ``meshserve nodes``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from kube import predictor
from mesh.core import errors
from mesh.edges.proto import meshserve_admin_pb2 as admin_pb2
from mesh.edges.proto import meshserve_admin_pb2_grpc as admin_pb2_grpc
from mesh.edges.proto import model_mesh_pb2 as pb2
from mesh.edges.proto import model_mesh_pb2_grpc as pb2_grpc


def _model_info(spec: predictor.PredictorSpec) -> Any:
    return pb2.ModelInfo(type=spec.model_type, path=spec.path, key=predictor.storage_key_json(spec))


def _chain_step(step: predictor.PredictorSpec | None) -> Any:
    if step is None:
        return None
    return admin_pb2.ChainStep(model_id=step.model_id, model_info=_model_info(step))


class MeshClient:
    """A synchronous client of one node's management API."""

    def __init__(self, endpoint: str, timeout: float = 30.0, credentials: Any = None) -> None:
        """``credentials``: ``grpc.ChannelCredentials`` for a TLS node
        (:func:`tls_credentials`), ``None`` for plaintext."""
        self.endpoint = endpoint
        self.timeout = timeout
        self._channel = (
            grpc.secure_channel(endpoint, credentials)
            if credentials is not None
            else grpc.insecure_channel(endpoint)
        )
        self.mesh = pb2_grpc.ModelMeshStub(self._channel)
        self.admin = admin_pb2_grpc.MeshAdminStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> MeshClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def apply(
        self, spec: predictor.PredictorSpec, load_now: bool = False, sync: bool = False
    ) -> Any:
        """Register a Predictor or InferenceService: a vmodel named after it,
        owned by its kind, pointing at the concrete model its spec defines,
        with its canary and its chain (transformer, explainer: none removes
        them), through meshserve's admin API (``setVModel`` has no field for
        them)."""
        request = pb2.SetVModelRequest(
            vModelId=spec.name,
            targetModelId=spec.model_id,
            owner=spec.owner,
            modelInfo=_model_info(spec),
            autoDeleteTargetModel=True,
            loadNow=load_now,
            sync=sync,
            minCopies=spec.min_copies,
            maxCopies=spec.max_copies,
        )
        split = admin_pb2.SetVModelSplitRequest(
            request=request,
            canary_percent=spec.canary_percent,
            chain=admin_pb2.VModelChain(
                transformer=_chain_step(spec.transformer), explainer=_chain_step(spec.explainer)
            ),
        )
        return self.admin.SetVModelSplit(split, timeout=self.timeout)

    def rollout(self, name: str, percent: int) -> Any:
        """Set the canary share of a vmodel's current target (100: promote it;
        0: keep every request on the active model). The target is what the
        last apply registered; a vmodel in no rollout is left as it is."""
        current = self.vmodel_status(name)
        if current.status == pb2.VModelStatusInfo.NOT_FOUND:
            raise errors.ModelNotFound(name, "vmodel")
        request = pb2.SetVModelRequest(
            vModelId=name,
            targetModelId=current.targetModelId,
            owner=current.owner,
            expectedTargetModelId=current.targetModelId,
        )
        split = admin_pb2.SetVModelSplitRequest(request=request, canary_percent=percent)
        return self.admin.SetVModelSplit(split, timeout=self.timeout)

    def delete(self, name: str, owner: str = "") -> bool:
        """Delete a vmodel (of this ``owner`` only, when given: a Predictor's
        deletion leaves an InferenceService of the same name alone);
        ``False`` if there was none."""
        status = self.vmodel_status(name, owner)
        if status.status == pb2.VModelStatusInfo.NOT_FOUND:
            return False
        self.mesh.deleteVModel(
            pb2.DeleteVModelRequest(vModelId=name, owner=owner), timeout=self.timeout
        )
        return True

    def vmodel_status(self, name: str, owner: str = "") -> Any:
        return self.mesh.getVModelStatus(
            pb2.GetVModelStatusRequest(vModelId=name, owner=owner), timeout=self.timeout
        )

    def vmodels(self) -> Sequence[Any]:
        return list(self.admin.ListVModels(admin_pb2.ListRequest(), timeout=self.timeout).vmodels)

    def models(self) -> Sequence[Any]:
        return list(self.admin.ListModels(admin_pb2.ListRequest(), timeout=self.timeout).models)

    def instances(self) -> Sequence[Any]:
        return list(
            self.admin.ListInstances(admin_pb2.ListRequest(), timeout=self.timeout).instances
        )
