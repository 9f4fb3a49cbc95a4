"""The controller's settings (:mod:`kube.controller_settings`) from its pod's
environment, and how ``meshserve controller`` reports a bad one."""

from __future__ import annotations

import pathlib

import pytest

from kube import controller_settings, runtime_replicas
from mesh.core import errors
from meshserve import cli


def test_settings_come_from_the_environment(tmp_path: pathlib.Path) -> None:
    namespace_file = tmp_path / "namespace"
    namespace_file.write_text("from-service-account\n")
    env = {
        "KV_STORE": "etcd:etcd:2379",
        "MM_KVSTORE_PREFIX": "mm",
        "MM_INSTANCE_ID": "meshserve-controller-0",
        "MESHSERVE_NODE_IMAGE": "registry/meshserve:1.0",
        "MESHSERVE_FAILURE_EXPIRY": "60",
    }
    cfg = controller_settings.settings_from_env(env, namespace_file)
    assert cfg.namespace == cfg.deployment.namespace == "from-service-account"
    assert cfg.mesh_endpoint == "meshserve:8033" and cfg.kv.endpoints == ("etcd:2379",)
    assert cfg.leader_key == "mm/controller-leader" and cfg.instance_id == "meshserve-controller-0"
    assert cfg.deployment.node_image == "registry/meshserve:1.0"
    assert cfg.failure_expiry_seconds == 60


def test_the_namespace_is_chosen_before_the_pods_then_the_default(tmp_path: pathlib.Path) -> None:
    missing = tmp_path / "absent"
    read = controller_settings.settings_from_env
    assert read({"POD_NAMESPACE": "pod"}, missing).namespace == "pod"
    both = {"POD_NAMESPACE": "pod", "MESHSERVE_NAMESPACE": "chosen"}
    assert read(both, missing).namespace == "chosen"
    assert read({}, missing).namespace == "default"


def test_scale_to_zero_is_on_with_modelmesh_servings_grace_unless_turned_off(
    tmp_path: pathlib.Path,
) -> None:
    read = controller_settings.settings_from_env
    missing = tmp_path / "absent"
    assert read({}, missing).scale_to_zero == runtime_replicas.ScaleToZero(True, 60.0)
    env = {"MESHSERVE_SCALE_TO_ZERO": "False", "MESHSERVE_SCALE_TO_ZERO_GRACE": "5"}
    assert read(env, missing).scale_to_zero == runtime_replicas.ScaleToZero(False, 5.0)
    with pytest.raises(errors.ConfigError, match="MESHSERVE_SCALE_TO_ZERO"):
        read({"MESHSERVE_SCALE_TO_ZERO": "sometimes"}, missing)
    with pytest.raises(errors.ConfigError, match="MESHSERVE_SCALE_TO_ZERO_GRACE"):
        read({"MESHSERVE_SCALE_TO_ZERO_GRACE": "-1"}, missing)


def test_a_bad_variable_is_named(tmp_path: pathlib.Path) -> None:
    missing = tmp_path / "absent"
    with pytest.raises(errors.ConfigError, match="MESHSERVE_ENDPOINT"):
        controller_settings.settings_from_env({"MESHSERVE_ENDPOINT": "no-port"}, missing)
    with pytest.raises(errors.ConfigError, match="MESHSERVE_RUNTIME_REPLICAS"):
        controller_settings.settings_from_env({"MESHSERVE_RUNTIME_REPLICAS": "-1"}, missing)


def test_the_command_reports_bad_settings_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MESHSERVE_ENDPOINT", "no-port")
    assert cli.main(["controller", "--namespace", "meshserve"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("meshserve: MESHSERVE_ENDPOINT") and err.count("\n") == 1
