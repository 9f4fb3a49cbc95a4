"""The controller's world (:mod:`tests.integration.controller_fixtures`) for
the tests of this folder: each test module gets its own stand-in API server,
mesh node and running controller."""

from tests.integration.controller_fixtures import (
    apiserver,
    ctl,
    kube,
    kube_config,
    mesh_node,
    models,
    settings_for,
)

__all__ = ["apiserver", "ctl", "kube", "kube_config", "mesh_node", "models", "settings_for"]
