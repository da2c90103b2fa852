"""Nothing stays active for ever: an end the database refused is written once it can be, and a
record that no runner follows is ended with the reason."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, text

from tests.scheduler.conftest import LONG, Client, sign_up_and_in, submit, wait_for
from tests.scheduler.test_local_runner import fake_python

FAST = {"reconcile_interval_seconds": 0.1, "job_lost_after_seconds": 0.5, "report_retry_seconds": 0.1}
# Inside the period-3 bulb: every sample iterates until the periodicity check sees its cycle.
# Seconds of render (as few as 3 on an idle machine), for tests that cancel it soon; a job that
# must never end by itself is a fake interpreter (fake_python).
UNENDING = {**LONG, "width": 2048, "height": 2048, "center_x": -0.1226, "center_y": 0.7449, "zoom": 60}


def set_status(client: TestClient, job_id: str, status: str) -> None:
    with client.app.state.service.engine.begin() as conn:
        conn.execute(text("UPDATE job SET status = :s WHERE id = :id"), {"s": status, "id": job_id})
        conn.execute(text("UPDATE task SET status = :s WHERE job_id = :id"), {"s": status, "id": job_id})


def test_a_record_no_runner_follows_is_ended_with_the_reason(make_client: Client) -> None:
    client = make_client(local_max_concurrent=0, **FAST)  # nothing starts: no runner has the job
    alice = sign_up_and_in(client, "alice")
    job_id = submit(client, alice)["job_id"]
    set_status(client, job_id, "running")  # what a lost end leaves behind
    doc = wait_for(client, job_id, alice, timeout=60)
    assert doc["status"] == "failed" and "no runner followed it" in doc["error"], doc
    assert client.get("/jobs", params={"status": "running"}, headers=alice).json()["count"] == 0


def test_a_job_the_runner_follows_is_left_alone(make_client: Client) -> None:
    client = make_client(**FAST)
    alice = sign_up_and_in(client, "alice")
    job_id = submit(client, alice, **LONG)["job_id"]
    wait_for(client, job_id, alice, ("running",))
    # a long-poll that outlasts the grace several times over: the reconciler looked meanwhile
    doc = client.get(f"/jobs/{job_id}", params={"wait": 2}, headers=alice).json()
    assert doc["status"] == "running", doc
    assert client.delete(f"/jobs/{job_id}", headers=alice).status_code == 200


class WritesRefused:
    """Every write on an engine fails as SQLite fails on a read-only file, while `on`.

    Not a real read-only mount: SQLite shares one wal-index per file among all the connections
    of a process, and one opened read-only stays so while any connection is open, so a
    remount read-write is not seen until all close at once (the service's pollers rarely let
    them). The error is the driver's own, raised where the driver would raise it."""

    def __init__(self, engine: Engine) -> None:
        self.on = False
        event.listen(engine, "before_cursor_execute", self._refuse)

    def _refuse(self, _conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if self.on and statement.lstrip().split(None, 1)[0].upper() in ("INSERT", "UPDATE", "DELETE"):
            raise sqlite3.OperationalError("attempt to write a readonly database")


def test_an_end_the_database_refused_is_written_when_it_can_be(make_client: Client, tmp_path: Path) -> None:
    # a job that never ends by itself (a render inside the period-3 bulb can finish in 3 s here)
    unending = fake_python(tmp_path, "unending", "exec sleep 600")
    client = make_client(job_timeout_seconds=3, job_python=unending, **FAST)
    service = client.app.state.service
    alice = sign_up_and_in(client, "alice")
    job_id = submit(client, alice)["job_id"]
    wait_for(client, job_id, alice, ("running",))

    refused = WritesRefused(service.engine)
    refused.on = True  # from now on every write is refused
    deadline = time.monotonic() + 60
    while job_id not in service.tracker.unwritten:  # it timed out; its end could not be written
        assert time.monotonic() < deadline, "the end was never reported"
        time.sleep(0.05)
    assert not service.runner.live()
    refused.on = False

    doc = wait_for(client, job_id, alice, timeout=60)
    assert doc["status"] == "failed" and "ran longer than 3 seconds" in doc["error"], doc
    assert not service.tracker.unwritten
