"""The CLI's reading of a vmodel's status (``meshserve predictor status``):
ModelMesh Serving's Predictor status words, through the controller's own
enums and table (:mod:`kube.predictor_status`)."""

from __future__ import annotations

import pytest

from mesh.edges.proto import model_mesh_pb2 as pb2
from meshserve import client

M = pb2.ModelStatusInfo
V = pb2.VModelStatusInfo
ModelStatus = pb2.ModelStatusInfo.ModelStatus
VModelStatus = pb2.VModelStatusInfo.VModelStatus


def vmodel(
    status: VModelStatus = V.DEFINED,
    active: ModelStatus = M.LOADED,
    target: ModelStatus | None = None,
    errors: tuple[str, ...] = (),
) -> pb2.VModelStatusInfo:
    v = V(status=status, activeModelId="m-1", targetModelId="m-2")
    v.activeModelStatus.status = active
    v.activeModelStatus.errors.extend(errors)
    if target is not None:
        v.targetModelStatus.status = target
    return v


@pytest.mark.parametrize(
    ("active", "state", "available"),
    [
        (M.NOT_LOADED, "Standby", True),
        (M.LOADING, "Loading", False),
        (M.LOADED, "Loaded", True),
        (M.LOADING_FAILED, "FailedToLoad", False),
        (M.NOT_FOUND, "", False),
        (M.UNKNOWN, "Unknown", False),
    ],
)
def test_the_active_models_state_and_availability(
    active: ModelStatus, state: str, available: bool
) -> None:
    status = client.predictor_status(vmodel(active=active))
    assert (status.active_model_state, status.available) == (state, available)


@pytest.mark.parametrize(
    ("vmodel_status", "transition"),
    [
        (V.DEFINED, "UpToDate"),
        (V.TRANSITIONING, "InProgress"),
        (V.TRANSITION_FAILED, "BlockedByFailedLoad"),
        (V.NOT_FOUND, "Unknown"),
        (V.UNKNOWN, "Unknown"),
    ],
)
def test_the_transition_status(vmodel_status: VModelStatus, transition: str) -> None:
    assert client.predictor_status(vmodel(status=vmodel_status)).transition_status == transition


def test_the_target_models_state_only_while_there_is_one() -> None:
    assert client.predictor_status(vmodel()).target_model_state == ""
    loading = client.predictor_status(vmodel(V.TRANSITIONING, target=M.LOADING))
    assert loading.target_model_state == "Loading"
    assert client.predictor_status(vmodel(target=M.UNKNOWN)).target_model_state == ""


def test_the_status_reads_as_plain_words() -> None:
    status = client.predictor_status(
        vmodel(V.TRANSITION_FAILED, M.LOADED, M.LOADING_FAILED, errors=("out of memory",))
    )
    assert f"{status.transition_status} {status.target_model_state}" == (
        "BlockedByFailedLoad FailedToLoad"
    )
    assert (status.active_model_id, status.target_model_id) == ("m-1", "m-2")
    assert status.last_failure == "out of memory"
