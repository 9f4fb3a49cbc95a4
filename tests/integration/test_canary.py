"""A canary rollout of an InferenceService on a real node (etcd, MLServer):
KServe's ``canaryTrafficPercent`` sends that share of requests to the new
model once it is loaded, sticky by ``mm-routing-key``; 0 keeps the new model
loaded with no traffic (blue-green); rolling back (the old spec again) and
promoting (``meshserve predictor rollout --percent 100``) lose no request.

The old model is iris' logistic regression, the new one always answers 2:
for a row iris calls 0, the answer says which model served it.
"""

from __future__ import annotations

import random
import subprocess
import sys
import threading
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn import datasets, dummy
from tritonclient import grpc as triton

from kube import mesh_client, model_resources
from mesh.edges.proto import model_mesh_pb2 as pb2
from meshserve import samples
from router import request_parsing
from tests.integration import mesh_fixtures

NAME = "canary-iris"
REQUESTS = 1000


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("canary")
    iris = samples.train_iris_logistic(d / "iris")
    x, y = datasets.load_iris(return_X_y=True)
    twos = dummy.DummyClassifier(strategy="constant", constant=2).fit(x, y)
    (d / "twos").mkdir()
    joblib.dump(twos, d / "twos" / "model.joblib")
    row = x[:1].astype(np.float64)
    assert joblib.load(iris.folder / "model.joblib").predict(row)[0] == 0
    return {"old": iris.folder, "new": d / "twos", "row": row}


def isvc(folder: Any, canary: int | None = None) -> Any:
    predictor: dict[str, Any] = {
        "model": {"modelFormat": {"name": "sklearn"}, "storage": {"path": str(folder)}}
    }
    if canary is not None:
        predictor["canaryTrafficPercent"] = canary
    return model_resources.parse(
        {
            "apiVersion": "serving.kserve.io/v1beta1",
            "kind": "InferenceService",
            "metadata": {"name": NAME},
            "spec": {"predictor": predictor},
        }
    )


def answer(c: triton.InferenceServerClient, row: Any, key: str = "") -> int:
    inp = triton.InferInput("predict", list(row.shape), "FP64")
    inp.set_data_from_numpy(row)
    headers = {"mm-routing-key": key} if key else None
    got = c.infer(NAME, [inp], headers=headers, client_timeout=60).as_numpy("predict")
    return int(got.reshape(-1)[0])


def target_loaded(mesh: mesh_client.MeshClient) -> bool:
    s = mesh.vmodel_status(NAME)
    loaded = pb2.ModelStatusInfo.LOADED
    return bool(s.targetModelId != s.activeModelId and s.targetModelStatus.status == loaded)


class Traffic:
    """Requests sent without pause from a thread until stopped: every answer
    and every failure."""

    def __init__(self, endpoint: str, row: Any) -> None:
        self.answers: list[int] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(endpoint, row))

    def _run(self, endpoint: str, row: Any) -> None:
        with triton.InferenceServerClient(endpoint) as c:
            while not self._stop.is_set():
                try:
                    self.answers.append(answer(c, row))
                except Exception as e:  # every failure counts, none stops the traffic
                    self.failures.append(str(e))

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)


def test_a_canary_takes_its_share_sticks_by_key_and_rolls_back_and_promotes_without_loss(
    mesh_node: mesh_fixtures.NodeThread, models: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The node draws from a seeded generator: the share is still measured
    # against the binomial interval, but a run cannot land in its 0.1 % tail.
    monkeypatch.setattr(request_parsing, "DRAWS", random.Random(20261204))
    row = models["row"]
    with mesh_node.client() as mesh, triton.InferenceServerClient(mesh_node.endpoint) as c:
        mesh.apply(isvc(models["old"]), load_now=True)
        mesh_fixtures.wait_for(lambda: answer(c, row) == 0)
        mesh.apply(isvc(models["new"], canary=30), load_now=True)
        mesh_fixtures.wait_for(lambda: target_loaded(mesh))
        new = sum(answer(c, row) == 2 for _ in range(REQUESTS))
        # 30 % of 1,000 within a two-sided 99.9 % binomial interval (z = 3.29).
        spread = 3.29 * (REQUESTS * 0.3 * 0.7) ** 0.5
        assert abs(new - 0.3 * REQUESTS) <= spread, new
        for key in (f"user-{i}" for i in range(40)):
            first = answer(c, row, key)
            assert all(answer(c, row, key) == first for _ in range(4)), key
        with Traffic(mesh_node.endpoint, row) as rollback:
            mesh.apply(isvc(models["old"]))  # the spec as it was: all back on the old model
            mesh_fixtures.wait_for(lambda: answer(c, row) == 0 and not target_loaded(mesh))
            assert {answer(c, row) for _ in range(50)} == {0}
        assert rollback.failures == [] and rollback.answers
        # Blue-green: the new model loaded beside the old one, with no traffic...
        mesh.apply(isvc(models["new"], canary=0), load_now=True)
        mesh_fixtures.wait_for(lambda: target_loaded(mesh))
        assert {answer(c, row) for _ in range(50)} == {0}
        # ... then all of it at once, with the CLI's rollout verb.
        with Traffic(mesh_node.endpoint, row) as promotion:
            done = subprocess.run(
                [sys.executable, "-m", "meshserve.cli", "predictor", "rollout", NAME,
                 "--percent", "100", "--endpoint", mesh_node.endpoint],
                check=False, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            defined = pb2.VModelStatusInfo.DEFINED
            mesh_fixtures.wait_for(lambda: mesh.vmodel_status(NAME).status == defined)
            assert {answer(c, row) for _ in range(50)} == {2}
        assert promotion.failures == [] and set(promotion.answers) <= {0, 2}
        mesh.delete(NAME)
