"""Throwaway certificate authorities for the TLS tests, and an etcd that
speaks TLS with client certificates.

Certificates are made at test time with ``cryptography`` (ECDSA P-256, valid
for a day), for ``localhost`` and ``127.0.0.1``, usable by servers and
clients alike, the way one Secret serves a ModelMesh pod both ways.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import ipaddress
import json
import os
import pathlib
import ssl
import urllib.request

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mesh.edges import etcd_process

_DAY = datetime.timedelta(days=1)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclasses.dataclass(frozen=True)
class Pair:
    """A certificate and its key, as PEM files."""

    cert: pathlib.Path
    key: pathlib.Path


class CA:
    """A self-signed certificate authority that issues leaf certificates."""

    def __init__(self, name: str = "meshserve test CA") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + _DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def write(self, path: pathlib.Path) -> pathlib.Path:
        _write(path, self.pem)
        return path

    def issue(
        self,
        folder: pathlib.Path,
        name: str,
        hosts: tuple[str, ...] = ("localhost", "127.0.0.1"),
    ) -> Pair:
        """A certificate for ``hosts`` (server and client use), written as
        ``<folder>/<name>.crt`` and ``<name>.key``."""
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = []
        for h in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(h)))
            except ValueError:
                sans.append(x509.DNSName(h))
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + _DAY)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        pair = Pair(folder / f"{name}.crt", folder / f"{name}.key")
        _write(pair.cert, cert.public_bytes(serialization.Encoding.PEM))
        _write(pair.key, _pem_key(key))
        return pair


def _write(path: pathlib.Path, data: bytes) -> None:
    """Replace ``path`` at once (as the kubelet swaps a Secret's files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def replace_file(path: pathlib.Path, data: bytes) -> None:
    """Atomically give ``path`` new contents."""
    _write(path, data)


def client_context(ca: pathlib.Path, pair: Pair | None = None) -> ssl.SSLContext:
    """An HTTPS client context trusting ``ca``, presenting ``pair`` if given."""
    context = ssl.create_default_context(cafile=str(ca))
    if pair is not None:
        context.load_cert_chain(pair.cert, pair.key)
    return context


class TLSEtcdServer(etcd_process.EtcdServer):
    """etcd on https:// with ``--client-cert-auth``: every client, gRPC or
    HTTP, must present a certificate signed by ``ca``."""

    def __init__(
        self, data_dir: pathlib.Path, ca: pathlib.Path, server: Pair, client: Pair
    ) -> None:
        super().__init__(data_dir, fast=True)
        self.ca = ca
        self.server_pair = server
        self.client_pair = client

    @property
    def url(self) -> str:
        return f"https://{self.endpoint}"

    def argv(self) -> list[str]:
        argv = [a.replace("http://", "https://") for a in super().argv()]
        # Peer traffic stays plaintext: one member, no peers.
        peer = f"https://127.0.0.1:{self.peer_port}"
        argv = [a.replace(peer, f"http://127.0.0.1:{self.peer_port}") for a in argv]
        return [
            *argv,
            "--cert-file", str(self.server_pair.cert),
            "--key-file", str(self.server_pair.key),
            "--client-cert-auth",
            "--trusted-ca-file", str(self.ca),
        ]  # fmt: skip

    def probe(self, timeout: float = 1.0) -> tuple[bool, str]:
        body = json.dumps({"key": base64.b64encode(b"\0meshserve-ready").decode()}).encode()
        request = urllib.request.Request(
            f"{self.url}/v3/kv/range",
            data=body,
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}),
            urllib.request.HTTPSHandler(context=client_context(self.ca, self.client_pair)),
        )
        try:
            with opener.open(request, timeout=timeout) as response:
                answer = json.loads(response.read())
        except (OSError, ValueError) as e:
            return False, f"{type(e).__name__}: {e}"
        if not isinstance(answer, dict) or "header" not in answer:
            return False, f"unexpected answer {answer!r}"
        return True, "ready"
