"""Model and vmodel ids: what is allowed, checked once at the edge.

An id becomes part of an etcd key, a folder name in the node's model
directory and the runtime's model name, so it must be safe in all three: no
``/``, no whitespace, no ``..``, not empty, at most 253 characters (a
Kubernetes object name fits). KServe ModelMesh Serving's ids
(``name__isvc-0123abcd``) pass.
"""

from __future__ import annotations

import re

from mesh.core import errors

MAX_LENGTH = 253
_ALLOWED = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:@+=-]*$")


def validate(model_id: str, what: str = "model id") -> str:
    """``model_id`` if it is a valid id, else :class:`mesh.core.errors.InvalidRequest`."""
    if not model_id:
        raise errors.InvalidRequest(f"{what} is empty")
    if len(model_id) > MAX_LENGTH:
        raise errors.InvalidRequest(f"{what} is longer than {MAX_LENGTH} characters")
    if not _ALLOWED.match(model_id) or ".." in model_id:
        raise errors.InvalidRequest(
            f"{what} {model_id!r} may hold only letters, digits and _ . : @ + = - "
            "(no '/', spaces or '..')"
        )
    return model_id
