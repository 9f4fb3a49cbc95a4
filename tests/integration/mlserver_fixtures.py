"""A real MLServer for the tests, and real models to put in it.

``mlserver_runtime`` starts one MLServer per test session (it takes 1-2 s to
start, so tests share it) through :class:`runtime_adapters.mlserver.MLServerAdapter`
on free ports, with its model repository in a temporary folder, and stops it
at the end. The fixture is synchronous: it drives the adapter's ``start`` and
``stop`` in event loops of their own, and the adapter opens its gRPC channel
in whichever loop calls it, so async tests of any loop scope can use it.

Tests that share the runtime must use model ids of their own:
``place_model(sample)`` copies a sample into the repository under a fresh id.
"""

from __future__ import annotations

import asyncio
import itertools
import pathlib
import shutil
from collections.abc import Iterator

import pytest

from meshserve import samples
from runtime_adapters import mlserver

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
MLSERVER_VENV = REPO_ROOT / ".runtimes" / "mlserver"

_ids = itertools.count(1)


@pytest.fixture(scope="session")
def mlserver_venv() -> pathlib.Path:
    """MLServer's virtual environment; fails (never skips) if it is missing."""
    if not (MLSERVER_VENV / "bin" / "mlserver").is_file():
        pytest.fail(
            f"MLServer is not installed in {MLSERVER_VENV}: run `make install` "
            "(it creates the runtime venvs) and run the tests again",
            pytrace=False,
        )
    return MLSERVER_VENV


@pytest.fixture(scope="session")
def mlserver_runtime(
    mlserver_venv: pathlib.Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[mlserver.MLServerAdapter]:
    """A started :class:`MLServerAdapter` running its own MLServer, shared by
    the session; its repository is ``adapter.config.model_dir``."""
    model_dir = tmp_path_factory.mktemp("mlserver") / "models"
    adapter = mlserver.MLServerAdapter(
        mlserver.MLServerConfig(model_dir=model_dir, venv=mlserver_venv)
    )
    asyncio.run(adapter.start())
    try:
        yield adapter
    finally:
        asyncio.run(adapter.stop())


class ModelPlacer:
    """Copies a sample's folder into a runtime's repository under a new id."""

    def __init__(self, model_dir: pathlib.Path) -> None:
        self.model_dir = model_dir

    def __call__(
        self, sample: samples.Sample, model_id: str | None = None
    ) -> tuple[str, pathlib.Path]:
        """``(model_id, folder)``: the folder is ``<model_dir>/<model_id>``."""
        model_id = model_id or f"{sample.model_type}-{sample.folder.name}-{next(_ids)}"
        folder = self.model_dir / model_id
        shutil.copytree(sample.folder, folder)
        return model_id, folder


@pytest.fixture
def place_model(mlserver_runtime: mlserver.MLServerAdapter) -> ModelPlacer:
    """``place_model(sample, model_id=None) -> (model_id, folder)`` into the
    shared runtime's repository."""
    return ModelPlacer(mlserver_runtime.config.model_dir)


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """Where the session's sample models are trained (outside any repository)."""
    return tmp_path_factory.mktemp("samples")


@pytest.fixture(scope="session")
def iris_sample(sample_dir: pathlib.Path) -> samples.Sample:
    """scikit-learn logistic regression on iris (``model.joblib``, ~1 KB)."""
    return samples.train_iris_logistic(sample_dir / "iris")


@pytest.fixture(scope="session")
def wine_sample(sample_dir: pathlib.Path) -> samples.Sample:
    """scikit-learn random forest on wine (``model.joblib``, ~120 KB)."""
    return samples.train_wine_forest(sample_dir / "wine")


@pytest.fixture(scope="session")
def diabetes_sample(sample_dir: pathlib.Path) -> samples.Sample:
    """scikit-learn ridge regression on diabetes (float predictions)."""
    return samples.train_diabetes_ridge(sample_dir / "diabetes")


@pytest.fixture(scope="session")
def xgboost_sample(sample_dir: pathlib.Path, mlserver_venv: pathlib.Path) -> samples.Sample:
    """xgboost classifier on iris (``model.json``), trained in MLServer's venv."""
    return samples.train_xgboost_in(mlserver_venv / "bin" / "python", sample_dir / "xgboost")


@pytest.fixture(scope="session")
def lightgbm_sample(sample_dir: pathlib.Path, mlserver_venv: pathlib.Path) -> samples.Sample:
    """LightGBM booster on iris (``model.bst``, text), trained in MLServer's venv."""
    return samples.train_lightgbm_in(mlserver_venv / "bin" / "python", sample_dir / "lightgbm")


@pytest.fixture(scope="session")
def onnx_sample(sample_dir: pathlib.Path, mlserver_venv: pathlib.Path) -> samples.Sample:
    """A linear ONNX model (``model.onnx``), built and run in MLServer's venv."""
    return samples.build_onnx_in(mlserver_venv / "bin" / "python", sample_dir / "onnx")


@pytest.fixture(scope="session")
def corrupt_sample(sample_dir: pathlib.Path, iris_sample: samples.Sample) -> samples.Sample:
    """A folder whose ``model.joblib`` is not a joblib file (iris's batch)."""
    folder = sample_dir / "corrupt"
    samples.write_corrupt_model(folder)
    return samples.Sample(
        folder=folder,
        model_type="sklearn",
        inputs=iris_sample.inputs,
        expected=iris_sample.expected,
    )
