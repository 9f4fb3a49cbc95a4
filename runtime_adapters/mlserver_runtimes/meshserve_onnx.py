"""ONNX models served by MLServer with onnxruntime (CPU).

MLServer has no ONNX runtime, and the Triton that ``make install`` builds
has no ONNX backend, so an MLServer the node starts serves ONNX with this
class (``"implementation": "meshserve_onnx.OnnxRuntimeModel"``, the file in
``parameters.uri``). It answers V2 inference as Triton's onnxruntime
backend does: inputs and outputs by the model's own names and datatypes,
shapes as the model gives them, and ModelMetadata lists them.

It runs inside MLServer's venv (``import mlserver`` cannot share the mesh's
process); the mesh only names it. ``parameters.extra`` may set
onnxruntime's ``intra_op_num_threads`` and ``inter_op_num_threads``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime
from mlserver import types
from mlserver.codecs import NumpyCodec
from mlserver.errors import InferenceError
from mlserver.model import MLModel
from mlserver.utils import get_model_uri

WELL_KNOWN_FILES = ["model.onnx"]

DATATYPES = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}
"""onnxruntime's type of a tensor → its V2 datatype."""

THREAD_OPTIONS = ("intra_op_num_threads", "inter_op_num_threads")
"""onnxruntime session options a model's ``parameters.extra`` may set."""


def _metadata(node: Any) -> types.MetadataTensor:
    """A V2 metadata tensor for an onnxruntime input or output (a symbolic
    or unknown dimension is -1)."""
    datatype = DATATYPES.get(node.type)
    if datatype is None:
        raise ValueError(f"{node.name!r} is a {node.type}, which V2 cannot carry (tensors only)")
    shape = [d if isinstance(d, int) else -1 for d in node.shape]
    return types.MetadataTensor(name=node.name, datatype=datatype, shape=shape)


def _session_options(extra: dict[str, Any]) -> onnxruntime.SessionOptions:
    options = onnxruntime.SessionOptions()
    for name in THREAD_OPTIONS:
        if name in extra:
            setattr(options, name, int(extra[name]))
    return options


class OnnxRuntimeModel(MLModel):  # type: ignore[misc]
    """An ONNX model in an onnxruntime CPU session."""

    async def load(self) -> bool:
        uri = await get_model_uri(self._settings, wellknown_filenames=WELL_KNOWN_FILES)
        extra = dict(self._settings.parameters.extra or {}) if self._settings.parameters else {}
        self._session = onnxruntime.InferenceSession(
            uri, _session_options(extra), providers=["CPUExecutionProvider"]
        )
        self._onnx_inputs = {m.name: m for m in map(_metadata, self._session.get_inputs())}
        self._onnx_outputs = {m.name: m for m in map(_metadata, self._session.get_outputs())}
        if not self._settings.inputs:  # ModelMetadata lists them
            self.inputs = list(self._onnx_inputs.values())
        if not self._settings.outputs:
            self.outputs = list(self._onnx_outputs.values())
        return True

    def _feed(self, request_input: types.RequestInput) -> np.ndarray[Any, Any]:
        """One request input as the array the model's input of that name takes."""
        wanted = self._onnx_inputs.get(request_input.name)
        if wanted is None:
            raise InferenceError(
                f"model {self.name!r} has no input {request_input.name!r} "
                f"(inputs: {', '.join(self._onnx_inputs)})"
            )
        got, needed = (types.Datatype(t).value for t in (request_input.datatype, wanted.datatype))
        if got != needed:
            raise InferenceError(
                f"input {request_input.name!r} of model {self.name!r} is {needed}, not {got}"
            )
        array: np.ndarray[Any, Any] = NumpyCodec.decode_input(request_input)
        if array.dtype.kind == "S":  # BYTES: onnxruntime takes strings
            array = np.char.decode(array, "utf-8").astype(object)
        return array

    def _output_names(self, payload: types.InferenceRequest) -> list[str]:
        names = [o.name for o in payload.outputs or []] or list(self._onnx_outputs)
        unknown = [n for n in names if n not in self._onnx_outputs]
        if unknown:
            raise InferenceError(
                f"model {self.name!r} has no output {unknown[0]!r} "
                f"(outputs: {', '.join(self._onnx_outputs)})"
            )
        return names

    async def predict(self, payload: types.InferenceRequest) -> types.InferenceResponse:
        feeds = {i.name: self._feed(i) for i in payload.inputs}
        missing = [n for n in self._onnx_inputs if n not in feeds]
        if missing:
            raise InferenceError(f"model {self.name!r} needs input {missing[0]!r}")
        names = self._output_names(payload)
        try:
            results = self._session.run(names, feeds)
        except onnxruntime.capi.onnxruntime_pybind11_state.InvalidArgument as e:
            raise InferenceError(f"model {self.name!r}: {e}") from e
        outputs = []
        for name, array in zip(names, results, strict=True):
            output = NumpyCodec.encode_output(name, np.asarray(array))
            output.shape = list(np.shape(array))  # as the model gives it: no batch dimension added
            outputs.append(output)
        return types.InferenceResponse(
            model_name=self.name, model_version=self.version, outputs=outputs
        )
