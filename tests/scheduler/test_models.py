"""The job document (JobPublic.of): what it shows of the stored scheduling fields."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from scheduler.models import Job, JobPublic

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)


def job(status: str, *, start: datetime | None = None, finish: datetime | None = None) -> Job:
    return Job(id="a" * 32, owner="alice", status=status, params={}, runner="local",
               queue_position=1 if status == "queued" else None,
               estimated_start_at=start, estimated_finish_at=finish)


@pytest.mark.parametrize(
    ("status", "start", "finish", "shown_start", "shown_finish"),
    [
        ("queued", NOW + SECOND, NOW + 9 * SECOND, NOW + SECOND, NOW + 9 * SECOND),
        ("queued", NOW, NOW + SECOND, NOW, NOW + SECOND),  # due this instant: still ahead
        ("queued", NOW - SECOND, NOW + 9 * SECOND, None, NOW + 9 * SECOND),  # should have started
        ("queued", NOW - 9 * SECOND, NOW - SECOND, None, None),
        ("queued", None, None, None, None),  # unknown
        ("running", None, NOW + SECOND, None, NOW + SECOND),
        ("running", None, NOW - SECOND, None, None),  # overran its estimate
        ("pending", NOW - 9 * SECOND, NOW - SECOND, None, None),
        ("succeeded", None, NOW + SECOND, None, None),  # finished: no estimate at all
    ],
)
def test_estimates_in_the_past_are_null(
    status: str, start: datetime | None, finish: datetime | None,
    shown_start: datetime | None, shown_finish: datetime | None,
) -> None:
    doc = JobPublic.of(job(status, start=start, finish=finish), now=NOW)
    assert (doc.estimated_start_at, doc.estimated_finish_at) == (shown_start, shown_finish)


def test_times_stored_without_an_offset_are_compared_as_utc() -> None:
    """SQLite hands back naive datetimes (UTC): they are compared with `now` as UTC times."""
    naive = (NOW - SECOND).replace(tzinfo=None)
    doc = JobPublic.of(job("queued", start=naive, finish=naive + 2 * SECOND), now=NOW)
    assert doc.estimated_start_at is None and doc.estimated_finish_at == NOW + SECOND


def test_the_document_is_as_of_the_clock_by_default() -> None:
    now = datetime.now(UTC)
    doc = JobPublic.of(job("queued", start=now - timedelta(hours=1), finish=now + timedelta(hours=1)))
    assert doc.estimated_start_at is None and doc.estimated_finish_at == now + timedelta(hours=1)
    assert doc.model_dump(mode="json")["estimated_start_at"] is None
