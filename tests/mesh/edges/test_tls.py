"""Plaintext without TLS settings, the choice of credentials per hop, the checks of the PEM
files, and certificate rotation on real gRPC and HTTPS listeners on
127.0.0.1 (a throwaway CA made by the test)."""

from __future__ import annotations

import asyncio
import pathlib
import ssl
from typing import Any

import aiohttp
import grpc
import pytest
from aiohttp import web

from mesh.core import errors, settings, tls_settings
from mesh.edges import peers, tls
from tests.integration import tls_fixtures

# --- without TLS settings ----------------------------------------------------------


def test_without_tls_variables_everything_is_plaintext() -> None:
    t = settings.from_env({}).tls
    assert not t.enabled
    assert tls.server_plan(t) is None
    assert all(tls.channel_plan(t, hop) is None for hop in tls.Hop)


# --- which credentials for which hop ---------------------------------------------------


def _tls(**kw: Any) -> tls_settings.TLSSettings:
    base: dict[str, Any] = {
        "key_cert_path": pathlib.Path("/c/tls.crt"),
        "private_key_path": pathlib.Path("/c/tls.key"),
    }
    return tls_settings.TLSSettings(**(base | kw))


def test_peers_get_mutual_tls_with_the_node_certificate_whatever_clients_must_show() -> None:
    plan = tls.channel_plan(_tls(trust_cert_paths=(pathlib.Path("/c/ca.crt"),)), tls.Hop.PEER)
    assert plan is not None
    assert plan.cert is not None and plan.cert.path == pathlib.Path("/c/tls.crt")
    assert plan.key is not None and plan.key.variable == "MM_TLS_PRIVATE_KEY_PATH"
    assert [r.path for r in plan.roots] == [pathlib.Path("/c/ca.crt")]


def test_peers_trust_the_node_certificate_itself_without_a_trust_file() -> None:
    plan = tls.channel_plan(_tls(peer_server_name="svc.ns"), tls.Hop.PEER)
    assert plan is not None
    assert [(r.variable, r.path) for r in plan.roots] == [
        ("MM_TLS_KEY_CERT_PATH", pathlib.Path("/c/tls.crt"))
    ]
    assert plan.server_name == "svc.ns"


def test_the_runtime_link_is_never_tls() -> None:
    assert tls.channel_plan(_tls(), tls.Hop.RUNTIME) is None


def test_etcd_uses_tls_only_with_its_own_ca_and_presents_its_own_client_certificate() -> None:
    assert tls.channel_plan(_tls(), tls.Hop.ETCD) is None
    plan = tls.channel_plan(
        tls_settings.TLSSettings(
            etcd_ca_path=pathlib.Path("/e/ca"),
            etcd_cert_path=pathlib.Path("/e/c"),
            etcd_key_path=pathlib.Path("/e/k"),
        ),
        tls.Hop.ETCD,
    )
    assert plan is not None and [f.variable for f in plan.files] == [
        "MESHSERVE_ETCD_CA_PATH",
        "MESHSERVE_ETCD_CERT_PATH",
        "MESHSERVE_ETCD_KEY_PATH",
    ]


def test_the_server_plan_asks_clients_as_configured() -> None:
    plan = tls.server_plan(
        _tls(client_auth=tls_settings.ClientAuth.REQUIRE, trust_cert_paths=(pathlib.Path("/ca"),))
    )
    assert plan is not None
    assert plan.client_auth is tls_settings.ClientAuth.REQUIRE
    assert [f.variable for f in plan.files] == [
        "MM_TLS_KEY_CERT_PATH",
        "MM_TLS_PRIVATE_KEY_PATH",
        "MM_TLS_TRUST_CERT_PATH",
    ]


# --- reading the files ------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("pki")
    ca, other = tls_fixtures.CA("ca one"), tls_fixtures.CA("ca two")
    return {
        "dir": d,
        "ca": ca,
        "ca_path": ca.write(d / "ca.crt"),
        "server": ca.issue(d, "server"),
        "client": ca.issue(d, "client"),
        "other": other,
        "other_ca_path": other.write(d / "other-ca.crt"),
        "other_server": other.issue(d, "other-server"),
        "other_client": other.issue(d, "other-client"),
    }


def _plan(
    cert: pathlib.Path,
    key: pathlib.Path,
    trust: tuple[pathlib.Path, ...] = (),
    auth: tls_settings.ClientAuth = tls_settings.ClientAuth.NONE,
) -> tls.ServerPlan:
    plan = tls.server_plan(
        tls_settings.TLSSettings(
            key_cert_path=cert, private_key_path=key, trust_cert_paths=trust, client_auth=auth
        )
    )
    assert plan is not None
    return plan


def test_a_missing_certificate_file_names_the_variable_and_the_file(
    pki: dict[str, Any], tmp_path: pathlib.Path
) -> None:
    missing = tmp_path / "nope.crt"
    with pytest.raises(errors.ConfigError) as e:
        tls.load_server(_plan(missing, pki["server"].key))
    assert "MM_TLS_KEY_CERT_PATH" in e.value.message and str(missing) in e.value.message


def test_a_file_that_is_not_pem_names_the_variable_and_the_file(
    pki: dict[str, Any], tmp_path: pathlib.Path
) -> None:
    junk = tmp_path / "junk.key"
    junk.write_text("not a key")
    with pytest.raises(errors.ConfigError, match=f"MM_TLS_PRIVATE_KEY_PATH: {junk} holds no PEM"):
        tls.load_server(_plan(pki["server"].cert, junk))


def test_a_key_of_another_certificate_is_refused_naming_both_files(pki: dict[str, Any]) -> None:
    with pytest.raises(errors.ConfigError) as e:
        tls.load_server(_plan(pki["server"].cert, pki["client"].key))
    msg = e.value.message
    assert "is not the private key of the certificate in MM_TLS_KEY_CERT_PATH" in msg
    assert str(pki["client"].key) in msg and str(pki["server"].cert) in msg


def test_a_trust_file_without_a_certificate_names_its_variable(
    pki: dict[str, Any], tmp_path: pathlib.Path
) -> None:
    empty = tmp_path / "ca.crt"
    empty.write_text("")
    plan = _plan(pki["server"].cert, pki["server"].key, (empty,), tls_settings.ClientAuth.REQUIRE)
    with pytest.raises(errors.ConfigError, match="MM_TLS_TRUST_CERT_PATH"):
        tls.load_server(plan)


# --- rotation ------------------------------------------------------------------------------


def _copy_pair(pair: tls_fixtures.Pair, folder: pathlib.Path) -> tls_fixtures.Pair:
    folder.mkdir(parents=True, exist_ok=True)
    out = tls_fixtures.Pair(folder / "tls.crt", folder / "tls.key")
    tls_fixtures.replace_file(out.cert, pair.cert.read_bytes())
    tls_fixtures.replace_file(out.key, pair.key.read_bytes())
    return out


def _rotate(live: tls_fixtures.Pair, new: tls_fixtures.Pair, trust: pathlib.Path | None = None,
            new_trust: pathlib.Path | None = None) -> None:  # fmt: skip
    tls_fixtures.replace_file(live.cert, new.cert.read_bytes())
    tls_fixtures.replace_file(live.key, new.key.read_bytes())
    if trust is not None and new_trust is not None:
        tls_fixtures.replace_file(trust, new_trust.read_bytes())


async def test_a_rotation_is_picked_up_and_a_broken_one_keeps_the_last_good_files(
    pki: dict[str, Any], tmp_path: pathlib.Path
) -> None:
    live = _copy_pair(pki["server"], tmp_path / "live")
    plan = _plan(live.cert, live.key)
    watched = tls.Watched("test", plan.files, lambda: tls.load_server(plan))
    seen: list[tls.ServerMaterial] = []
    watched.add_listener(seen.append)
    assert not await watched.refresh()  # nothing changed
    _rotate(live, pki["other_server"])
    assert await watched.refresh()
    assert watched.version == 2 and seen[-1].cert_chain == pki["other_server"].cert.read_bytes()
    tls_fixtures.replace_file(live.key, pki["server"].key.read_bytes())  # half a rotation
    assert not await watched.refresh()
    assert watched.version == 2 and "not the private key" in watched.last_error
    assert watched.value.cert_chain == pki["other_server"].cert.read_bytes()


class _Echo(grpc.GenericRpcHandler):  # type: ignore[misc]
    def service(self, details: Any) -> Any:
        async def echo(request: bytes, context: Any) -> bytes:
            return request

        return grpc.unary_unary_rpc_method_handler(echo)


def _creds(ca: pathlib.Path, pair: tls_fixtures.Pair | None) -> Any:
    return grpc.ssl_channel_credentials(
        ca.read_bytes(),
        pair.key.read_bytes() if pair else None,
        pair.cert.read_bytes() if pair else None,
    )


async def _grpc_call(port: int, ca: pathlib.Path, pair: tls_fixtures.Pair | None) -> str:
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", _creds(ca, pair)) as ch:
        try:
            answer = await ch.unary_unary("/test.Echo/Echo")(b"hi", timeout=5)
        except grpc.aio.AioRpcError as e:
            return str(e.code().name)
        return "OK" if answer == b"hi" else "wrong answer"


async def test_the_grpc_port_takes_a_new_certificate_and_ca_without_restarting(
    pki: dict[str, Any], tmp_path: pathlib.Path
) -> None:
    live = _copy_pair(pki["server"], tmp_path / "live")
    trust = tmp_path / "live" / "ca.crt"
    tls_fixtures.replace_file(trust, pki["ca"].pem)
    plan = _plan(live.cert, live.key, (trust,), tls_settings.ClientAuth.REQUIRE)
    watched = tls.Watched("test", plan.files, lambda: tls.load_server(plan))
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([_Echo()])
    port = server.add_secure_port("127.0.0.1:0", tls.grpc_server_credentials(watched))
    await server.start()
    try:
        ca1, ca2 = pki["ca_path"], pki["other_ca_path"]
        assert await _grpc_call(port, ca1, pki["client"]) == "OK"
        assert await _grpc_call(port, ca1, None) == "UNAVAILABLE"  # no client certificate
        assert await _grpc_call(port, ca2, pki["other_client"]) == "UNAVAILABLE"
        _rotate(live, pki["other_server"], trust, ca2)
        assert await watched.refresh()
        assert await _grpc_call(port, ca2, pki["other_client"]) == "OK"
        assert await _grpc_call(port, ca1, pki["client"]) == "UNAVAILABLE"
    finally:
        await server.stop(None)


async def _https_get(port: int, context: ssl.SSLContext) -> str:
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"https://127.0.0.1:{port}/", ssl=context) as r,
        ):
            return await r.text()
    except (aiohttp.ClientError, ssl.SSLError, OSError) as e:
        return type(e).__name__


async def test_the_rest_port_takes_a_new_certificate_and_ca_without_restarting(
    pki: dict[str, Any], tmp_path: pathlib.Path
) -> None:
    live = _copy_pair(pki["server"], tmp_path / "live")
    trust = tmp_path / "live" / "ca.crt"
    tls_fixtures.replace_file(trust, pki["ca"].pem)
    plan = _plan(live.cert, live.key, (trust,), tls_settings.ClientAuth.REQUIRE)
    watched = tls.Watched("test", plan.files, lambda: tls.load_server(plan))
    app = web.Application()

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app.router.add_get("/", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls.rest_ssl_context(watched))
    await site.start()
    port = runner.addresses[0][1]
    ctx = tls_fixtures.client_context
    try:
        assert await _https_get(port, ctx(pki["ca_path"], pki["client"])) == "hello"
        assert await _https_get(port, ctx(pki["ca_path"])) != "hello"  # no client certificate
        _rotate(live, pki["other_server"], trust, pki["other_ca_path"])
        assert await watched.refresh()
        assert await _https_get(port, ctx(pki["other_ca_path"], pki["other_client"])) == "hello"
        # The new trust store is in force: the old CA's client is refused even
        # though it trusts the new server certificate.
        both = ctx(pki["other_ca_path"], pki["client"])
        assert await _https_get(port, both) != "hello"
    finally:
        await runner.cleanup()


async def test_peer_channels_are_replaced_when_the_credentials_change(
    pki: dict[str, Any],
) -> None:
    def creds(pair: tls_fixtures.Pair, ca: pathlib.Path) -> Any:
        plan = tls.ChannelPlan(
            roots=(tls.FileRef("T", ca),),
            cert=tls.FileRef("C", pair.cert),
            key=tls.FileRef("K", pair.key),
        )
        return tls.grpc_channel_credentials(tls.load_channel(plan))

    p = peers.Peers(1024 * 1024, creds(pki["client"], pki["ca_path"]))
    try:
        first = p.channel("127.0.0.1:1")
        assert p.secure and p.channel("127.0.0.1:1") is first
        p.use_credentials(creds(pki["other_client"], pki["other_ca_path"]))
        assert p.channel("127.0.0.1:1") is not first
        await asyncio.sleep(0)
    finally:
        await p.close()
