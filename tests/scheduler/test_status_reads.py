"""The status poll's fast path (api/status_reads.py): it answers a signed-in user's GET /jobs/{id}
exactly as the route does, and leaves every other request to the route."""

from __future__ import annotations

import sqlite3
import time

import pytest
from fastapi import HTTPException
from fastapi.testclient import TestClient

from scheduler.api.deps import get_owned_job
from tests.scheduler.conftest import Client, sign_up_and_in, submit


def planned_job(client: TestClient, auth: dict[str, str]) -> str:
    """A queued job whose document no longer changes (the dispatcher has planned it)."""
    job_id = submit(client, auth)["job_id"]
    deadline = time.monotonic() + 30
    while client.get(f"/jobs/{job_id}?wait=0", headers=auth).json()["message"] is None:
        assert time.monotonic() < deadline, "the dispatcher never planned the job"
        time.sleep(0.05)
    return job_id


def polls(client: TestClient, code: int) -> float:
    """GET /jobs/{job_id} answers with this status so far, as /metrics counts them."""
    series = f'http_request_duration_seconds_count{{method="GET",route="/jobs/{{job_id}}",status="{code}"}} '
    found = [line for line in client.get("/metrics").text.splitlines() if line.startswith(series)]
    return float(found[0].split()[-1]) if found else 0.0


def test_a_poll_is_answered_as_the_route_answers_it(make_client: Client) -> None:
    client = make_client(local_max_concurrent=0)  # the job stays queued
    alice = sign_up_and_in(client, "alice")
    job_id = planned_job(client, alice)
    before = {code: polls(client, code) for code in (200, 304)}
    fast = client.get(f"/jobs/{job_id}", headers=alice)
    routed = client.get(f"/jobs/{job_id}?wait=0", headers=alice)  # a query string: the route answers
    assert fast.status_code == routed.status_code == 200
    assert fast.content == routed.content and fast.json()["job_id"] == job_id
    assert dict(fast.headers) == dict(routed.headers)  # ETag, type, length, the security headers
    etag = fast.headers["etag"]
    fast = client.get(f"/jobs/{job_id}", headers={**alice, "If-None-Match": etag})
    routed = client.get(f"/jobs/{job_id}?wait=0", headers={**alice, "If-None-Match": etag})
    assert fast.status_code == routed.status_code == 304
    assert fast.content == routed.content == b"" and dict(fast.headers) == dict(routed.headers)
    # labelled with the route's template, as routed answers are
    assert {code: polls(client, code) - before[code] for code in (200, 304)} == {200: 2, 304: 2}


def test_only_the_owners_plain_get_takes_the_fast_path(make_client: Client) -> None:
    client = make_client(local_max_concurrent=0)
    alice, bob = sign_up_and_in(client, "alice"), sign_up_and_in(client, "bob")
    job_id = planned_job(client, alice)

    def routed() -> None:
        raise HTTPException(503, "routed")  # a status the route declares (make_client checks that)

    client.app.dependency_overrides[get_owned_job] = routed
    path = f"/jobs/{job_id}"
    assert client.get(path, headers=alice).status_code == 200
    assert client.get(path, headers={**alice, "If-None-Match": "*"}).status_code == 304
    to_the_route = [
        client.get(path + "?wait=0", headers=alice),
        client.get(path, headers=bob),  # another user's job
        client.get(f"/jobs/{'0' * 32}", headers=alice),  # no such job
        client.get(path),  # no token
        client.get(path, headers={"Authorization": f"Basic {alice['Authorization'].split()[1]}"}),
        client.get(path, headers={"Authorization": alice["Authorization"] + "x"}),  # a bad signature
    ]
    assert [answer.json()["detail"] for answer in to_the_route] == ["routed"] * 6
    assert client.get(path + "/", headers=alice).json()["detail"].startswith("There is no /jobs/")
    client.app.dependency_overrides.clear()
    assert client.head(path, headers=alice).status_code == 405  # as before: the route takes GET only


def test_a_poll_the_loop_cannot_read_now_is_read_in_a_thread(
    make_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = make_client(local_max_concurrent=0)
    alice = sign_up_and_in(client, "alice")
    job_id = planned_job(client, alice)
    expected = client.get(f"/jobs/{job_id}", headers=alice)
    loop_reads = client.app.state.service.job_reads.loop
    assert loop_reads is not None  # SQLite: the poll reads on the loop

    def locked(job_id: str, owner: str) -> None:
        raise sqlite3.OperationalError("database is locked")  # what busy_timeout 0 gives at once

    monkeypatch.setattr(loop_reads, "read_owned_job", locked)
    answer = client.get(f"/jobs/{job_id}", headers=alice)
    assert answer.status_code == 200 and answer.content == expected.content
    assert answer.headers["etag"] == expected.headers["etag"]
