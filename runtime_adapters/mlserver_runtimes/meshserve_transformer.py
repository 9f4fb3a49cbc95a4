"""A transformer: the user's Python class, run by MLServer around a predictor.

KServe runs a transformer as a service of its own that calls the predictor
over the network. The mesh runs it as a model: its folder holds a Python
file (``transformer.py``, or the one ``.py`` file, or ``parameters.uri``)
defining a class with ``preprocess`` and/or ``postprocess``, and the mesh
calls this model twice per request of the vmodel it fronts (``router/
chains.py``), telling it the step in the request parameter
``meshserve_stage``:

- ``preprocess(request: InferenceRequest) -> InferenceRequest``: the
  client's request in, the predictor's request out;
- ``postprocess(response: InferenceResponse) -> InferenceResponse``: the
  predictor's answer in, the client's answer out.

The types are MLServer's (``mlserver.types``; ``mlserver.codecs`` turns
tensors into numpy arrays and back). Either method may be ``async``, may
return a dict of the same shape, and may be left out (the step passes its
input through). The class is built with no arguments; a ``load()`` method,
if it has one, runs once (sync or async). ``parameters.extra.class`` names
the class when the file defines several.

A ``ValueError``, ``TypeError``, ``KeyError`` or ``IndexError`` raised by
the user's code is the request's fault (400 / INVALID_ARGUMENT); any other
exception is the transformer's (500 / INTERNAL). Runs inside MLServer's venv.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import pathlib
import sys
from typing import Any

from mlserver import types
from mlserver.errors import InferenceError, MLServerError
from mlserver.model import MLModel
from mlserver.utils import get_model_uri

WELL_KNOWN_FILES = ["transformer.py", "model.py"]
STAGE_PARAMETER = "meshserve_stage"
STAGES = ("preprocess", "postprocess")
CLIENT_ERRORS = (ValueError, TypeError, KeyError, IndexError)
"""Exceptions of the user's code that mean the request does not fit."""


def _import_file(path: str) -> Any:
    """The module in the file at ``path``, under a name of its own."""
    digest = hashlib.sha1(path.encode()).hexdigest()[:12]
    name = f"meshserve_user_transformer_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise MLServerError(f"cannot import the transformer file {path}", 500)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _transformer_class(module: Any, wanted: str | None, path: str) -> type:
    """The class of ``module`` with ``preprocess`` or ``postprocess``
    (``wanted`` by name when given)."""
    found = [
        obj
        for name, obj in vars(module).items()
        if inspect.isclass(obj)
        and obj.__module__ == module.__name__
        and any(callable(getattr(obj, s, None)) for s in STAGES)
        and (wanted is None or name == wanted)
    ]
    if len(found) == 1:
        return found[0]
    what = f"a class named {wanted!r}" if wanted else "one class"
    names = ", ".join(c.__name__ for c in found) or "none"
    raise MLServerError(
        f"{pathlib.Path(path).name} must define {what} with preprocess and/or postprocess "
        f"(found: {names}); name one with parameters.extra.class",
        500,
    )


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def _as_outputs(inputs: list[types.RequestInput]) -> list[types.ResponseOutput]:
    return [types.ResponseOutput(**t.model_dump(exclude_none=True)) for t in inputs]


def _without_stage(parameters: types.Parameters | None) -> types.Parameters | None:
    if parameters is None:
        return None
    kept = parameters.model_dump(exclude_none=True)
    kept.pop(STAGE_PARAMETER, None)
    return types.Parameters(**kept) if kept else None


class TransformerModel(MLModel):  # type: ignore[misc]
    """The user's transformer class, one step per call."""

    async def load(self) -> bool:
        uri = await get_model_uri(self._settings, wellknown_filenames=WELL_KNOWN_FILES)
        extra = dict(self._settings.parameters.extra or {}) if self._settings.parameters else {}
        module = _import_file(uri)
        self._user = _transformer_class(module, extra.get("class"), uri)()
        if callable(getattr(self._user, "load", None)):
            await _maybe_await(self._user.load())
        return True

    async def predict(self, payload: types.InferenceRequest) -> types.InferenceResponse:
        stage = getattr(payload.parameters, STAGE_PARAMETER, None) if payload.parameters else None
        if stage not in STAGES:
            raise InferenceError(
                f"transformer {self.name!r} runs inside a chain: call the vmodel it fronts, "
                f"not the transformer (request parameter {STAGE_PARAMETER} is {stage!r})"
            )
        parameters = _without_stage(payload.parameters)
        if stage == "preprocess":
            request = payload.model_copy(update={"parameters": parameters})
            out = await self._call("preprocess", request, types.InferenceRequest)
            return types.InferenceResponse(
                model_name=self.name,
                id=out.id or payload.id,
                parameters=out.parameters,
                outputs=_as_outputs(out.inputs),
            )
        response = types.InferenceResponse(
            model_name=self.name,
            id=payload.id,
            parameters=parameters,
            outputs=_as_outputs(payload.inputs),
        )
        answer = await self._call("postprocess", response, types.InferenceResponse)
        return answer.model_copy(update={"model_name": self.name, "model_version": None})

    async def _call(self, stage: str, value: Any, kind: type[Any]) -> Any:
        """The user's ``stage`` method on ``value`` (``value`` itself when
        the class has none), as a ``kind``."""
        method = getattr(self._user, stage, None)
        if not callable(method):
            return value
        try:
            out = await _maybe_await(method(value))
            return out if isinstance(out, kind) else kind.model_validate(out)
        except CLIENT_ERRORS as e:
            raise InferenceError(f"{stage} raised {type(e).__name__}: {e}") from e
        except MLServerError:
            raise
        except Exception as e:
            raise MLServerError(f"{stage} raised {type(e).__name__}: {e}", 500) from e
