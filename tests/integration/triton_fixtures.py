"""A real Triton for the tests, and Python-backend models to put in it.

``triton_runtime`` starts one ``tritonserver`` per test session (the real
binary from the ``nvidia-pytriton`` wheel, set up in ``.runtimes/triton`` by
``make install``) through
:class:`runtime_adapters.triton.adapter.TritonAdapter`, on a free port, with
its model repository in a temporary folder, and stops it at the end. Triton
starts in ~1 s but stops in ~4 s once it has held a model, so tests share
it. Like the MLServer fixture it is synchronous: the adapter opens its gRPC
channel in whichever event loop calls it.

The sample models are Triton Python-backend models written here (a
``model.py``, with or without a ``config.pbtxt``):

- ``double``: ``OUTPUT0 = 2 * INPUT0`` (FP32, any length); comes with a
  config.pbtxt that names it ``double`` (the adapter renames it).
- ``add``: ``OUTPUT0 = INPUT0 + INPUT1`` (FP32); comes without a config.pbtxt,
  as ``adder.py``: it declares its tensors in ``auto_complete_config``.
- ``broken``: raises ``RuntimeError("this model is broken on purpose")`` in
  ``initialize``.
- ``ballast``: like ``double``, and holds N MiB of touched memory while loaded
  (``write_ballast_sample``).

Tests that share the runtime use model ids of their own:
``place_triton_model(sample)`` copies a sample into the repository under a
fresh id.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import pathlib
import shutil
import textwrap
from collections.abc import Iterator, Mapping

import numpy as np
import numpy.typing as npt
import pytest

from runtime_adapters.triton import adapter as triton_adapter

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
TRITON_VENV = REPO_ROOT / ".runtimes" / "triton"

_ids = itertools.count(1)

DOUBLE_MODEL = textwrap.dedent(
    """\
    import numpy as np
    import triton_python_backend_utils as pb_utils


    class TritonPythonModel:
        def execute(self, requests):
            responses = []
            for request in requests:
                x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
                out = pb_utils.Tensor("OUTPUT0", (x * 2).astype(np.float32))
                responses.append(pb_utils.InferenceResponse([out]))
            return responses
    """
)

DOUBLE_CONFIG = textwrap.dedent(
    """\
    # The user's own config: the mesh keeps it, but for the name.
    name: "double"
    backend: "python"
    max_batch_size: 0
    input [ { name: "INPUT0", data_type: TYPE_FP32, dims: [ -1 ] } ]
    output [ { name: "OUTPUT0", data_type: TYPE_FP32, dims: [ -1 ] } ]
    instance_group [ { kind: KIND_CPU, count: 1 } ]
    """
)

ADD_MODEL = textwrap.dedent(
    """\
    import numpy as np
    import triton_python_backend_utils as pb_utils


    class TritonPythonModel:
        @staticmethod
        def auto_complete_config(config):
            for name in ("INPUT0", "INPUT1"):
                config.add_input({"name": name, "data_type": "TYPE_FP32", "dims": [-1]})
            config.add_output({"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [-1]})
            config.set_max_batch_size(0)
            return config

        def execute(self, requests):
            responses = []
            for request in requests:
                a = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
                b = pb_utils.get_input_tensor_by_name(request, "INPUT1").as_numpy()
                out = pb_utils.Tensor("OUTPUT0", (a + b).astype(np.float32))
                responses.append(pb_utils.InferenceResponse([out]))
            return responses
    """
)

BROKEN_MESSAGE = "this model is broken on purpose"

BROKEN_MODEL = textwrap.dedent(
    f"""\
    class TritonPythonModel:
        def initialize(self, args):
            raise RuntimeError("{BROKEN_MESSAGE}")

        def execute(self, requests):
            return []
    """
)

BALLAST_MODEL = textwrap.dedent(
    """\
    import json

    import numpy as np
    import triton_python_backend_utils as pb_utils


    class TritonPythonModel:
        def initialize(self, args):
            parameters = json.loads(args["model_config"])["parameters"]
            mib = int(parameters["ballast_mib"]["string_value"])
            self.ballast = np.ones(mib * 1024 * 1024, dtype=np.uint8)  # touched: resident

        def execute(self, requests):
            responses = []
            for request in requests:
                x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
                out = pb_utils.Tensor("OUTPUT0", (x * 2).astype(np.float32))
                responses.append(pb_utils.InferenceResponse([out]))
            return responses
    """
)


@dataclasses.dataclass(frozen=True)
class TritonSample:
    """A model folder as a puller would leave it, and what it answers."""

    folder: pathlib.Path
    model_type: str
    inputs: Mapping[str, npt.NDArray[np.float32]]
    expected: Mapping[str, npt.NDArray[np.float32]]


_X = np.array([1.0, -2.5, 4.0], dtype=np.float32)
_Y = np.array([0.5, 2.5, -1.0], dtype=np.float32)


def _write(folder: pathlib.Path, files: Mapping[str, str]) -> pathlib.Path:
    folder.mkdir(parents=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def write_double_sample(folder: pathlib.Path) -> TritonSample:
    """``double``: ``model.py`` and a config.pbtxt named "double"."""
    _write(folder, {"model.py": DOUBLE_MODEL, "config.pbtxt": DOUBLE_CONFIG})
    return TritonSample(folder, "python", {"INPUT0": _X}, {"OUTPUT0": _X * 2})


def write_add_sample(folder: pathlib.Path) -> TritonSample:
    """``add``: ``adder.py`` alone (its config is generated)."""
    _write(folder, {"adder.py": ADD_MODEL})
    return TritonSample(folder, "python", {"INPUT0": _X, "INPUT1": _Y}, {"OUTPUT0": _X + _Y})


def write_broken_sample(folder: pathlib.Path) -> TritonSample:
    """``broken``: ``model.py`` that raises in ``initialize``."""
    _write(folder, {"model.py": BROKEN_MODEL})
    return TritonSample(folder, "python", {"INPUT0": _X}, {})


def write_ballast_sample(folder: pathlib.Path, mib: int) -> TritonSample:
    """``ballast``: doubles like ``double`` and holds ``mib`` MiB while loaded."""
    config = DOUBLE_CONFIG + (
        f'parameters {{ key: "ballast_mib", value: {{ string_value: "{mib}" }} }}\n'
    )
    _write(folder, {"model.py": BALLAST_MODEL, "config.pbtxt": config})
    return TritonSample(folder, "python", {"INPUT0": _X}, {"OUTPUT0": _X * 2})


@pytest.fixture(scope="session")
def triton_venv() -> pathlib.Path:
    """Triton's virtual environment; fails (never skips) if it is missing."""
    if not (TRITON_VENV / "tritonserver" / "bin" / "tritonserver").is_file():
        pytest.fail(
            f"Triton is not installed in {TRITON_VENV}: run `make install` "
            "(it creates the runtime venvs) and run the tests again",
            pytrace=False,
        )
    return TRITON_VENV


@pytest.fixture(scope="session")
def triton_runtime(
    triton_venv: pathlib.Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[triton_adapter.TritonAdapter]:
    """A started :class:`TritonAdapter` running its own Triton, shared by the
    session; its repository is ``adapter.config.model_dir``."""
    model_dir = tmp_path_factory.mktemp("triton") / "models"
    adapter = triton_adapter.TritonAdapter(
        triton_adapter.TritonConfig(model_dir=model_dir, venv=triton_venv)
    )
    asyncio.run(adapter.start())
    try:
        yield adapter
    finally:
        asyncio.run(adapter.stop())


class TritonPlacer:
    """Copies a sample's folder into a runtime's repository under a new id."""

    def __init__(self, model_dir: pathlib.Path) -> None:
        self.model_dir = model_dir

    def __call__(
        self, sample: TritonSample, model_id: str | None = None
    ) -> tuple[str, pathlib.Path]:
        """``(model_id, folder)``: the folder is ``<model_dir>/<model_id>``."""
        model_id = model_id or f"{sample.folder.name}-{next(_ids)}"
        folder = self.model_dir / model_id
        shutil.copytree(sample.folder, folder)
        return model_id, folder


@pytest.fixture
def place_triton_model(triton_runtime: triton_adapter.TritonAdapter) -> TritonPlacer:
    """``place_triton_model(sample, model_id=None) -> (model_id, folder)``
    into the shared runtime's repository."""
    return TritonPlacer(triton_runtime.config.model_dir)


@pytest.fixture(scope="session")
def triton_sample_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """Where the session's Triton samples are written (outside any repository)."""
    return tmp_path_factory.mktemp("triton-samples")


@pytest.fixture(scope="session")
def double_sample(triton_sample_dir: pathlib.Path) -> TritonSample:
    return write_double_sample(triton_sample_dir / "double")


@pytest.fixture(scope="session")
def add_sample(triton_sample_dir: pathlib.Path) -> TritonSample:
    return write_add_sample(triton_sample_dir / "add")


@pytest.fixture(scope="session")
def broken_sample(triton_sample_dir: pathlib.Path) -> TritonSample:
    return write_broken_sample(triton_sample_dir / "broken")
