"""Nothing stays active for ever: an end the database refused is written once it can be, and a
record that no runner follows is ended with the reason."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from tests.scheduler.conftest import LONG, Client, sign_up_and_in, submit, wait_for

FAST = {"reconcile_interval_seconds": 0.1, "job_lost_after_seconds": 0.5, "report_retry_seconds": 0.1}


def set_status(client: TestClient, job_id: str, status: str) -> None:
    with client.app.state.service.engine.begin() as conn:
        conn.execute(text("UPDATE job SET status = :s WHERE id = :id"), {"s": status, "id": job_id})


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


@pytest.fixture
def read_only(tmp_path: Path):  # noqa: ANN201 - a context switch for DATA_DIR
    """Makes DATA_DIR read-only for connections opened from then on (a bind mount over it)."""
    mounted: list[str] = []

    def switch(data: Path, on: bool) -> None:
        if on:
            for args in (["--bind", str(data), str(data)], ["-o", "remount,bind,ro", str(data)]):
                done = subprocess.run(["mount", *args], capture_output=True, text=True)
                if done.returncode:
                    pytest.skip(f"cannot bind-mount (needs root): {done.stderr.strip()}")
            mounted.append(str(data))
        else:
            subprocess.run(["umount", "-l", mounted[-1]], check=True)  # lazily: the DB has it open
            mounted.pop()

    yield switch
    for path in mounted:
        subprocess.run(["umount", "-l", path], check=False)


def test_an_end_the_database_refused_is_written_when_it_can_be(make_client: Client, read_only) -> None:  # noqa: ANN001
    client = make_client(job_timeout_seconds=3, **FAST)
    service = client.app.state.service
    data = Path(service.settings.data_dir)
    alice = sign_up_and_in(client, "alice")
    job_id = submit(client, alice, **LONG)["job_id"]
    wait_for(client, job_id, alice, ("running",))

    read_only(data, True)
    service.engine.dispose()  # from now on every write is refused
    deadline = time.monotonic() + 60
    while job_id not in service.tracker.unwritten:  # it timed out; its end could not be written
        assert time.monotonic() < deadline, "the end was never reported"
        time.sleep(0.05)
    assert not service.runner.live()
    read_only(data, False)
    service.engine.dispose()

    doc = wait_for(client, job_id, alice, timeout=60)
    # its end is whichever came first: the timeout, or (a fast render) the read-only results
    ended_by = ("ran longer than 3 seconds", "storage failure")
    assert doc["status"] == "failed" and any(why in doc["error"] for why in ended_by), doc
    assert not service.tracker.unwritten
