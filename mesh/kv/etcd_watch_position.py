"""Where an etcd watch stands, and what each of its responses means: pure.

etcd3aio re-opens a broken watch stream on its own, from ``header.revision +
1`` of the last response, which can skip the events of a catch-up that was
cut short. :class:`mesh.kv.etcd_kv.EtcdKV` tracks the first revision it has
really delivered and re-opens the watch itself when etcd3aio's resume point
is past it. The bookkeeping is this module's one function over a frozen
position, so every case is tested without etcd or a stream.
"""

from __future__ import annotations

import dataclasses
import enum


class WatchStep(enum.Enum):
    """What one response of a watch stream means to its reader."""

    CREATED = "created"
    """etcd created the stream: nothing to deliver yet."""
    RESUMED = "resumed"
    """etcd3aio re-created the stream at the first revision not delivered."""
    REOPEN = "reopen"
    """etcd3aio re-created the stream past events never delivered: re-open it
    from the first of them."""
    PROGRESS = "progress"
    """A progress notification: every event up to its revision was sent."""
    EVENTS = "events"
    """Events to deliver."""


@dataclasses.dataclass(frozen=True)
class WatchPosition:
    """Where one watch stream stands."""

    next_revision: int
    """The first revision not yet delivered, from the events really delivered
    (0: "from now on", until etcd creates the stream)."""
    library_next: int
    """Where etcd3aio would resume after a reconnect of its own."""
    created: bool = False
    """Whether etcd created the stream once already."""


def next_position(
    position: WatchPosition,
    *,
    created: bool,
    header_revision: int,
    last_event_revision: int | None,
) -> tuple[WatchPosition, WatchStep]:
    """The position after one watch response that is neither a compaction nor a
    cancellation, and what the response means. ``last_event_revision``: the
    mod revision of the response's last event; ``None`` when it has none."""
    next_rev = position.next_revision
    if created and next_rev <= 0:
        # A watch "from now" covers what follows its creation.
        next_rev = header_revision + 1
    if created:
        if position.created and position.library_next != next_rev:
            # etcd3aio reconnected from a revision past the last event we
            # delivered: re-open from ours.
            return dataclasses.replace(position, next_revision=next_rev), WatchStep.REOPEN
        step = WatchStep.RESUMED if position.created else WatchStep.CREATED
        return WatchPosition(next_rev, header_revision + 1, created=True), step
    library_next = header_revision + 1
    if last_event_revision is None:
        # A progress notification: every event up to the header's revision
        # has been sent.
        progressed = max(next_rev, header_revision + 1)
        return WatchPosition(progressed, library_next, position.created), WatchStep.PROGRESS
    return WatchPosition(last_event_revision + 1, library_next, position.created), WatchStep.EVENTS
