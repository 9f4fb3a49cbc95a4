"""Structured logs: the model id on every line about a model, text or JSON.

With thousands of models on a node, "why did model X fail" is answered by
filtering the log on X. A line carries the model in one of two ways:

- code that handles one model runs inside :func:`about_model` (the data
  plane does for every routed call and stream, the gRPC edge for every
  management call naming a model): every line logged meanwhile, from any
  module, and from tasks started meanwhile (a load started by a request),
  carries it, through a context variable;
- a line may name it itself: ``log.info(..., extra={"model_id": m})``, or
  through :func:`for_model`, which wins over the context.

:class:`ModelIdFilter`, on the handler, puts the id on each record as
``record.model_id`` (``None`` when the line is about no model). The text
format shows it as ``model=<id>`` after the logger's name; the JSON format
(``MESHSERVE_LOG_FORMAT=json``, one object a line) as a ``model_id`` field,
for log pipelines that index fields.

Pure: standard library only.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import json
import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

FORMATS = ("text", "json")
"""Values of ``MESHSERVE_LOG_FORMAT``."""

current_model: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "meshserve_model_id", default=None
)
"""The model the running code is about, if any."""


class about_model:  # used as a function: ``with about_model(m):``
    """Lines logged inside the block (and by tasks it starts) name ``model_id``.

    A class, not a generator-based context manager: every routed request
    enters one, and this costs a third as much."""

    __slots__ = ("_model_id", "_token")

    def __init__(self, model_id: str) -> None:
        self._model_id = model_id

    def __enter__(self) -> None:
        self._token = current_model.set(self._model_id)

    def __exit__(self, *exc_info: object) -> None:
        with contextlib.suppress(ValueError):  # reset from another context: leave it
            current_model.reset(self._token)


class _ModelAdapter(logging.LoggerAdapter[logging.Logger]):
    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**(self.extra or {}), **kwargs.get("extra", {})}
        return msg, kwargs


def for_model(logger: logging.Logger, model_id: str) -> logging.LoggerAdapter[logging.Logger]:
    """``logger``, with every line naming ``model_id``."""
    return _ModelAdapter(logger, {"model_id": model_id})


class ModelIdFilter(logging.Filter):
    """Sets ``record.model_id`` (an ``extra`` given by the line wins over the
    context) and ``record.instance_id``; never drops a record."""

    def __init__(self, instance_id: str = "") -> None:
        super().__init__()
        self.instance_id = instance_id

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "model_id", None) is None:
            record.model_id = current_model.get()
        if self.instance_id and not getattr(record, "instance_id", None):
            record.instance_id = self.instance_id
        return True


class TextFormatter(logging.Formatter):
    """``time LEVEL logger model=<id>: message``; ``model=`` only on lines about a model."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(model_part)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        model = getattr(record, "model_id", None)
        record.model_part = f" model={model}" if model else ""
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``time`` (UTC, ISO 8601), ``level``, ``logger``,
    ``message``, and ``model_id``, ``instance_id``, ``exception`` when there
    are any."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("model_id", "instance_id"):
            value = getattr(record, key, None)
            if value:
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def parse_format(text: str | None) -> str:
    """A ``MESHSERVE_LOG_FORMAT`` value, checked (``text`` when unset)."""
    value = (text or "text").strip().lower()
    if value not in FORMATS:
        # Not a MeshError: logging is set up before anything else runs.
        raise ValueError(f"MESHSERVE_LOG_FORMAT: {text!r} is not one of {', '.join(FORMATS)}")
    return value


def handler(fmt: str, stream: TextIO | None = None, instance_id: str = "") -> logging.Handler:
    """A stream handler with the model filter and the chosen format."""
    h = logging.StreamHandler(stream or sys.stderr)
    h.addFilter(ModelIdFilter(instance_id))
    h.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    return h


def configure(level: str, fmt: str, stream: TextIO | None = None, instance_id: str = "") -> None:
    """Send the root logger's lines to ``stream`` (stderr) in format ``fmt``,
    replacing handlers set before."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler(fmt, stream, instance_id))
    root.setLevel(level.upper())
