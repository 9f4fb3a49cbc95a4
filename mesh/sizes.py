"""What a model will take in memory before it is loaded, learned per type.

KServe ModelMesh guesses every model's size as its bytes on disk × 1.25,
whatever it is; a random forest can take five times its file, an ONNX model
about its file. meshserve predicts with that multiplier only until it has
measured a model of the same type: from then on it uses the running average
of measured size ÷ disk size for the type. The measurement itself comes from
the runtime adapter (process memory growth, GPU memory, or the runtime's own
report), already corrected (:func:`mesh.cache.corrected_size`).

Pure: frozen values, no I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from mesh import cache


@dataclasses.dataclass(frozen=True)
class TypeAverage:
    """Running average of measured size ÷ disk size for one model type."""

    loads: int = 0
    """How many loads were measured."""
    ratio: float = 0.0
    """Mean measured size per byte on disk."""

    def with_measurement(self, disk_bytes: int, size_bytes: int) -> TypeAverage:
        if disk_bytes <= 0:
            return self
        n = self.loads + 1
        return TypeAverage(n, self.ratio + (size_bytes / disk_bytes - self.ratio) / n)


@dataclasses.dataclass(frozen=True)
class SizeModel:
    """Per-type averages, and the prediction they give."""

    multiplier: float
    """Used for a type never measured (``CacheSettings.size_multiplier``)."""
    minimum: int
    """Floor of every prediction (``CacheSettings.min_model_size_bytes``)."""
    types: Mapping[str, TypeAverage] = dataclasses.field(default_factory=dict)

    def predict(self, model_type: str, disk_bytes: int) -> int:
        avg = self.types.get(model_type)
        ratio = avg.ratio if avg and avg.loads else self.multiplier
        return cache.predicted_size(disk_bytes, ratio, self.minimum)

    def learned(self, model_type: str, disk_bytes: int, size_bytes: int) -> SizeModel:
        avg = self.types.get(model_type, TypeAverage()).with_measurement(disk_bytes, size_bytes)
        return dataclasses.replace(self, types={**self.types, model_type: avg})
