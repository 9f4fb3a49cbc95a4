"""The overhead scenario's arithmetic (added µs, throughput ratios, CPU per
request, targets) and its report (:mod:`load_tests.overhead_report`) on
made-up measurements, and a few seconds of the real scenario (etcd, a node,
MLServer, the bare proxy)."""

from __future__ import annotations

import pytest

from load_tests import latencies, loadgen, overhead, overhead_report


def run(
    mode: str, ok: int, secs: float, us: int, errors: dict[str, int] | None = None
) -> loadgen.RunResult:
    r = latencies.Recorder()
    for _ in range(ok):
        r.record_us(us)
    return loadgen.RunResult(
        mode=mode,
        sent=ok + sum((errors or {}).values()),
        ok=ok,
        errors=errors or {},
        duration_s=secs,
        latency=r,
        send_lag=latencies.Recorder(),
        peak_in_flight=1,
    )


def phase(us: dict[str, int], ok: dict[str, int], secs: float = 1.0) -> overhead.PhaseResults:
    out = overhead.PhaseResults.empty()
    for p in overhead_report.PATHS:
        out.add(p, run("closed", ok[p], secs, us[p]))
    return out


def figures(mesh_us: int, mesh_rate: int) -> dict[str, object]:
    seq = phase(
        {"direct": 500, "bare": 900, "mesh": mesh_us}, dict.fromkeys(overhead_report.PATHS, 100)
    )
    sat = phase(
        {"direct": 5000, "bare": 8000, "mesh": 9000},
        {"direct": 2000, "bare": 1000, "mesh": mesh_rate},
    )
    half = phase(
        {"direct": 700, "bare": 1100, "mesh": 1300}, dict.fromkeys(overhead_report.PATHS, 1000)
    )
    meter = overhead.Meter({"bare_proxy": 1, "mesh_node": 2, "mlserver": 3, "client": 4})
    zero = dict.fromkeys(meter.pids, 0.0)
    meter.add("saturation", "bare", zero, {**zero, "bare_proxy": 0.4, "mesh_node": 0.01}, 1.0, 1000)
    meter.add("saturation", "mesh", zero, {**zero, "mesh_node": 0.5}, 1.0, 1000)
    meter.add("saturation", "direct", zero, {**zero, "mesh_node": 0.01}, 1.0, 2000)
    return overhead.assemble(
        overhead.QUICK,
        {"name": "m", "batch": [5, 4]},
        2.0,
        800.0,
        (seq, sat, half),
        1000.0,
        meter,
        [],
    )


def test_added_latency_throughput_and_cpu_per_request() -> None:
    f = figures(mesh_us=1000, mesh_rate=1000)
    seq = f["sequential"]
    assert isinstance(seq, dict)
    assert seq["added_us"]["bare_over_direct"]["p50"] == pytest.approx(400, abs=1)
    assert seq["added_us"]["mesh_over_bare"]["p50"] == pytest.approx(100, abs=1)
    sat = f["saturation"]
    assert isinstance(sat, dict)
    assert sat["throughput_per_s"] == {"direct": 2000.0, "bare": 1000.0, "mesh": 1000.0}
    assert sat["throughput_ratio"]["mesh_vs_bare"] == 1.0
    cpu = f["cpu_us_per_request"]
    assert isinstance(cpu, dict)
    assert cpu["saturation"]["bare_proxy"] == 400.0
    assert cpu["saturation"]["mesh_node"] == 500.0
    # The node's CPU while the other paths ran: 0.02 s over 2 s.
    assert cpu["saturation"]["idle_ms_per_s"]["mesh_node"] == 10.0


def test_targets_met_and_missed() -> None:
    good = figures(mesh_us=920, mesh_rate=1000)["targets"]  # +420 µs vs the bare hop's +400
    assert isinstance(good, dict)
    assert good["mesh_added_p50_le_1.1x_bare"]["met"]
    assert good["mesh_throughput_ge_0.95x_bare"]["met"]
    bad = figures(mesh_us=1400, mesh_rate=800)["targets"]
    assert isinstance(bad, dict)
    assert not bad["mesh_added_p50_le_1.1x_bare"]["met"]
    assert not bad["mesh_throughput_ge_0.95x_bare"]["met"]
    assert not bad["stretch_mesh_added_p50_le_250us"]["met"]


def test_table_notes_and_plots() -> None:
    f = figures(mesh_us=1400, mesh_rate=800)
    text = overhead_report.table(f)
    assert "mesh - bare" in text and "CPU-µs per request" in text
    notes = overhead_report.notes(f)
    assert any("MISSED" in n for n in notes) and any(n.startswith("Why:") for n in notes)
    plots = overhead_report.plots(f)
    assert [p.filename for p in plots] == [
        "overhead_cdf_sequential.png",
        "overhead_cdf_half_rate.png",
    ]
    assert all(len(p.series) == 3 for p in plots)


@pytest.mark.integration
def test_smoke_run_of_the_real_scenario() -> None:
    r = overhead.run(True, ["--smoke"])
    f = r.figures
    assert f["leftover_processes"] == []
    for key in ("sequential", "saturation", "half_rate"):
        assert all(not e for e in f[key]["errors"].values()), key
        assert all(f[key]["latency_us"][p]["count"] > 0 for p in overhead_report.PATHS)
