"""Whether a node may start loading a model: the load-claim rule.

Before a node pulls and loads a model it writes its copy as LOADING into the
model's record, with a compare-and-set, so that one load happens
cluster-wide however many nodes receive a request for a cold model at once.
The rule for that write is here, a pure function of the record as read and
the live instances: the node claims the load unless another live node already
holds or loads the model, or, for an extra copy (beside another node's, for
load or a minimum), unless the model has its maximum number of copies.
Refusals are :class:`mesh.core.errors.Reroute`: the request goes to the copy
that exists.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from mesh.core import errors, placement, records


@dataclasses.dataclass(frozen=True)
class LoadClaim:
    """One node's wish to load one model."""

    model_id: str
    instance_id: str
    """The node that would load it."""
    extra_copy: bool = False
    """Loaded on purpose beside another node's copy (for load, or a minimum)."""
    ignore: frozenset[str] = frozenset()
    """Instances whose copies the claim disregards (the router found them dead)."""


def claimed(
    claim: LoadClaim,
    model: records.ModelRecord,
    instances: Mapping[str, records.InstanceRecord],
    now_ms: int,
) -> records.ModelRecord:
    """``model`` with ``claim``'s copy LOADING since ``now_ms``; raises
    :class:`mesh.core.errors.Reroute` when another live node (one of
    ``instances`` not in ``claim.ignore``) holds or loads the model and this
    is not an extra copy, or when an extra copy would pass ``max_copies``."""
    live = {i: x for i, x in instances.items() if i not in claim.ignore}
    others = [i for i in placement.live_copies(model, live) if i != claim.instance_id]
    if others and not claim.extra_copy:
        raise errors.Reroute(f"model {claim.model_id!r} is already on {others[0]}")
    if claim.extra_copy and model.max_copies and len(others) >= model.max_copies:
        raise errors.Reroute(f"model {claim.model_id!r} already has {len(others)} copies")
    return model.with_copy(claim.instance_id, records.CopyInfo(records.CopyState.LOADING, now_ms))
