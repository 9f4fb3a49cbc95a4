"""Every built-in object deploy/ renders is valid for the Kubernetes API,
checked offline by kubernetes-validate in strict mode (unknown fields are
errors) against the newest Kubernetes version it knows."""

from __future__ import annotations

import kubernetes_validate  # type: ignore[import-untyped]
import pytest

from tests.deploy import manifests
from tests.deploy.manifests import GROUP, Rendered, ident

VERSION = kubernetes_validate.utils.latest_version()


@pytest.mark.parametrize("folder", manifests.kustomizations())
def test_built_in_objects_validate_strictly_against_the_kubernetes_schemas(
    rendered: dict[str, Rendered], folder: str
) -> None:
    problems: list[str] = []
    built_in = [o for o in rendered[folder].objects if manifests.api_group(o) != GROUP]
    for obj in built_in:
        try:
            kubernetes_validate.validate(obj, VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            problems.append(f"{ident(obj)}: {path}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            problems.append(f"{ident(obj)}: {e.message}")
    assert problems == [], f"deploy/{folder} against Kubernetes {VERSION}"


def test_strict_validation_catches_an_unknown_field(rendered: dict[str, Rendered]) -> None:
    """The check above is not vacuous: a misspelt field fails it."""
    deployment = manifests.one(rendered["base"].objects, "Deployment", "meshserve-controller")
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSION, strict=True)
