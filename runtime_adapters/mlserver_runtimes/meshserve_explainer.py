"""A SHAP explainer served by MLServer, calling its predictor through the mesh.

MLServer's own explainer runtime (``mlserver-alibi-explain`` 1.6.1) needs
alibi with TensorFlow and an alibi that wants numpy < 2 and pandas < 3, so it
cannot share the MLServer venv the mesh runs; SHAP (``shap``,
KernelExplainer) installs beside it. This
class explains any predictor the mesh serves, whatever its runtime, by
calling it: the mesh sends an explain call here with the request parameter
``meshserve_predictor`` naming the concrete predictor model, and each batch
SHAP asks to evaluate goes to ``<mesh>/v2/models/<predictor>/infer`` (V2
REST, JSON) on the node beside this runtime, which routes it as any call.

The model folder holds the background data (``background.npy``, or a
``.npy`` / ``.csv`` file: rows of features, no header) and optionally
``explainer.json``: ``output`` (the predictor output to explain, e.g.
``predict_proba``; default its first), ``link`` (``identity`` or
``logit``), ``nsamples`` (``auto`` or a number) and ``seed``.

The answer has two outputs: ``shap_values`` (FP64, ``[rows, features]``,
or ``[rows, features, outputs]`` for a predictor with several outputs per
row) and ``expected_value`` (FP64, ``[outputs]``). SHAP runs in a thread, so
this MLServer keeps serving (the predictor may live in the same process).
The mesh's address is ``MESHSERVE_MESH_URL`` (set by the node that starts
this MLServer; default ``http://127.0.0.1:8008``).
"""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import numpy as np
import shap
from mlserver import types
from mlserver.codecs import NumpyCodec
from mlserver.errors import InferenceError, MLServerError
from mlserver.model import MLModel
from mlserver.utils import get_model_uri

WELL_KNOWN_FILES = ["background.npy", "background.csv"]
SETTINGS_FILE = "explainer.json"
PREDICTOR_PARAMETER = "meshserve_predictor"
MESH_URL_ENV = "MESHSERVE_MESH_URL"
DEFAULT_MESH_URL = "http://127.0.0.1:8008"
CALL_TIMEOUT_SECONDS = 120.0


def _background(path: str) -> np.ndarray[Any, Any]:
    data = np.load(path) if path.endswith(".npy") else np.loadtxt(path, delimiter=",", ndmin=2)
    if data.ndim != 2:
        raise MLServerError(f"the background data must be rows of features, not {data.shape}", 500)
    return np.asarray(data, dtype=np.float64)


def _settings(folder: pathlib.Path) -> dict[str, Any]:
    path = folder / SETTINGS_FILE
    if not path.is_file():
        return {}
    doc = json.loads(path.read_text())
    if not isinstance(doc, dict):
        raise MLServerError(f"{SETTINGS_FILE} must be a JSON object", 500)
    return doc


def _output(name: str, values: np.ndarray[Any, Any]) -> types.ResponseOutput:
    """An FP64 output of exactly the array's shape (MLServer's NumpyCodec
    would make a vector a column)."""
    return types.ResponseOutput(
        name=name, datatype="FP64", shape=list(values.shape), data=values.ravel().tolist()
    )


class MeshPredictor:
    """The predictor as SHAP calls it: rows of features in, one array out,
    each call a V2 REST inference through the mesh."""

    def __init__(self, base_url: str, model: str, input_name: str, output: str | None) -> None:
        quoted = urllib.parse.quote(model, safe="")
        self.url = f"{base_url.rstrip('/')}/v2/models/{quoted}/infer"
        self.input_name = input_name
        self.output = output

    def __call__(self, rows: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        rows = np.asarray(rows, dtype=np.float64)
        body: dict[str, Any] = {
            "inputs": [
                {
                    "name": self.input_name,
                    "datatype": "FP64",
                    "shape": list(rows.shape),
                    "data": rows.ravel().tolist(),
                }
            ]
        }
        if self.output:
            body["outputs"] = [{"name": self.output}]
        request = urllib.request.Request(
            self.url, json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=CALL_TIMEOUT_SECONDS) as answer:
                doc = json.loads(answer.read())
        except urllib.error.HTTPError as e:
            detail = e.read().decode("utf-8", "replace")
            raise MLServerError(f"the predictor answered {e.code}: {detail}", e.code) from e
        except urllib.error.URLError as e:
            raise MLServerError(f"cannot reach the mesh at {self.url}: {e.reason}", 503) from e
        out = doc["outputs"][0]
        return np.asarray(out["data"], dtype=np.float64).reshape(out["shape"])


class KernelShapExplainer(MLModel):  # type: ignore[misc]
    """SHAP's KernelExplainer over a predictor reached through the mesh."""

    async def load(self) -> bool:
        uri = await get_model_uri(self._settings, wellknown_filenames=WELL_KNOWN_FILES)
        self._data = _background(uri)
        self._options = _settings(pathlib.Path(uri).parent)
        self._mesh_url = os.environ.get(MESH_URL_ENV) or DEFAULT_MESH_URL
        return True

    async def predict(self, payload: types.InferenceRequest) -> types.InferenceResponse:
        params = payload.parameters
        model = getattr(params, PREDICTOR_PARAMETER, None) if params else None
        if not model:
            raise InferenceError(
                f"explainer {self.name!r} answers explain calls of the vmodel it belongs to "
                f"(request parameter {PREDICTOR_PARAMETER} is missing)"
            )
        if len(payload.inputs) != 1:
            raise InferenceError("an explain call takes one input: rows of features")
        given = payload.inputs[0]
        rows = np.asarray(NumpyCodec.decode_input(given), dtype=np.float64)
        if rows.ndim == 1:
            rows = rows.reshape(1, -1)
        if rows.ndim != 2 or rows.shape[1] != self._data.shape[1]:
            raise InferenceError(
                f"input {given.name!r} must be rows of {self._data.shape[1]} features "
                f"(the background data's), not shape {list(rows.shape)}"
            )
        predictor = MeshPredictor(self._mesh_url, model, given.name, self._options.get("output"))
        values, expected = await asyncio.to_thread(self._explain, predictor, rows)
        return types.InferenceResponse(
            model_name=self.name,
            id=payload.id,
            outputs=[_output("shap_values", values), _output("expected_value", expected)],
        )

    def _explain(
        self, predictor: MeshPredictor, rows: np.ndarray[Any, Any]
    ) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        """SHAP values of ``rows`` (same seed, same answer)."""
        np.random.seed(int(self._options.get("seed", 0)))
        explainer = shap.KernelExplainer(
            predictor, self._data, link=self._options.get("link", "identity")
        )
        values = explainer.shap_values(
            rows, nsamples=self._options.get("nsamples", "auto"), silent=True
        )
        if isinstance(values, list):  # older SHAP: one array per output
            values = np.stack(values, axis=-1)
        expected = np.atleast_1d(np.asarray(explainer.expected_value, dtype=np.float64))
        return np.asarray(values, dtype=np.float64), expected
