"""A node's inference counts per model, and their sum over nodes."""

from __future__ import annotations

from mesh.node import model_stats


def test_answers_and_refusals_are_counted_with_their_time() -> None:
    book = model_stats.StatsBook()
    book.record("iris", True, 1_000, now_ms=10)
    book.record("iris", True, 3_000, now_ms=20)
    book.record("iris", False, 500, now_ms=30)
    stats = book.of("iris")
    assert stats == model_stats.ModelStats(
        model_stats.Duration(2, 4_000), model_stats.Duration(1, 500), 30
    )
    assert stats.inference_count == 2
    assert book.of("wine") is None and book.models() == ["iris"]


def test_two_nodes_counts_sum_and_keep_the_latest_inference() -> None:
    a = model_stats.ModelStats(model_stats.Duration(2, 10), model_stats.Duration(), 100)
    b = model_stats.ModelStats(model_stats.Duration(3, 5), model_stats.Duration(1, 7), 50)
    assert a.plus(b) == model_stats.ModelStats(
        model_stats.Duration(5, 15), model_stats.Duration(1, 7), 100
    )
