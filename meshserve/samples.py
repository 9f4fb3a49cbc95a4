"""Small, real models for the demo and the tests.

The mesh serves real model files; a demo or a test needs a few that load in a
real runtime and whose right answers are known. Each function here trains one
small model with a fixed seed, saves it the way a user would (``joblib`` for
scikit-learn, ``model.json`` for xgboost, ``model.bst`` for LightGBM,
``model.onnx``) into a folder, and returns a
:class:`Sample`: the folder, the model type, an input batch and the
predictions the training library itself gives for it, so a caller can check
what came back through the mesh.

xgboost, LightGBM, onnx and onnxruntime are not installed in the project's
environment, only in the MLServer runtime's, so :func:`train_xgboost_in`,
:func:`train_lightgbm_in` and :func:`build_onnx_in` run in that interpreter
through a subprocess and read the batch and predictions back as JSON.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import subprocess
import textwrap

import joblib
import numpy as np
import numpy.typing as npt
from sklearn import datasets, ensemble, linear_model

SEED = 7
"""Seed of every training run here, so the same call gives the same model."""

BATCH_ROWS = 5
"""Rows in each sample's input batch."""


@dataclasses.dataclass(frozen=True)
class Sample:
    """A trained model on disk and a batch whose right answers are known."""

    folder: pathlib.Path
    """Folder holding the model's file(s), ready to be a model's folder."""
    model_type: str
    """The model format the runtime needs (``sklearn``, ``xgboost``,
    ``lightgbm``, ``onnx``)."""
    inputs: npt.NDArray[np.float64]
    """An input batch, ``BATCH_ROWS`` rows by ``features``, float64."""
    expected: npt.NDArray[np.generic]
    """What the training library's own ``predict`` gives for ``inputs``."""

    @property
    def model_file(self) -> pathlib.Path:
        """The single model file in :attr:`folder`."""
        (only,) = (p for p in self.folder.iterdir() if p.is_file())
        return only


def _save_sklearn(model: object, folder: pathlib.Path, inputs: npt.NDArray[np.float64]) -> Sample:
    folder.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, folder / "model.joblib")
    expected = np.asarray(model.predict(inputs))  # type: ignore[attr-defined]
    return Sample(folder=folder, model_type="sklearn", inputs=inputs, expected=expected)


def _batch(features: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Every n-th row, so the batch spans the classes of a sorted data set."""
    step = max(1, len(features) // BATCH_ROWS)
    return np.ascontiguousarray(features[::step][:BATCH_ROWS], dtype=np.float64)


def train_iris_logistic(folder: pathlib.Path) -> Sample:
    """Logistic regression on iris (4 features, 3 classes; a ~1 KB file)."""
    x, y = datasets.load_iris(return_X_y=True)
    model = linear_model.LogisticRegression(max_iter=500, random_state=SEED).fit(x, y)
    return _save_sklearn(model, folder, _batch(x))


def train_wine_forest(folder: pathlib.Path, trees: int = 50) -> Sample:
    """Random forest on wine (13 features, 3 classes; ~100 KB with 50 trees).

    ``trees`` scales the file, for tests that need a bigger model."""
    x, y = datasets.load_wine(return_X_y=True)
    model = ensemble.RandomForestClassifier(n_estimators=trees, random_state=SEED).fit(x, y)
    return _save_sklearn(model, folder, _batch(x))


def train_diabetes_ridge(folder: pathlib.Path) -> Sample:
    """Ridge regression on diabetes (10 features, float predictions)."""
    x, y = datasets.load_diabetes(return_X_y=True)
    model = linear_model.Ridge(alpha=0.5, random_state=SEED).fit(x, y)
    return _save_sklearn(model, folder, _batch(x))


def write_corrupt_model(folder: pathlib.Path) -> pathlib.Path:
    """A ``model.joblib`` that is not a joblib file, for load-failure tests."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.joblib"
    path.write_bytes(b"this is not a joblib pickle\x00\x01\x02" * 4)
    return path


_XGBOOST_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import xgboost as xgb
    from sklearn import datasets

    folder, rows, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    x, y = datasets.load_iris(return_X_y=True)
    model = xgb.XGBClassifier(
        n_estimators=20, max_depth=3, random_state=seed, n_jobs=1
    ).fit(x, y)
    model.save_model(folder + "/model.json")
    step = max(1, len(x) // rows)
    batch = np.ascontiguousarray(x[::step][:rows], dtype=np.float64)
    json.dump(
        {"inputs": batch.tolist(), "expected": model.predict(batch).tolist()},
        sys.stdout,
    )
    """
)

_LIGHTGBM_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import lightgbm as lgb
    import numpy as np
    from sklearn import datasets

    folder, rows, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    x, y = datasets.load_iris(return_X_y=True)
    params = {"objective": "multiclass", "num_class": 3, "num_leaves": 7,
              "seed": seed, "num_threads": 1, "verbose": -1}
    trained = lgb.train(params, lgb.Dataset(x, label=y), num_boost_round=10)
    trained.save_model(folder + "/model.bst")  # text, as ModelMesh's examples
    step = max(1, len(x) // rows)
    batch = np.ascontiguousarray(x[::step][:rows], dtype=np.float64)
    booster = lgb.Booster(model_file=folder + "/model.bst")
    json.dump(
        {"inputs": batch.tolist(), "expected": booster.predict(batch).tolist()},
        sys.stdout,
    )
    """
)

_ONNX_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import onnx
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    folder, rows, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.normal(size=(4, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.normal(size=3).astype(np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["xw"]),
         helper.make_node("Add", ["xw", "b"], ["scores"]),
         helper.make_node("ArgMax", ["scores"], ["label"], axis=1, keepdims=0)],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 3]),
         helper.make_tensor_value_info("label", TensorProto.INT64, ["N"])],
        [w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, folder + "/model.onnx")
    batch = rng.normal(size=(rows, 4)).astype(np.float32)
    session = onnxruntime.InferenceSession(folder + "/model.onnx")
    (scores,) = session.run(["scores"], {"x": batch})
    json.dump({"inputs": batch.tolist(), "expected": scores.tolist()}, sys.stdout)
    """
)

_SCRIPTS = {"xgboost": _XGBOOST_SCRIPT, "lightgbm": _LIGHTGBM_SCRIPT, "onnx": _ONNX_SCRIPT}


def _train_in(venv_python: pathlib.Path, folder: pathlib.Path, model_type: str) -> Sample:
    """Run the training script of ``model_type`` in ``venv_python`` and read
    back the batch and the library's own answers."""
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [str(venv_python), "-c", _SCRIPTS[model_type], str(folder), str(BATCH_ROWS), str(SEED)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"training the {model_type} sample with {venv_python} failed "
            f"({done.returncode}):\n{done.stderr[-2000:]}"
        )
    answer = json.loads(done.stdout)
    return Sample(
        folder=folder,
        model_type=model_type,
        inputs=np.asarray(answer["inputs"], dtype=np.float64),
        expected=np.asarray(answer["expected"]),
    )


def train_xgboost_in(venv_python: pathlib.Path, folder: pathlib.Path) -> Sample:
    """An xgboost classifier on iris, trained by ``venv_python`` (an
    interpreter that has xgboost, e.g. ``.runtimes/mlserver/bin/python``) and
    saved as ``model.json``. Raises :class:`RuntimeError` with the script's
    error output if training fails."""
    return _train_in(venv_python, folder, "xgboost")


def train_lightgbm_in(venv_python: pathlib.Path, folder: pathlib.Path) -> Sample:
    """A LightGBM multiclass booster on iris (10 rounds), trained by
    ``venv_python`` and saved with ``Booster.save_model`` (text) as
    ``model.bst``; ``expected`` is the reloaded booster's class
    probabilities, one row of 3 per input row."""
    return _train_in(venv_python, folder, "lightgbm")


def build_onnx_in(venv_python: pathlib.Path, folder: pathlib.Path) -> Sample:
    """A random linear ONNX model built with ``onnx.helper`` by ``venv_python`` (an
    interpreter with onnx and onnxruntime) as ``model.onnx``: input ``x``
    (FP32, N x 4), outputs ``scores`` (FP32, N x 3, = x @ w + b) and
    ``label`` (INT64, N: argmax of scores). ``inputs`` hold float32 values
    (send them as FP32); ``expected`` is onnxruntime's ``scores``."""
    return _train_in(venv_python, folder, "onnx")
