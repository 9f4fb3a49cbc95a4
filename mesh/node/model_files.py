"""What becomes of a model's files when its copy here ends or never starts.

A copy that leaves memory while its model is still registered as it was
loaded keeps its files in the puller's disk tier (:mod:`puller.disk_cache`),
so its next load skips the pull; any other copy's files are deleted. A pull
that ran beside a claim the node lost is stopped and its files kept the same
way. The cache manager (:mod:`mesh.node.cache_manager`) decides when; this
module only carries it out, and never raises.
"""

from __future__ import annotations

import asyncio
import logging
import pathlib

from mesh.core import interfaces, records
from mesh.kv import placement_table

log = logging.getLogger(__name__)


class ModelFiles:
    """Keeps or deletes the files of this node's copies."""

    def __init__(
        self, puller: interfaces.ModelPuller, table: placement_table.PlacementTable
    ) -> None:
        self._puller = puller
        self._table = table

    async def retire(self, model_id: str, source: records.ModelRecord, keep: bool) -> bool:
        """Keep the files (``keep``, and the model still registered with
        ``source``) in the disk tier, else delete them; whether they were kept."""
        rec = self._table.model(model_id)
        try:
            if keep and rec is not None and rec.same_source(source):
                return await self._puller.retire(model_id, rec)
            await self._puller.remove(model_id)
        except Exception as e:
            log.warning("files of model %s not kept or removed: %s", model_id, e)
        return False

    async def abandon(
        self, model_id: str, source: records.ModelRecord, pull: asyncio.Task[pathlib.Path]
    ) -> None:
        """Stop ``pull`` (its claim was lost) and keep what it fetched."""
        pull.cancel()
        await asyncio.gather(pull, return_exceptions=True)
        await self.retire(model_id, source, keep=True)
