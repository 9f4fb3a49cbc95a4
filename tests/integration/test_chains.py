"""A transformer in front of a predictor and an explainer beside it, on a real
node (etcd, MLServer), registered from InferenceService YAML:

- the transformer standardises the four iris features before a predictor
  trained on standardised features, and renames its ``predict`` output to
  ``species``: the answer equals doing both by hand, over gRPC and REST, and
  each step's time is in the metrics; a bad row's error names the step;
- the explainer (SHAP's KernelExplainer over background rows) answers
  ``:explain`` (V1), ``/explain`` (V2) and ``mm-explain`` (gRPC) with the
  values SHAP computes directly on the same model, rows and background.
"""

from __future__ import annotations

import http.client
import json
import pathlib
import subprocess
import textwrap
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn import datasets, linear_model
from tritonclient import grpc as triton
from tritonclient.utils import InferenceServerException

from kube import model_resources
from meshserve import samples
from tests.integration import mesh_fixtures

TRANSFORMED = "iris-scaled"
EXPLAINED = "iris-explained"

TRANSFORMER = """
import numpy as np
from mlserver import types
from mlserver.codecs import NumpyCodec


class StandardScale:
    def load(self):
        stats = np.load(__file__.replace("transformer.py", "stats.npy"))
        self.mean, self.std = stats[0], stats[1]

    def preprocess(self, request):
        x = NumpyCodec.decode_input(request.inputs[0])
        scaled = (x - self.mean) / self.std  # a row of another width raises ValueError
        return types.InferenceRequest(inputs=[NumpyCodec.encode_input("predict", scaled)])

    async def postprocess(self, response):
        out = response.outputs[0]
        return types.InferenceResponse(
            model_name="ignored", outputs=[out.model_copy(update={"name": "species"})]
        )
"""


def isvc(name: str, predictor: pathlib.Path, **chain: pathlib.Path) -> Any:
    spec: dict[str, Any] = {
        "predictor": {
            "model": {"modelFormat": {"name": "sklearn"}, "storage": {"path": str(predictor)}}
        }
    }
    for step, folder in chain.items():
        spec[step] = {"model": {"storage": {"path": str(folder)}}}
    return model_resources.parse(
        {
            "apiVersion": "serving.kserve.io/v1beta1",
            "kind": "InferenceService",
            "metadata": {"name": name},
            "spec": spec,
        }
    )


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("chains")
    x, y = datasets.load_iris(return_X_y=True)
    mean, std = x.mean(axis=0), x.std(axis=0)
    scaled = linear_model.LogisticRegression(max_iter=500).fit((x - mean) / std, y)
    for name in ("scaled", "transformer", "explainer"):
        (d / name).mkdir()
    joblib.dump(scaled, d / "scaled" / "model.joblib")
    (d / "transformer" / "transformer.py").write_text(TRANSFORMER)
    np.save(d / "transformer" / "stats.npy", np.stack([mean, std]))
    np.save(d / "explainer" / "background.npy", x[::15])
    (d / "explainer" / "explainer.json").write_text(json.dumps({"output": "predict_proba"}))
    iris = samples.train_iris_logistic(d / "iris")
    rows = x[[0, 60, 120, 149]].astype(np.float64)
    by_hand = scaled.predict((rows - mean) / std)
    return {"d": d, "iris": iris, "rows": rows, "by_hand": by_hand}


@pytest.fixture(scope="module")
def registered(mesh_node: mesh_fixtures.NodeThread, folders: dict[str, Any]) -> str:
    d = folders["d"]
    with mesh_node.client() as mesh:
        mesh.apply(isvc(TRANSFORMED, d / "scaled", transformer=d / "transformer"))
        mesh.apply(isvc(EXPLAINED, folders["iris"].folder, explainer=d / "explainer"))
    return mesh_node.endpoint


def rest_url(node: mesh_fixtures.NodeThread) -> str:
    assert node.node.rest is not None
    return f"127.0.0.1:{node.node.rest.port}"


def post(url: str, path: str, doc: Any) -> tuple[int, Any]:
    host, port = url.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    try:
        conn.request("POST", path, body=json.dumps(doc).encode())
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_a_transformer_scales_the_inputs_and_renames_the_outputs_as_by_hand(
    registered: str, folders: dict[str, Any], mesh_node: mesh_fixtures.NodeThread
) -> None:
    rows = folders["rows"]
    with triton.InferenceServerClient(registered) as c:
        inp = triton.InferInput("features", list(rows.shape), "FP64")
        inp.set_data_from_numpy(rows)
        result = c.infer(TRANSFORMED, [inp], client_timeout=120)
    assert result.get_response().model_name == TRANSFORMED
    assert [o.name for o in result.get_response().outputs] == ["species"]
    assert result.as_numpy("species").reshape(-1).tolist() == folders["by_hand"].tolist()
    status, answer = post(
        rest_url(mesh_node),
        f"/v2/models/{TRANSFORMED}/infer",
        {"inputs": [{"name": "x", "datatype": "FP64", "shape": [4, 4], "data": rows.tolist()}]},
    )
    assert status == 200, answer
    assert [o["name"] for o in answer["outputs"]] == ["species"]
    assert answer["outputs"][0]["data"] == folders["by_hand"].tolist()
    exposition = mesh_node.node.metrics.exposition().decode()
    for stage in ("preprocess", "predict", "postprocess"):
        assert f'meshserve_chain_stage_milliseconds_count{{stage="{stage}"}} 2.0' in exposition


def test_a_row_the_transformer_cannot_take_is_the_clients_mistake_naming_the_step(
    registered: str,
) -> None:
    row = np.ones((1, 3), dtype=np.float64)
    with triton.InferenceServerClient(registered) as c:
        inp = triton.InferInput("features", [1, 3], "FP64")
        inp.set_data_from_numpy(row)
        with pytest.raises(InferenceServerException) as raised:
            c.infer(TRANSFORMED, [inp], client_timeout=120)
    assert raised.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert f"preprocess step of '{TRANSFORMED}'" in str(raised.value.message())


def shap_directly(folders: dict[str, Any]) -> dict[str, Any]:
    """SHAP's own KernelExplainer on the same model, background and rows, in
    MLServer's venv (where SHAP is installed)."""
    script = textwrap.dedent(
        f"""
        import json, joblib, numpy as np, shap
        np.random.seed(0)
        model = joblib.load({str(folders["iris"].folder / "model.joblib")!r})
        background = np.load({str(folders["d"] / "explainer" / "background.npy")!r})
        rows = np.array({folders["rows"].tolist()!r})
        explainer = shap.KernelExplainer(model.predict_proba, background)
        values = explainer.shap_values(rows, nsamples="auto", silent=True)
        print(json.dumps({{"shap_values": np.asarray(values).tolist(),
                          "expected_value": np.atleast_1d(explainer.expected_value).tolist()}}))
        """
    )
    python = mesh_fixtures.REPO_ROOT / ".runtimes" / "mlserver" / "bin" / "python"
    out = subprocess.run([str(python), "-c", script], capture_output=True, check=True, text=True)
    doc: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return doc


def test_an_explanation_equals_shaps_own_on_the_same_model_and_rows(
    registered: str, folders: dict[str, Any], mesh_node: mesh_fixtures.NodeThread
) -> None:
    rows = folders["rows"]
    expected = shap_directly(folders)
    url = rest_url(mesh_node)
    status, v1 = post(url, f"/v1/models/{EXPLAINED}:explain", {"instances": rows.tolist()})
    assert status == 200, v1
    np.testing.assert_allclose(v1["shap_values"], expected["shap_values"], atol=1e-9)
    np.testing.assert_allclose(v1["expected_value"], expected["expected_value"], atol=1e-9)
    status, v2 = post(
        url,
        f"/v2/models/{EXPLAINED}/explain",
        {"inputs": [{"name": "x", "datatype": "FP64", "shape": [4, 4], "data": rows.tolist()}]},
    )
    assert status == 200, v2
    assert v2["model_name"] == EXPLAINED
    by_name = {o["name"]: o for o in v2["outputs"]}
    assert by_name["shap_values"]["shape"] == [4, 4, 3]
    np.testing.assert_allclose(
        np.array(by_name["shap_values"]["data"]).reshape(4, 4, 3),
        expected["shap_values"],
        atol=1e-9,
    )
    with triton.InferenceServerClient(registered) as c:
        inp = triton.InferInput("x", list(rows.shape), "FP64")
        inp.set_data_from_numpy(rows)
        got = c.infer(EXPLAINED, [inp], headers={"mm-explain": "true"}, client_timeout=120)
    np.testing.assert_allclose(got.as_numpy("shap_values"), expected["shap_values"], atol=1e-9)
    # The same vmodel still predicts: explaining it changed nothing.
    status, predicted = post(url, f"/v1/models/{EXPLAINED}:predict", {"instances": rows.tolist()})
    assert status == 200 and predicted["predictions"] == [0, 1, 2, 2]


def test_a_chain_goes_with_its_service_and_a_spec_without_it_drops_it(
    mesh_node: mesh_fixtures.NodeThread, folders: dict[str, Any]
) -> None:
    d = folders["d"]
    chained = isvc("iris-short-lived", d / "scaled", transformer=d / "transformer")
    assert chained.transformer is not None
    step_id = chained.transformer.model_id
    table = mesh_node.node.table
    with mesh_node.client() as mesh:
        mesh.apply(chained)
        assert table.model(step_id) is not None
        assert transformer_of(mesh_node, "iris-short-lived") == step_id
        mesh.apply(isvc("iris-short-lived", d / "scaled"))  # the transformer removed
        mesh_fixtures.wait_for(lambda: table.model(step_id) is None, what="the step deleted")
        assert transformer_of(mesh_node, "iris-short-lived") == ""
        mesh.apply(chained)
        mesh.delete("iris-short-lived", chained.owner)
        mesh_fixtures.wait_for(lambda: table.model(step_id) is None, what="the step deleted")
        assert table.model(chained.model_id) is None


def transformer_of(node: mesh_fixtures.NodeThread, name: str) -> str:
    vmodel = node.node.table.vmodel(name)
    assert vmodel is not None, f"{name} is not in the node's mirror"
    return vmodel.transformer
