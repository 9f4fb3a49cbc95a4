"""What a model will take in memory before it is loaded, learned per type.

KServe ModelMesh guesses every model's size as its bytes on disk × 1.25,
whatever it is; a small random forest can take fifty times its file. meshserve
predicts the larger of that guess and the running average of the sizes
measured for models of the same type on this node: a type whose models carry
a large fixed cost (the library's own objects) stops being underestimated
after its first load, and a large file is never predicted below its own size.
The measurement itself comes from the runtime adapter (process memory growth,
GPU memory, or the runtime's own report), already corrected
(:func:`mesh.core.eviction.corrected_size`), and corrects each model's own record
after its load.

(A ratio of measured size to disk size was tried first and dropped: on small
files the fixed cost dominates, and the ratio learned from a 1 KB model
predicted gigabytes for a 100 KB one.)

Pure: frozen values, no I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from mesh.core import eviction


@dataclasses.dataclass(frozen=True)
class TypeAverage:
    """Running average of the measured sizes of one model type."""

    loads: int = 0
    """How many loads were measured."""
    mean_bytes: float = 0.0
    """Mean measured size."""

    def with_measurement(self, size_bytes: int) -> TypeAverage:
        n = self.loads + 1
        return TypeAverage(n, self.mean_bytes + (size_bytes - self.mean_bytes) / n)


@dataclasses.dataclass(frozen=True)
class SizeModel:
    """Per-type averages, and the prediction they give."""

    multiplier: float
    """Bytes on disk × this is the least a model is predicted to take
    (``CacheSettings.size_multiplier``)."""
    minimum: int
    """Floor of every prediction (``CacheSettings.min_model_size_bytes``)."""
    types: Mapping[str, TypeAverage] = dataclasses.field(default_factory=dict)

    def predict(self, model_type: str, disk_bytes: int) -> int:
        guess = eviction.predicted_size(disk_bytes, self.multiplier, self.minimum)
        avg = self.types.get(model_type)
        return max(guess, int(avg.mean_bytes)) if avg else guess

    def learned(self, model_type: str, size_bytes: int) -> SizeModel:
        avg = self.types.get(model_type, TypeAverage()).with_measurement(size_bytes)
        return dataclasses.replace(self, types={**self.types, model_type: avg})
