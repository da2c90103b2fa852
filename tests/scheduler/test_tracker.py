"""How runner reports fold into a job record (pure): a finished job never changes again."""

from __future__ import annotations

from datetime import UTC, datetime

from scheduler.models import Job
from scheduler.runners.base import StatusReport
from scheduler.tracker import apply_report

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = datetime(2026, 1, 1, 0, 1, tzinfo=UTC)


def job(**fields: object) -> Job:
    defaults: dict[str, object] = {
        "id": "a" * 32,
        "owner": "alice",
        "status": "pending",
        "params": {},
        "runner": "local",
    }
    return Job(**{**defaults, **fields})


def test_running_then_succeeded() -> None:
    j = job()
    assert apply_report(j, StatusReport(j.id, "running", started_at=T0, progress=0.5), max_attempts=3)
    assert (j.status, j.started_at, j.progress) == ("running", T0, 0.5)
    assert apply_report(j, StatusReport(j.id, "succeeded", finished_at=T1), max_attempts=3)
    assert (j.status, j.finished_at, j.progress, j.error) == ("succeeded", T1, 1.0, None)


def test_finished_is_final() -> None:
    j = job(status="cancelled", finished_at=T0)
    assert not apply_report(j, StatusReport(j.id, "failed", error="SIGTERM"), max_attempts=3)
    assert not apply_report(j, StatusReport(j.id, "cancelled"), max_attempts=3)
    assert not apply_report(j, StatusReport(j.id, "queued"), max_attempts=3)
    assert (j.status, j.error, j.finished_at) == ("cancelled", None, T0)


def test_same_report_twice_changes_nothing() -> None:
    j = job()
    report = StatusReport(j.id, "pending", message="Unschedulable: 0/3 nodes have a GPU")
    assert apply_report(j, report, max_attempts=3)
    assert not apply_report(j, report, max_attempts=3)
    assert j.message == "Unschedulable: 0/3 nodes have a GPU"


def test_failed_keeps_the_error_and_clears_the_message() -> None:
    j = job(status="pending", message="pulling")
    apply_report(
        j, StatusReport(j.id, "failed", error="The container was OOMKilled.", finished_at=T1), max_attempts=3
    )
    assert (j.status, j.error, j.message) == ("failed", "The container was OOMKilled.", None)


def test_requeue_until_the_attempt_cap() -> None:
    j = job(status="running", attempts=2, progress=0.4)
    assert apply_report(j, StatusReport(j.id, "queued", message="restarted"), max_attempts=3)
    assert (j.status, j.message, j.progress) == ("queued", "restarted", None)
    j = job(status="running", attempts=3)
    assert apply_report(j, StatusReport(j.id, "queued"), max_attempts=3)
    assert j.status == "failed" and "3 times" in (j.error or "") and j.finished_at is not None
