"""The payload log's settings: a target it could write to, and bounded queues."""

from __future__ import annotations

import pytest

from mesh.core import errors, payload_log_settings, settings


@pytest.mark.parametrize(
    "target", ["ftp://host/x", "file://relative/path", "http://", "/just/a/path"]
)
def test_a_payload_log_target_that_cannot_work_is_refused(target: str) -> None:
    with pytest.raises(errors.ConfigError, match="MESHSERVE_PAYLOAD_LOG"):
        payload_log_settings.PayloadLogSettings.from_env({"MESHSERVE_PAYLOAD_LOG": target})


def test_payload_log_settings_are_read() -> None:
    s = settings.from_env(
        {
            "MESHSERVE_PAYLOAD_LOG": "http://sink:8080/events",
            "MESHSERVE_PAYLOAD_LOG_QUEUE": "10",
            "MESHSERVE_PAYLOAD_LOG_QUEUE_BYTES": "1Mi",
        }
    ).payload_log
    assert (s.target, s.queue_size, s.queue_bytes) == ("http://sink:8080/events", 10, 2**20)


def test_the_payload_log_is_off_by_default() -> None:
    s = payload_log_settings.PayloadLogSettings.from_env({})
    assert (s.target, s.queue_size, s.queue_bytes) == ("", 1000, 64 * 2**20)


@pytest.mark.parametrize(
    "target", ["file:///var/log/payloads.jsonl", "file://localhost/x", "https://sink/e"]
)
def test_a_file_or_http_target_is_kept_without_surrounding_spaces(target: str) -> None:
    s = payload_log_settings.PayloadLogSettings.from_env({"MESHSERVE_PAYLOAD_LOG": f" {target} "})
    assert s.target == target


def test_the_event_queue_holds_at_least_one_event() -> None:
    s = payload_log_settings.PayloadLogSettings.from_env({"MESHSERVE_PAYLOAD_LOG_QUEUE": "0"})
    assert s.queue_size == 1
