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


class StatsBook:
    """This node's counts, by model id."""

    def __init__(self) -> None:
        self._by_model: dict[str, ModelStats] = {}

    def record(self, model_id: str, ok: bool, ns: int, now_ms: int) -> None:
        """One inference call to this node's runtime ended (``ok``: answered)."""
        old = self._by_model.get(model_id, _NONE)
        done = Duration(1, ns)
        self._by_model[model_id] = ModelStats(
            old.success.plus(done) if ok else old.success,
            old.fail if ok else old.fail.plus(done),
            now_ms,
        )

    def of(self, model_id: str) -> ModelStats | None:
        return self._by_model.get(model_id)

    def models(self) -> list[str]:
        """Every model this node has counted."""
        return list(self._by_model)


_NONE = ModelStats()
