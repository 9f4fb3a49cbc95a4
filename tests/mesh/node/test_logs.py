"""Log lines about a model carry its id, in text and in JSON."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from mesh.node import logs


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO, logging.Handler]]:
    out = io.StringIO()
    logger = logging.getLogger("meshserve.test.logs")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = logs.handler("json", out, instance_id="node-7")
    logger.addHandler(handler)
    try:
        yield logger, out, handler
    finally:
        logger.removeHandler(handler)
        logger.propagate = True


def _lines(out: io.StringIO) -> list[dict[str, str]]:
    return [json.loads(x) for x in out.getvalue().splitlines()]


def test_a_line_logged_while_serving_a_model_names_it_in_json(
    captured: tuple[logging.Logger, io.StringIO, logging.Handler],
) -> None:
    logger, out, _ = captured
    with logs.about_model("iris-1"):
        logger.info("loaded in %d ms", 12)
    logger.info("not about a model")
    first, second = _lines(out)
    assert first["model_id"] == "iris-1" and first["message"] == "loaded in 12 ms"
    assert first["level"] == "INFO" and first["instance_id"] == "node-7"
    assert first["time"].endswith("+00:00")
    assert "model_id" not in second


def test_a_line_that_names_its_model_wins_over_the_context(
    captured: tuple[logging.Logger, io.StringIO, logging.Handler],
) -> None:
    logger, out, _ = captured
    with logs.about_model("requested"):
        logs.for_model(logger, "victim").info("evicting")
        logger.info("also", extra={"model_id": "other"})
    assert [line["model_id"] for line in _lines(out)] == ["victim", "other"]


async def test_tasks_started_while_serving_a_model_keep_its_id(
    captured: tuple[logging.Logger, io.StringIO, logging.Handler],
) -> None:
    logger, out, _ = captured

    async def load() -> None:
        await asyncio.sleep(0)
        logger.info("load done")

    with logs.about_model("wine-2"):
        task = asyncio.create_task(load())
    await task
    assert _lines(out)[0]["model_id"] == "wine-2"


def test_an_exception_goes_into_the_json_line(
    captured: tuple[logging.Logger, io.StringIO, logging.Handler],
) -> None:
    logger, out, _ = captured
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("load failed")
    line = _lines(out)[0]
    assert "RuntimeError: boom" in line["exception"]


def test_the_text_format_shows_the_model_after_the_logger() -> None:
    record = logging.LogRecord("mesh.node.cache_manager", logging.INFO, "f", 1, "loaded", (), None)
    logs.ModelIdFilter().filter(record)
    assert "mesh.node.cache_manager:" in logs.TextFormatter().format(record)
    with logs.about_model("iris-1"):
        record = logging.LogRecord(
            "mesh.node.cache_manager", logging.INFO, "f", 1, "loaded", (), None
        )
        logs.ModelIdFilter().filter(record)
    assert "mesh.node.cache_manager model=iris-1: loaded" in logs.TextFormatter().format(record)


def test_an_unknown_log_format_names_the_variable() -> None:
    assert logs.parse_format(None) == "text"
    assert logs.parse_format("JSON") == "json"
    with pytest.raises(ValueError, match="MESHSERVE_LOG_FORMAT"):
        logs.parse_format("xml")
