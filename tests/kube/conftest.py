"""The stand-in API server's fixtures (:mod:`tests.kube.fixtures`) for this folder."""

from tests.kube.fixtures import api, apiserver, kube_config

__all__ = ["api", "apiserver", "kube_config"]
