"""The variables a ModelMesh ``etcd_connection`` file stands for.

ModelMesh Serving tells its pods where etcd is with a JSON file (its
``model-serving-etcd`` Secret, mounted) that ``KV_STORE=etcd:/path`` names.
meshserve reads the same file: :mod:`mesh.edges.process_env` opens it, and
:func:`etcd_connection_env` (pure) turns its text into the ``KV_STORE``,
``MM_KVSTORE_PREFIX`` and ``MESHSERVE_ETCD_*`` variables that
:func:`mesh.core.settings.from_env` reads.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from mesh.core import errors


def etcd_connection_env(text: str, path: str, env: Mapping[str, str]) -> dict[str, str]:
    """The variables a ModelMesh ``etcd_connection`` file stands for (pure).

    ModelMesh Serving points ``KV_STORE=etcd:/path/etcd_connection`` at a JSON
    file (its ``model-serving-etcd`` Secret) such as ``{"endpoints":
    "https://etcd-0:2379,https://etcd-1:2379", "root_prefix": "modelmesh",
    "certificate_file": "/etc/etcd/ca.crt", "client_certificate_file": ...,
    "client_key_file": ...}``. This returns ``KV_STORE`` with the endpoints,
    the ``MESHSERVE_ETCD_*`` TLS files (unless set already) and a key prefix
    under ``root_prefix``. Inline certificates and user/password are refused
    with a message saying what to use instead.
    """
    where = f"KV_STORE: {path}"
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise errors.ConfigError(f"{where} is not valid JSON: {e}") from None
    if not isinstance(d, dict) or not d.get("endpoints"):
        raise errors.ConfigError(f'{where} must be a JSON object with "endpoints"')
    for unsupported, instead in (
        ("certificate", "certificate_file"),
        ("userid", "client certificates"),
        ("password", "client certificates"),
    ):
        if d.get(unsupported):
            raise errors.ConfigError(
                f"{where}: {unsupported!r} is not supported; use {instead} instead"
            )
    out = {"KV_STORE": f"etcd:{d['endpoints']}"}
    for field, variable in (
        ("certificate_file", "MESHSERVE_ETCD_CA_PATH"),
        ("client_certificate_file", "MESHSERVE_ETCD_CERT_PATH"),
        ("client_key_file", "MESHSERVE_ETCD_KEY_PATH"),
    ):
        if d.get(field) and not env.get(variable):
            out[variable] = str(d[field])
    root = str(d.get("root_prefix") or "").strip("/")
    if root:
        out["MM_KVSTORE_PREFIX"] = f"{root}/{(env.get('MM_KVSTORE_PREFIX') or 'mm').strip('/')}"
    return out
