"""The watch's bookkeeping (:mod:`mesh.kv.etcd_watch_position`), response by
response: where the watch resumes, and when etcd3aio's own reconnect skipped
events so that the watch must be re-opened."""

from __future__ import annotations

from mesh.kv.etcd_watch_position import WatchPosition, WatchStep, next_position


def created(position: WatchPosition, header: int) -> tuple[WatchPosition, WatchStep]:
    return next_position(position, created=True, header_revision=header, last_event_revision=None)


def progress(position: WatchPosition, header: int) -> tuple[WatchPosition, WatchStep]:
    return next_position(position, created=False, header_revision=header, last_event_revision=None)


def test_a_watch_from_now_starts_after_the_revision_of_its_creation() -> None:
    position, step = created(WatchPosition(0, 0), 7)
    assert step is WatchStep.CREATED
    assert position == WatchPosition(next_revision=8, library_next=8, created=True)


def test_a_watch_from_a_revision_keeps_it_until_events_arrive() -> None:
    position, step = created(WatchPosition(5, 5), 10)
    assert step is WatchStep.CREATED
    assert position == WatchPosition(next_revision=5, library_next=11, created=True)


def test_events_move_the_resume_point_past_the_last_event() -> None:
    position, step = next_position(
        WatchPosition(5, 11, created=True),
        created=False,
        header_revision=12,
        last_event_revision=9,
    )
    assert step is WatchStep.EVENTS
    assert position == WatchPosition(next_revision=10, library_next=13, created=True)


def test_a_progress_notification_moves_the_resume_point_to_its_revision() -> None:
    position, step = progress(WatchPosition(5, 5, created=True), 20)
    assert step is WatchStep.PROGRESS
    assert position == WatchPosition(next_revision=21, library_next=21, created=True)
    # A progress notification never moves the resume point back.
    later, _ = progress(WatchPosition(30, 30, created=True), 20)
    assert later.next_revision == 30


def test_a_reconnect_where_the_watch_stands_resumes_it() -> None:
    position, step = created(WatchPosition(6, 6, created=True), 7)
    assert step is WatchStep.RESUMED
    assert position == WatchPosition(next_revision=6, library_next=8, created=True)


def test_a_reconnect_past_undelivered_events_asks_for_a_reopen_from_the_first_of_them() -> None:
    before = WatchPosition(5, 11, created=True)
    position, step = created(before, 12)
    assert step is WatchStep.REOPEN
    assert position == before
