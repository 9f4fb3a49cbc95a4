"""A real MLServer model whose load and answers wait for the test.

Why it exists: the cache's promises about time (a load past its timeout, a
model pinned while it loads or serves, a node draining with requests in
flight) can only be checked against a real runtime if the test decides when
a load or a request ends. :func:`write_gated_model` writes a model folder a
user could write: a custom MLServer class (``gated_model.GatedModel``) and
its ``model-settings.json``. The class

* answers the row sums of its input (``predict``), so a caller can check
  the answer;
* waits in ``load()`` until the load gate file exists (if it has one), and
  drops a mark file when the load starts, ends, or is cancelled;
* holds a request whose first input value is :data:`HOLD` until the predict
  gate file exists, dropping a mark file when it starts waiting; other
  requests answer at once.

The test opens a gate by creating its file (:meth:`GatedModel.open_load`,
:meth:`GatedModel.open_predict`) and waits on marks
(:meth:`GatedModel.wait_marks`), never on the clock. Gates and marks live
outside the model folder, so they work on the copy the node pulls.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

import numpy as np
import numpy.typing as npt

from tests.integration import mesh_fixtures

HOLD = 1.0
"""A request whose first input value is this waits for the predict gate."""

MODULE_SOURCE = '''\
"""A model for meshserve's tests: its load and held requests wait for files."""

import asyncio
import pathlib
import uuid

from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse

HOLD = {hold!r}


async def _wait_for(gate):
    if gate:
        path = pathlib.Path(gate)
        while not path.exists():
            await asyncio.sleep(0.01)


class GatedModel(MLModel):
    def _mark(self, what):
        marks = pathlib.Path(self.settings.parameters.extra["marks"])
        (marks / f"{{what}}-{{uuid.uuid4().hex}}").touch()

    async def load(self):
        self._mark("load-started")
        try:
            await _wait_for(self.settings.parameters.extra.get("load_gate"))
        except asyncio.CancelledError:
            self._mark("load-cancelled")
            raise
        self._mark("loaded")
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0])
        if x.size and float(x.flat[0]) == HOLD:
            self._mark("held")
            await _wait_for(self.settings.parameters.extra.get("predict_gate"))
        out = NumpyCodec.encode_output("predict", x.sum(axis=-1).astype("float64"))
        return InferenceResponse(model_name=self.name, outputs=[out])
'''


@dataclasses.dataclass(frozen=True)
class GatedModel:
    """A gated model's folder (register it as type ``sklearn``) and its gates."""

    folder: pathlib.Path
    """The model folder: ``gated_model.py`` and ``model-settings.json``."""
    marks: pathlib.Path
    """Where the model drops its mark files."""
    load_gate: pathlib.Path | None
    """Created by :meth:`open_load`; ``None``: loads at once."""
    predict_gate: pathlib.Path
    """Created by :meth:`open_predict`."""

    def open_load(self) -> None:
        assert self.load_gate is not None, "this model's load has no gate"
        self.load_gate.touch()

    def open_predict(self) -> None:
        self.predict_gate.touch()

    def count(self, mark: str) -> int:
        """How many times the model dropped ``mark`` (``load-started``,
        ``loaded``, ``load-cancelled``, ``held``)."""
        return sum(1 for p in self.marks.iterdir() if p.name.startswith(f"{mark}-"))

    def wait_marks(self, mark: str, n: int = 1, timeout: float = 30) -> None:
        """Wait until the model has dropped ``mark`` at least ``n`` times."""
        mesh_fixtures.wait_for(
            lambda: self.count(mark) >= n, timeout, f"{n} x {mark!r} from {self.folder.name}"
        )


def write_gated_model(root: pathlib.Path, name: str, *, gate_load: bool = False) -> GatedModel:
    """A gated model under ``root/name`` (the folder, its marks and gates)."""
    base = root / name
    folder, marks = base / "model", base / "marks"
    folder.mkdir(parents=True)
    marks.mkdir()
    load_gate = base / "load-gate" if gate_load else None
    predict_gate = base / "predict-gate"
    (folder / "gated_model.py").write_text(MODULE_SOURCE.format(hold=HOLD))
    extra = {"marks": str(marks), "predict_gate": str(predict_gate)}
    if load_gate is not None:
        extra["load_gate"] = str(load_gate)
    settings = {
        "name": name,
        "implementation": "gated_model.GatedModel",
        "parameters": {"extra": extra},
    }
    (folder / "model-settings.json").write_text(json.dumps(settings))
    return GatedModel(folder, marks, load_gate, predict_gate)


def held_input() -> npt.NDArray[np.float64]:
    """An input the model holds until its predict gate opens (answer: 3)."""
    return np.array([[HOLD, 2.0]])


def free_input() -> npt.NDArray[np.float64]:
    """An input the model answers at once (answer: 2)."""
    return np.array([[0.0, 2.0]])
