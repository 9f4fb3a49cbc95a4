"""TLS end to end: two nodes (real MLServers) on an etcd that wants client
certificates, clients that must show one, nodes that call each other over
mutual TLS, and a certificate rotated under a running node.

A throwaway CA is made by the test. The nodes trust a bundle of two CAs, so
that one node's certificate can be rotated to the second CA while the mesh
keeps working, as an operator rotates a CA.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import http.client
import json
import pathlib
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from tritonclient import grpc as triton
from tritonclient.utils import InferenceServerException

from kube import mesh_client
from mesh.core import errors, settings, tls_settings
from mesh.edges import node_tls
from mesh.kv import etcd_kv
from meshserve import samples
from tests.integration import mesh_fixtures, tls_fixtures


@dataclasses.dataclass
class PKI:
    dir: pathlib.Path
    ca: tls_fixtures.CA
    ca2: tls_fixtures.CA
    ca_path: pathlib.Path
    ca2_path: pathlib.Path
    bundle: pathlib.Path
    client: tls_fixtures.Pair
    client2: tls_fixtures.Pair


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    d = tmp_path_factory.mktemp("pki")
    ca, ca2 = tls_fixtures.CA("mesh CA"), tls_fixtures.CA("next mesh CA")
    bundle = d / "trust.crt"
    bundle.write_bytes(ca.pem + ca2.pem)
    return PKI(
        d,
        ca,
        ca2,
        ca.write(d / "ca.crt"),
        ca2.write(d / "ca2.crt"),
        bundle,
        ca.issue(d, "client"),
        ca2.issue(d, "client2"),
    )


@pytest.fixture(scope="module")
def tls_etcd(pki: PKI) -> Iterator[tls_fixtures.TLSEtcdServer]:
    server = tls_fixtures.TLSEtcdServer(
        pki.dir / "etcd",
        pki.ca_path,
        pki.ca.issue(pki.dir, "etcd"),
        pki.ca.issue(pki.dir, "etcd-client"),
    )
    server.start()
    try:
        yield server
    finally:
        server.discard()


def _tls_settings(
    pki: PKI, etcd: tls_fixtures.TLSEtcdServer, folder: pathlib.Path
) -> tls_settings.TLSSettings:
    live = pki.ca.issue(folder, "tls")  # the node's own, rotated in place by a test
    return tls_settings.TLSSettings(
        key_cert_path=live.cert,
        private_key_path=live.key,
        client_auth=tls_settings.ClientAuth.REQUIRE,
        trust_cert_paths=(pki.bundle,),
        reload_interval_seconds=0.2,
        etcd_ca_path=pki.ca_path,
        etcd_cert_path=etcd.client_pair.cert,
        etcd_key_path=etcd.client_pair.key,
    )


@pytest.fixture(scope="module")
def nodes(
    pki: PKI, tls_etcd: tls_fixtures.TLSEtcdServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[mesh_fixtures.NodeThread]]:
    threads = []
    for i in range(2):
        d = tmp_path_factory.mktemp(f"tls-node{i}-")
        base = mesh_fixtures.node_settings(tls_etcd.endpoint, d, prefix="tlsmesh")
        threads.append(
            mesh_fixtures.NodeThread(
                dataclasses.replace(base, tls=_tls_settings(pki, tls_etcd, d / "certs"))
            )
        )
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        started = [pool.submit(t.start) for t in threads]
    try:
        for f in started:
            f.result()
        yield threads
    finally:
        mesh_fixtures.stop_cluster(threads)


@pytest.fixture(scope="module")
def iris(tmp_path_factory: pytest.TempPathFactory) -> samples.Sample:
    return samples.train_iris_logistic(tmp_path_factory.mktemp("iris") / "model")


def _creds(ca: pathlib.Path, pair: tls_fixtures.Pair) -> Any:
    return grpc.ssl_channel_credentials(
        ca.read_bytes(), pair.key.read_bytes(), pair.cert.read_bytes()
    )


def _mesh_client(endpoint: str, creds: Any) -> mesh_client.MeshClient:
    """The CLI's management client, over a TLS channel."""
    return mesh_client.MeshClient(endpoint, credentials=creds)


def _infer(
    endpoint: str, name: str, x: np.ndarray, ca: pathlib.Path | None, pair: tls_fixtures.Pair | None
) -> np.ndarray:
    with triton.InferenceServerClient(
        endpoint,
        ssl=ca is not None,
        root_certificates=str(ca) if ca else None,
        private_key=str(pair.key) if pair else None,
        certificate_chain=str(pair.cert) if pair else None,
    ) as c:
        inp = triton.InferInput("predict", list(x.shape), "FP64")
        inp.set_data_from_numpy(x.astype(np.float64))
        out: np.ndarray = c.infer(name, [inp], client_timeout=30).as_numpy("predict")
        return out.reshape(-1)


@pytest.fixture(scope="module")
def registered(nodes: list[mesh_fixtures.NodeThread], pki: PKI, iris: samples.Sample) -> str:
    """``iris-tls``, registered over TLS and loaded on node 1 only."""
    with _mesh_client(nodes[0].endpoint, _creds(pki.ca_path, pki.client)) as c:
        c.apply(mesh_fixtures.predictor_spec("iris-tls", iris.folder))
    got = _infer(nodes[1].endpoint, "iris-tls", iris.inputs, pki.ca_path, pki.client)
    np.testing.assert_array_equal(got, iris.expected)
    return "iris-tls"


def test_a_client_with_a_certificate_infers_through_either_node(
    nodes: list[mesh_fixtures.NodeThread], pki: PKI, iris: samples.Sample, registered: str
) -> None:
    for n in nodes:
        got = _infer(n.endpoint, registered, iris.inputs, pki.ca_path, pki.client)
        np.testing.assert_array_equal(got, iris.expected)


def test_nodes_forward_to_each_other_over_mutual_tls(
    nodes: list[mesh_fixtures.NodeThread], pki: PKI, iris: samples.Sample, registered: str
) -> None:
    holder = nodes[1] if nodes[1].node.manager.model_count() else nodes[0]
    other = nodes[0] if holder is nodes[1] else nodes[1]
    before = other.node.plane.forwarded
    _infer(other.endpoint, registered, iris.inputs, pki.ca_path, pki.client)
    assert other.node.plane.forwarded == before + 1
    assert other.node.peers.secure


def test_a_client_without_a_certificate_or_without_tls_is_refused(
    nodes: list[mesh_fixtures.NodeThread], pki: PKI, iris: samples.Sample, registered: str
) -> None:
    with pytest.raises(InferenceServerException) as no_cert:
        _infer(nodes[0].endpoint, registered, iris.inputs, pki.ca_path, None)
    assert "UNAVAILABLE" in str(no_cert.value.status())
    with pytest.raises(InferenceServerException) as plaintext:
        _infer(nodes[0].endpoint, registered, iris.inputs, None, None)
    assert "UNAVAILABLE" in str(plaintext.value.status())


def _rest_infer(
    n: mesh_fixtures.NodeThread, context: Any, name: str, x: np.ndarray
) -> dict[str, Any]:
    body = json.dumps(
        {
            "inputs": [
                {
                    "name": "predict",
                    "shape": list(x.shape),
                    "datatype": "FP64",
                    "data": x.ravel().tolist(),
                }
            ]
        }
    )
    conn = http.client.HTTPSConnection("127.0.0.1", n.node.rest.port, context=context, timeout=30)
    try:
        conn.request("POST", f"/v2/models/{name}/infer", body, {"Content-Type": "application/json"})
        answer: dict[str, Any] = json.loads(conn.getresponse().read())
        return answer
    finally:
        conn.close()


def test_the_rest_port_speaks_https_and_wants_a_client_certificate(
    nodes: list[mesh_fixtures.NodeThread], pki: PKI, iris: samples.Sample, registered: str
) -> None:
    ok = _rest_infer(
        nodes[0], tls_fixtures.client_context(pki.ca_path, pki.client), registered, iris.inputs
    )
    assert ok["outputs"][0]["data"] == iris.expected.tolist()
    with pytest.raises(OSError):  # the handshake fails: no certificate
        _rest_infer(nodes[0], tls_fixtures.client_context(pki.ca_path), registered, iris.inputs)


async def test_etcd_refuses_a_client_without_a_certificate(
    tls_etcd: tls_fixtures.TLSEtcdServer, pki: PKI
) -> None:
    bare = etcd_kv.EtcdTLS(ca_cert=pki.ca_path.read_bytes())
    with pytest.raises(errors.StoreUnavailable):
        await etcd_kv.EtcdKV.connect([tls_etcd.endpoint], timeout=2.0, tls=bare)


def test_a_rotated_certificate_is_served_without_restarting_the_node(
    nodes: list[mesh_fixtures.NodeThread], pki: PKI, iris: samples.Sample, registered: str
) -> None:
    target = nodes[0]
    tls_cfg = target.config.tls
    assert tls_cfg.key_cert_path is not None and tls_cfg.private_key_path is not None
    # A client that trusts only the new CA cannot talk to the node yet.
    with pytest.raises(InferenceServerException):
        _infer(target.endpoint, registered, iris.inputs, pki.ca2_path, pki.client2)
    new = pki.ca2.issue(pki.dir, "rotated")
    tls_fixtures.replace_file(tls_cfg.key_cert_path, new.cert.read_bytes())
    tls_fixtures.replace_file(tls_cfg.private_key_path, new.key.read_bytes())
    server, peers = target.node.tls.server, target.node.tls.peers
    assert server is not None and peers is not None
    mesh_fixtures.wait_for(
        lambda: server.version >= 2 and peers.version >= 2, 10, "the node reloads its certificate"
    )
    got = _infer(target.endpoint, registered, iris.inputs, pki.ca2_path, pki.client2)
    np.testing.assert_array_equal(got, iris.expected)
    # Both nodes still serve, and reach each other (the model is on one of
    # them): the rotated node presents its new certificate to its peer, and
    # its peer checks the new server certificate, both against the bundle.
    for n in nodes:
        np.testing.assert_array_equal(
            _infer(n.endpoint, registered, iris.inputs, pki.bundle, pki.client), iris.expected
        )


def test_a_missing_certificate_file_stops_the_node_naming_the_variable(
    tmp_path: pathlib.Path,
) -> None:
    config = settings.from_env(
        {
            "MM_TLS_KEY_CERT_PATH": str(tmp_path / "missing.crt"),
            "MM_TLS_PRIVATE_KEY_PATH": str(tmp_path / "missing.key"),
        }
    ).tls
    with pytest.raises(errors.ConfigError) as e:
        node_tls.load_tls(config)
    assert e.value.message.startswith("MM_TLS_KEY_CERT_PATH: cannot read ")
    assert "missing.crt" in e.value.message


def test_the_cli_talks_to_a_tls_node_with_its_tls_options(
    nodes: list[mesh_fixtures.NodeThread], pki: PKI, registered: str
) -> None:
    def meshserve(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "meshserve.cli", *args, "--endpoint", nodes[0].endpoint],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    # The trust bundle: an earlier test rotated the nodes to the second CA.
    tls_args = ["--tls-ca", str(pki.bundle), "--tls-cert", str(pki.client.cert),
                "--tls-key", str(pki.client.key)]  # fmt: skip
    listed = meshserve("predictor", "list", *tls_args)
    assert listed.returncode == 0, listed.stderr
    assert registered in listed.stdout
    plaintext = meshserve("models")
    assert plaintext.returncode == 1 and "UNAVAILABLE" in plaintext.stderr
    missing = meshserve("models", "--tls-ca", str(pki.dir / "nope.crt"))
    assert missing.returncode == 1 and "--tls-ca" in missing.stderr
    assert "Traceback" not in missing.stderr
