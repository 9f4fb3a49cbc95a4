"""Fixtures of the deploy/ tests: the tree rendered by the real kustomize.

kubectl is required, not optional: without it these tests fail and say how to
install it (a skip would hide that deploy/ went unchecked).
"""

from __future__ import annotations

import pytest

from tests.deploy import manifests


@pytest.fixture(scope="session")
def kubectl() -> str:
    """Path of kubectl with kustomize v5; fails the test with install hints."""
    try:
        return manifests.kubectl()
    except RuntimeError as e:
        problem = str(e)
    pytest.fail(problem, pytrace=False)


@pytest.fixture(scope="session")
def rendered(kubectl: str) -> dict[str, manifests.Rendered]:
    """Every kustomization under deploy/, rendered once."""
    return {folder: manifests.render(folder) for folder in manifests.kustomizations()}


@pytest.fixture(scope="session")
def crds(rendered: dict[str, manifests.Rendered]) -> dict[str, manifests.Obj]:
    """The CRDs of deploy/crd (and of deploy/crd/inferenceservice, for
    clusters without KServe) by kind."""
    objects = rendered["crd"].objects + rendered["crd/inferenceservice"].objects
    return {c["spec"]["names"]["kind"]: c for c in objects}
