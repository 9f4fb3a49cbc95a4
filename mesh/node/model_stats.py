"""Inference statistics per model, as Triton's ``ModelStatistics`` reports them.

Triton's clients and dashboards read ``get_inference_statistics``: how many
inferences a model answered, how many failed, and the time they took. A
model in the mesh has copies on several nodes and moves between them, and
MLServer keeps no such counts, so each node counts the calls it made to its
own runtime (:meth:`StatsBook.record`, from the data plane) and the node a
client asks sums every node's counts (:mod:`router.model_statistics`). A
node keeps a model's counts after evicting it, as the model's history.
Inferences are counted per request (the mesh does not decode batches), so
``inference_count`` equals ``execution_count``.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Duration:
    """How many calls, and their total time in nanoseconds."""

    count: int = 0
    ns: int = 0

    def plus(self, other: Duration) -> Duration:
        return Duration(self.count + other.count, self.ns + other.ns)


@dataclasses.dataclass(frozen=True)
class ModelStats:
    """One model's counts, on one node or summed over the mesh."""

    success: Duration = Duration()
    fail: Duration = Duration()
    last_inference_ms: int = 0
    """When the last inference ended (ms since the epoch; 0: never)."""

    @property
    def inference_count(self) -> int:
        return self.success.count

    def plus(self, other: ModelStats) -> ModelStats:
        """The counts of both (two nodes' counts of one model)."""
        return ModelStats(
            self.success.plus(other.success),
            self.fail.plus(other.fail),
            max(self.last_inference_ms, other.last_inference_ms),
        )


class _Counts:
    """One model's live counts on this node (updated in place: the request
    path pays a few integer additions, not new objects)."""

    __slots__ = ("fail_count", "fail_ns", "last_ms", "success_count", "success_ns")

    def __init__(self) -> None:
        self.success_count = self.success_ns = self.fail_count = self.fail_ns = 0
        self.last_ms = 0

    def snapshot(self) -> ModelStats:
        return ModelStats(
            Duration(self.success_count, self.success_ns),
            Duration(self.fail_count, self.fail_ns),
            self.last_ms,
        )


class StatsBook:
    """This node's counts, by model id."""

    def __init__(self) -> None:
        self._by_model: dict[str, _Counts] = {}

    def record(self, model_id: str, ok: bool, ns: int, now_ms: int) -> None:
        """One inference call to this node's runtime ended (``ok``: answered)."""
        counts = self._by_model.get(model_id)
        if counts is None:
            counts = self._by_model[model_id] = _Counts()
        if ok:
            counts.success_count += 1
            counts.success_ns += ns
        else:
            counts.fail_count += 1
            counts.fail_ns += ns
        counts.last_ms = now_ms

    def of(self, model_id: str) -> ModelStats | None:
        counts = self._by_model.get(model_id)
        return counts.snapshot() if counts is not None else None

    def models(self) -> list[str]:
        """Every model this node has counted."""
        return list(self._by_model)
