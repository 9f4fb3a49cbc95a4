"""The peers scenario's report (:mod:`load_tests.peers_report`) from made-up
figures: the tables put each system next to the offline references, the
notes compare the tails and the loads, and a system that could not run is
said to have failed, with why."""

from __future__ import annotations

from typing import Any

from load_tests import peers_report

SHAPES = ("zipf-0.8", "bursty")
RATES = (20.0, 60.0)


def point(shape: str, rate: float, p99_ms: float, loads_per_100: float) -> dict[str, Any]:
    return {
        "shape": shape,
        "rate_per_s": rate,
        "mode": "open",
        "sent": 100,
        "ok": 99,
        "errors": {"HTTP 503": 1},
        "throughput_per_s": 8.25,
        "latency_us": {"p50": 5000, "p90": 9000, "p99": int(p99_ms * 1000), "max": 400_000},
        "loads": round(loads_per_100),
        "loads_per_100": loads_per_100,
        "cpu_s": {"node 0": 1.5, "mlserver 0": 2.0},
        "client_cpu_s": 0.3,
    }


def system(p99_ms: float, loads: float) -> dict[str, Any]:
    return {
        "startup_s": 5.0,
        "idle_rss_mib": {"node 0": 80.0, "mlserver 0": 130.0},
        "idle_rss_total_mib": 210.0,
        "points": [point(s, r, p99_ms, loads) for s in SHAPES for r in RATES],
    }


def figures(ray: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "machine": {"cpus": 2},
        "config": {"models": 40, "nodes": 2, "slots": 8, "warmup_s": 4.0, "measured_s": 12.0},
        "protocol": "V2 JSON over HTTP",
        "model_file_mib": {"min": 1.9, "max": 2.8},
        "traces": [
            {
                "shape": s,
                "rate_per_s": r,
                "measured": {"measured_requests": 240, "alpha_fitted": 0.82, "cv": 1.0},
                "references_loads_per_100": {
                    "lru_cluster": 30.0,
                    "lru_affinity": 28.0,
                    "belady": 12.5,
                },
            }
            for s in SHAPES
            for r in RATES
        ],
        "systems": {
            "meshserve": system(p99_ms=100.0, loads=25.0),
            "ray": ray if ray is not None else system(p99_ms=200.0, loads=37.5),
            "floor": system(p99_ms=20.0, loads=0.0),
        },
    }


def test_the_latency_table_has_a_row_per_trace_rate_and_system() -> None:
    text = peers_report.table(figures())
    rows = [line for line in text.splitlines() if line.startswith(("zipf-0.8", "bursty"))]
    latency_rows = [r for r in rows if "99/100" in r]
    assert len(latency_rows) == len(SHAPES) * len(RATES) * 3
    assert "V2 JSON over HTTP" in text


def test_the_loads_table_sets_each_system_beside_the_references() -> None:
    text = peers_report.loads_table(figures())
    header, first = text.splitlines()[:2]
    assert "Belady" in header and "meshserve" in header and "ray" in header
    assert "floor" not in header
    assert first.split()[-5:] == ["30.0", "28.0", "12.5", "25.0", "37.5"]


def test_the_process_table_sums_cpu_over_points_and_gives_idle_rss() -> None:
    text = peers_report.process_table(figures())
    node = next(
        line for line in text.splitlines() if line.startswith("meshserve") and "node 0" in line
    )
    # 4 points x 1.5 s; 400 requests -> 15 ms each.
    assert node.split()[-3:] == ["80", "6.00", "15.00"]
    everything = next(
        line for line in text.splitlines() if line.startswith("meshserve") and " all " in line
    )
    assert everything.split()[-3:] == ["210", "14.00", "35.00"]


def test_the_notes_compare_p99_and_loads_with_belady() -> None:
    notes = " ".join(peers_report.notes(figures()))
    assert "p99 meshserve / Ray Serve: 0.5-0.5 over 4 points" in notes
    assert "meshserve loaded 2.00-2.00 × Belady's loads" in notes
    assert "ray loaded 3.00-3.00 × Belady's loads" in notes
    assert "HTTP" in notes
    assert "meshserve at zipf-0.8@20/s: 1 of 100 requests failed (HTTP 503 1;" in notes
    assert "fewer than Belady" not in notes


def test_loads_below_belady_are_explained_by_requests_sharing_a_load() -> None:
    f = figures()
    for p in f["systems"]["meshserve"]["points"]:
        p["loads_per_100"] = 6.25
    notes = " ".join(peers_report.notes(f))
    assert "meshserve loaded 0.50-0.50 × Belady's loads" in notes
    assert "meshserve loaded fewer than Belady at some points" in notes


def test_a_system_that_did_not_run_is_reported_with_why() -> None:
    f = figures(ray={"error": ".runtimes/ray/bin/python is missing: run `make bench`"})
    notes = peers_report.notes(f)
    assert any(n.startswith("ray did not run: ") and "make bench" in n for n in notes)
    text = peers_report.table(f)
    assert " ray " not in text
    assert not any("Ray Serve:" in n for n in notes)


def test_a_p99_plot_per_trace_shape_with_a_line_per_system() -> None:
    plots = peers_report.plots(figures())
    assert [p.filename for p in plots] == ["peers_p99_bursty.png", "peers_p99_zipf-0.8.png"]
    assert [s.label for s in plots[0].series] == ["meshserve", "ray", "floor"]
    assert plots[0].series[0].xs == RATES
    assert plots[0].series[1].ys == (200.0, 200.0)


def test_other_work_on_the_machine_during_the_timed_parts_is_said() -> None:
    f = figures()
    for p in f["systems"]["ray"]["points"]:
        p["others_cpu_s"] = 5.0
    notes = peers_report.contention_notes(f)
    assert len(notes) == 1 and notes[0].startswith("While ray was timed")
    assert "20.0 CPU s" in notes[0]
