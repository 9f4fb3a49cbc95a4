"""The peers scenario's options and its Ray side's pure parts
(:mod:`load_tests.peers`, :mod:`load_tests.peers_ray`), without Ray or
any server: ``make test`` never needs Ray's venv."""

from __future__ import annotations

import pytest

from load_tests import peers, peers_ray, peers_trace


def test_quick_is_short_and_every_option_narrows_it() -> None:
    cfg = peers.parse([], quick=True)
    assert cfg.measured_s < peers.Config().measured_s
    assert len(cfg.rates) >= 2 and len(cfg.shapes) == 3
    cfg = peers.parse(["--systems", "meshserve,floor", "--rates", "5,10", "--measured", "3"], True)
    assert cfg.systems == ("meshserve", "floor")
    assert cfg.rates == (5.0, 10.0)
    assert cfg.measured_s == 3.0


def test_each_point_gets_a_fresh_start_unless_carried_over() -> None:
    cfg = peers.parse([], quick=True)
    traces = [
        peers_trace.build(shape, rate, 4, 1.0, 2.0, 1) for shape in cfg.shapes for rate in cfg.rates
    ]
    assert not cfg.carry_over
    assert peers.starts(traces, cfg.carry_over) == [[t] for t in traces]
    carried = peers.parse(["--carry-over"], quick=True)
    assert carried.carry_over
    assert peers.starts(traces, carried.carry_over) == [traces]


def test_an_unknown_system_is_refused() -> None:
    with pytest.raises(SystemExit):
        peers.parse(["--systems", "triton"], quick=True)


@pytest.mark.parametrize(
    ("cmdline", "role"),
    [
        ("ray::ServeReplica:forests:Forests", "replica"),
        ("ray::ProxyActor", "proxy"),
        ("ray::ServeController.listen_for_change", "controller"),
        (".../ray/core/src/ray/raylet/raylet --dashboard_agent_command=... runtime_env", "raylet"),
        (".../ray/core/src/ray/gcs/gcs_server --log_dir=...", "gcs"),
        ("python .../ray/dashboard/dashboard.py --host=127.0.0.1", "dashboard"),
        ("/x/.runtimes/ray/bin/python /tmp/w/ray/ray_peers_app.py a b", "driver"),
    ],
)
def test_a_ray_process_is_named_by_its_role(cmdline: str, role: str) -> None:
    assert peers_ray.role(cmdline) == role


def test_the_ray_deployment_script_is_valid_python() -> None:
    compile(peers_ray.APP_SCRIPT, "ray_peers_app.py", "exec")
    assert "@serve.multiplexed(max_num_models_per_replica=" in peers_ray.APP_SCRIPT
    assert "serve.get_multiplexed_model_id()" in peers_ray.APP_SCRIPT
