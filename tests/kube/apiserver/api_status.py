"""The API server's error answers: ``Status`` objects with an HTTP code.

Clients (kopf, the official client, kubectl) decide what to do from a
failed request's ``code`` and ``reason`` (a 409 ``Conflict`` is retried, a
410 ``Expired`` restarts a watch, a 422 ``Invalid`` is shown with its causes),
so every module of the stand-in raises :class:`ApiError` and one place turns
it into the body the real server sends.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Obj = dict[str, Any]
"""A stored or sent object: a JSON document."""

NOT_FOUND = "the server could not find the requested resource"


class ApiError(Exception):
    """An error answer: a ``Status`` object with this HTTP code and reason."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = dict(details or {})

    def status(self) -> Obj:
        body: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body


def not_found() -> ApiError:
    """A path the server does not serve."""
    return ApiError(404, "NotFound", NOT_FOUND)
