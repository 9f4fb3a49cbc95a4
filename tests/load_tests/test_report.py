"""The report writer and the entry point, on a tiny cache scenario (no server)."""

from __future__ import annotations

import datetime
import json
import pathlib

import pytest

from load_tests import __main__ as entry
from load_tests import cache_policy, report

NOW = datetime.datetime(2026, 11, 25, 12, 0, tzinfo=datetime.UTC)


def tiny_cache() -> report.ScenarioReport:
    return cache_policy.run(True, ["--models", "60", "--requests", "3000"])


def test_cache_scenario_reports_every_point_and_the_targets() -> None:
    r = tiny_cache()
    points = r.figures["points"]
    assert {(p["alpha"], p["capacity_fraction"]) for p in points} == {
        (a, f) for a in cache_policy.ALPHAS for f in cache_policy.TARGET_FRACTIONS
    }
    for p in points:
        assert p["hit_rate"]["mesh"] <= p["offline_hit_rate"]
        assert p["mesh_vs_lru"] >= 1.0 and p["mesh_lru_equals_lru"]
    assert len(r.figures["shifting_points"]) == len(cache_policy.ALPHAS) * len(
        cache_policy.TARGET_FRACTIONS
    )
    assert set(r.figures["targets"]) == {"mesh_ge_0.9_offline", "mesh_ge_lru"}
    assert "mesh/offline" in r.table and "shifting popularity" in r.table
    assert r.notes[0].startswith("Target mesh ≥ LRU: met") and len(r.notes) == 5
    assert r.notes[-1].startswith("Target mesh loads ≤ 1.3 × Belady's (2 nodes x 8 slots")
    assert "mesh/belady" in r.table
    assert [p.filename for p in r.plots] == [
        f"cache_hit_rate_alpha_{a:.1f}.png" for a in cache_policy.ALPHAS
    ]


def test_write_keeps_each_scenarios_latest_run(tmp_path: pathlib.Path) -> None:
    r = tiny_cache()
    folder = report.write(r, tmp_path, NOW)
    assert folder == tmp_path / "2026-11-25"
    other = report.ScenarioReport("other", "Another", True, {"x": 1}, "x  1", ("a note",))
    report.write(other, tmp_path, NOW)
    results = json.loads((folder / "results.json").read_text())
    assert set(results) == {"cache", "other"}
    assert results["cache"]["figures"]["points"] == json.loads(json.dumps(r.figures["points"]))
    md = (folder / "report.md").read_text()
    assert "## Another (`other`, --quick)" in md and "- a note" in md
    for plot in r.plots:
        png = folder / plot.filename
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"![{plot.filename}]({plot.filename})" in md


def test_fmt_table_aligns_columns() -> None:
    out = report.fmt_table(["name", "value"], [["a", "1"], ["long name", "22"]])
    assert out.splitlines() == ["name       value", "a              1", "long name     22"]


def test_entry_point_ends_with_one_json_line(capsys: pytest.CaptureFixture[str]) -> None:
    code = entry.main(["cache", "--quick", "--no-report", "--models", "50", "--requests", "2000"])
    assert code == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    out = json.loads(last)
    assert out["scenario"] == "cache" and out["quick"] is True
    assert out["figures"]["models"] == 50
