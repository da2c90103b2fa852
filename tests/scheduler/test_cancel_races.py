"""Cancel, DELETE and cancel sent at once to the same job: each answer is true of the job when
it was given: 200, 404 (it is gone), or a 409 naming the end the job really had, never the
stale status read before the other requests changed it."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
from fastapi.testclient import TestClient

from scheduler.runners.base import StatusReport
from tests.scheduler.conftest import Client, sign_up_and_in, submit

ROUNDS = 10
TIMEOUT = 60


def at_once(client: TestClient, auth: dict[str, str], job_id: str) -> list[httpx.Response]:
    cancel = ("POST", f"/jobs/{job_id}/cancel")
    calls = [cancel, ("DELETE", f"/jobs/{job_id}"), cancel]
    start = threading.Barrier(len(calls))

    def one(method: str, path: str) -> httpx.Response:
        start.wait(TIMEOUT)
        return client.request(method, path, headers=auth)

    with ThreadPoolExecutor(len(calls)) as pool:
        return [f.result(TIMEOUT) for f in [pool.submit(one, *call) for call in calls]]


def test_cancel_delete_cancel_at_once_never_contradict(make_client: Client) -> None:
    client = make_client(local_max_concurrent=0)  # the jobs stay queued: only the requests race
    alice = sign_up_and_in(client, "alice")
    for _ in range(ROUNDS):
        job_id = submit(client, alice)["job_id"]
        cancel, delete, again = at_once(client, alice, job_id)
        assert delete.status_code in (200, 404), delete.text
        for answer in (cancel, again):
            assert answer.status_code in (200, 404, 409), answer.text
            if answer.status_code == 409:  # it read the job after the other cancel ended it
                assert "already finished (cancelled)" in answer.json()["detail"], answer.text
            if answer.status_code == 200:
                assert answer.json()["status"] == "cancelled"
        assert client.get(f"/jobs/{job_id}", headers=alice).status_code == 404


def test_a_cancel_whose_job_is_deleted_meanwhile_is_a_404(make_client: Client) -> None:
    """The cancel read the job (queued), then a DELETE removed it before the cancel re-read it:
    the job is gone, and the answer says so, not 'already finished (queued)'."""
    client = make_client(local_max_concurrent=0)
    alice = sign_up_and_in(client, "alice")
    job_id = submit(client, alice)["job_id"]
    tracker = client.app.state.service.tracker
    report, inside, deleted = tracker.report, threading.Event(), threading.Event()

    async def held_report(status: StatusReport) -> None:  # the cancel's report waits for the DELETE
        if not inside.is_set():
            inside.set()
            await asyncio.to_thread(deleted.wait, TIMEOUT)
        await report(status)

    tracker.report = held_report
    with ThreadPoolExecutor(1) as pool:
        cancel = pool.submit(client.post, f"/jobs/{job_id}/cancel", headers=alice)
        assert inside.wait(TIMEOUT)
        assert client.delete(f"/jobs/{job_id}", headers=alice).status_code == 200
        deleted.set()
        answer = cancel.result(TIMEOUT)
    assert answer.status_code == 404, answer.text
    assert answer.json()["detail"] == f"No job {job_id} here."


def test_two_deletes_at_once_remove_the_job_once(make_client: Client) -> None:
    client = make_client(local_max_concurrent=0)
    alice = sign_up_and_in(client, "alice")
    for _ in range(ROUNDS):
        job_id = submit(client, alice)["job_id"]
        start = threading.Barrier(2)

        def delete(job_id: str = job_id, start: threading.Barrier = start) -> int:
            start.wait(TIMEOUT)
            return client.delete(f"/jobs/{job_id}", headers=alice).status_code

        with ThreadPoolExecutor(2) as pool:
            codes = sorted(f.result(TIMEOUT) for f in [pool.submit(delete) for _ in range(2)])
        assert codes == [200, 404], codes  # the second found nothing left to delete
