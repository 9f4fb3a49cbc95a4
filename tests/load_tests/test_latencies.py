"""HDR histograms: percentiles within their precision, exact merging."""

from __future__ import annotations

import pytest

from load_tests import latencies


def test_percentiles_of_a_uniform_spread() -> None:
    r = latencies.Recorder()
    for us in range(1, 10_001):
        r.record_us(us)
    s = r.summary()
    assert s.count == 10_000
    assert s.p50_us == pytest.approx(5_000, rel=0.001)
    assert s.p90_us == pytest.approx(9_000, rel=0.001)
    assert s.p99_us == pytest.approx(9_900, rel=0.001)
    assert s.p999_us == pytest.approx(9_990, rel=0.001)
    assert s.max_us == pytest.approx(10_000, rel=0.001)
    assert s.mean_us == pytest.approx(5_000.5, rel=0.001)


def test_nanoseconds_round_to_microseconds_and_stay_in_range() -> None:
    r = latencies.Recorder()
    r.record_ns(1_499)
    r.record_ns(10)  # below 1 µs counts as 1 µs
    assert r.value_at(100) == 1 and r.value_at(0) == 1
    r.record_ns(10**18)  # beyond the range: clamped, not an error
    assert r.summary().max_us == pytest.approx(latencies.HIGHEST_US, rel=0.001)


def test_merging_equals_recording_everything_in_one() -> None:
    a, b, both = latencies.Recorder(), latencies.Recorder(), latencies.Recorder()
    for us in range(100, 2000, 7):
        a.record_us(us)
        both.record_us(us)
    for us in range(5000, 90_000, 13):
        b.record_us(us)
        both.record_us(us)
    assert latencies.merged([a, b]).summary() == both.summary()


def test_cdf_increases_to_one_and_empty_is_empty() -> None:
    assert latencies.Recorder().cdf() == ()
    assert latencies.Recorder().summary().count == 0
    r = latencies.Recorder()
    for us in range(1, 1001):
        r.record_us(us)
    cdf = r.cdf(50)
    values = [v for v, _ in cdf]
    fractions = [f for _, f in cdf]
    assert values == sorted(values) and fractions == sorted(fractions)
    assert fractions[-1] == 1.0 and values[-1] == pytest.approx(1000, rel=0.001)
    assert dict((f, v) for v, f in cdf)[0.5] == pytest.approx(500, rel=0.002)
