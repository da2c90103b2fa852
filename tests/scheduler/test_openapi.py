"""/openapi.json declares exactly what each operation answers (docs/design.md, "HTTP API"): every
status, with the body's schema and the headers that come with it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient
from sqlmodel import Session

from scheduler import job_status
from scheduler.runners.base import StatusReport
from tests.scheduler.conftest import LONG, TINY, Client, sign_up_and_in, submit, wait_for
from tests.scheduler.openapi import Answer, answer_of, assert_declared, declared, declared_answers, provoked
from tests.scheduler.test_http_e2e import serve
from tests.scheduler.test_idempotency import hold_key


def test_submit_declares_every_answer_it_gives(make_client: Client) -> None:
    client: TestClient = make_client(local_max_concurrent=0, max_queued_jobs=2, max_active_jobs_per_user=1,
                                     max_job_iterations=1e6, queue_full_retry_after_seconds=7)
    alice, bob, carol = (sign_up_and_in(client, name) for name in ("alice", "bob", "carol"))
    answers = {
        "queued": client.post("/jobs", json=TINY, headers=alice),
        "no token": client.post("/jobs", json=TINY),
        "too big": client.post("/jobs", content=b" " * (64 * 1024 + 1), headers=alice),
        "bad parameter": client.post("/jobs", json={"width": -1}, headers=carol),
        "not JSON": client.post("/jobs", content=b"{", headers={**carol, "Content-Type": "application/json"}),
        "no GPU": client.post("/jobs", json={**TINY, "device": "gpu"}, headers=carol),
        "too costly": client.post("/jobs", json={**TINY, "width": 400, "height": 300, "max_iter": 500},
                                  headers=carol),
        "too many of yours": client.post("/jobs", json=TINY, headers=alice),
        "key in progress": in_progress(client, carol),
    }
    assert client.post("/jobs", json=TINY, headers=bob).status_code == 202  # the queue is full now
    answers["queue full"] = client.post("/jobs", json=TINY, headers=carol)
    statuses = {why: r.status_code for why, r in answers.items()}
    assert statuses == {"queued": 202, "no token": 401, "too big": 413, "bad parameter": 422, "not JSON": 422,
                        "no GPU": 422, "too costly": 422, "too many of yours": 429, "queue full": 429,
                        "key in progress": 409}
    for response in answers.values():
        assert_declared(client, response, "/jobs")
    assert answers["queue full"].headers["Retry-After"] == "7"
    assert "Retry-After" in declared_answers(client, "POST", "/jobs")["429"]["headers"]
    # and nothing more is declared: 503 (the database unusable) is answered in test_faults.py
    assert set(declared_answers(client, "POST", "/jobs")) == {str(s) for s in statuses.values()} | {"503"}


def in_progress(client: TestClient, auth: dict[str, str]) -> httpx.Response:
    """A submit whose Idempotency-Key a first request still holds (taken as it would take it)."""
    owner = client.get("/auth/me", headers=auth).json()["username"]
    hold_key(client, owner, "in-progress", TINY)
    return client.post("/jobs", json=TINY, headers={**auth, "Idempotency-Key": "in-progress"})


def on_s3(minio_env: dict[str, str]) -> dict[str, str]:
    """Settings that keep results in the S3 of `minio_env` (moto's server)."""
    return {name.lower(): value for name, value in minio_env.items() if name != "MINIO_SECURE"}


AUTH_OPERATIONS = ("/auth/sign-up", "/auth/sign-in", "/auth/me")
JOB_OPERATIONS = ("/jobs", "/jobs/{job_id}", "/jobs/{job_id}/cancel", "/jobs/{job_id}/logs",
                  "/jobs/{job_id}/result/list", "/jobs/{job_id}/result", "/jobs/{job_id}/retry")
EVENT_OPERATIONS = ("/events", "/jobs/{job_id}/events")
PROBES = ("/healthz", "/readyz", "/metrics")


def test_the_tests_below_cover_every_operation(client: TestClient) -> None:
    covered = {*AUTH_OPERATIONS, *JOB_OPERATIONS, *EVENT_OPERATIONS, *PROBES}
    assert set(client.app.openapi()["paths"]) == covered  # a new one: provoke its answers here


def assert_all_given(client: TestClient, *operations: str) -> None:
    given_all(client.app.openapi(), client.app.state.answers, *operations)


def given_all(doc: dict[str, Any], answers: list[Answer], *operations: str) -> None:
    """Each answer that the operations declare was given, but 503 (a fault: test_faults.py), and
    no other (make_client and serve check that every answer a test provokes is declared)."""
    expected = {answer for answer in declared(doc, *operations) if answer[2] != "503"}
    assert provoked(doc, answers, *operations) == expected


def test_auth_operations_give_every_answer_they_declare(make_client: Client) -> None:
    client = make_client(signups_per_minute=3, signin_attempts_per_minute=2)
    alice, bob = ({"username": name, "password": "correct-horse"} for name in ("alice", "bob"))
    big, not_json = b" " * (64 * 1024 + 1), {"content": b"{", "headers": {"Content-Type": "application/json"}}
    codes = [client.post("/auth/sign-up", json=body).status_code for body in (alice, bob, alice, alice)]
    assert codes == [201, 201, 409, 429]  # the fourth sign-up from this address is one too many
    codes = [
        client.post("/auth/sign-up", json={"username": "x", "password": ""}).status_code,  # before throttling
        *(client.post(path, content=big).status_code for path in ("/auth/sign-up", "/auth/sign-in")),
        *(client.post(path, **not_json).status_code for path in ("/auth/sign-up", "/auth/sign-in")),
    ]
    assert codes == [422, 413, 413, 422, 422]
    signed_in = client.post("/auth/sign-in", json=alice)
    token = {"Authorization": f"Bearer {signed_in.json()['access_token']}"}
    codes = [
        client.post("/auth/sign-in").status_code,  # no credentials
        client.post("/auth/sign-in", json={**alice, "password": "wrong-horse"}).status_code,
        client.post("/auth/sign-in", json=alice).status_code,  # the third attempt for alice from here
        client.get("/auth/me", headers=token).status_code,
        client.get("/auth/me").status_code,
    ]
    assert [signed_in.status_code, *codes] == [200, 401, 401, 429, 200, 401]
    assert_all_given(client, *AUTH_OPERATIONS)


def test_job_operations_give_every_answer_they_declare(
    make_client: Client, minio_env: dict[str, str]
) -> None:
    client = make_client(max_active_jobs_per_user=1, **on_s3(minio_env))  # S3: for the 307 of ?redirect=true
    alice = sign_up_and_in(client, "alice")
    done = submit(client, alice)["job_id"]
    wait_for(client, done, alice)
    active = submit(client, alice, **LONG)["job_id"]
    missing = "0" * 32
    big = b" " * (64 * 1024 + 1)
    not_json = {"content": b"{", "headers": {**alice, "Content-Type": "application/json"}}
    codes = [
        client.post("/jobs", json=TINY, headers=alice).status_code,  # one unfinished job is the most
        client.post("/jobs", json=TINY).status_code,
        client.post("/jobs", content=big, headers=alice).status_code,
        client.post("/jobs", **not_json).status_code,
        in_progress(client, alice).status_code,
        client.get("/jobs", headers=alice).status_code,
        client.get("/jobs").status_code,
        client.get("/jobs", params={"limit": 0}, headers=alice).status_code,
        client.get(f"/jobs/{done}", params={"wait": -1}, headers=alice).status_code,
        client.post(f"/jobs/{done}/cancel", headers=alice).status_code,  # it has finished
    ]
    assert codes == [429, 401, 413, 422, 409, 200, 401, 422, 422, 409]
    for method, path in [("GET", ""), ("GET", "/logs"), ("GET", "/result/list"), ("GET", "/result"),
                         ("HEAD", "/result"), ("POST", "/cancel")]:
        mine = active if method == "POST" else done  # the finished one cannot be cancelled
        codes = [client.request(method, f"/jobs/{job}{path}", headers=auth).status_code
                 for job, auth in ((mine, alice), (done, {}), (missing, alice))]
        assert codes == [200, 401, 404], (method, path)
    etag = client.get(f"/jobs/{done}", headers=alice).headers["ETag"]
    assert client.get(f"/jobs/{done}", headers={**alice, "If-None-Match": etag}).status_code == 304
    result = f"/jobs/{done}/result"
    for method in ("GET", "HEAD"):
        etag = client.request(method, result, headers=alice).headers["ETag"]
        codes = [
            client.request(method, result, headers={**alice, "Range": "bytes=0-9"}).status_code,
            client.request(method, result, headers={**alice, "If-None-Match": etag}).status_code,
            client.request(method, result, headers={**alice, "Range": "bytes=99999999-"}).status_code,
            client.request(method, result, params={"file": "../x"}, headers=alice).status_code,
            client.request(method, f"/jobs/{active}/result", headers=alice).status_code,  # cancelled
            client.request(method, result, params={"redirect": "true"}, headers=alice,
                           follow_redirects=False).status_code,
        ]
        assert codes == [206, 304, 416, 422, 409, 307], method
    codes = [client.delete(f"/jobs/{job}", headers=auth).status_code for job, auth in
             ((done, alice), (active, {}), (missing, alice))]
    assert codes == [200, 401, 404]
    array = submit(client, alice, **{**LONG, "split": 2})["job_id"]
    with Session(client.app.state.service.engine) as session:  # a task failed for good, as if
        job_status.record(session, StatusReport(array, "failed", error="exit 1"), max_attempts=3)
    answers = [client.post(f"/jobs/{job}/retry", headers=auth) for job, auth in
               ((array, alice), (array, alice), (array, {}), (missing, alice))]
    assert [a.status_code for a in answers] == [200, 409, 401, 404], [a.text for a in answers]
    client.delete(f"/jobs/{array}", headers=alice)
    assert_all_given(client, *JOB_OPERATIONS)


def test_probes_give_every_answer_they_declare(client: TestClient) -> None:
    paths = ("/healthz", "/readyz", "/readyz?exclude=disk", "/metrics")
    codes = [client.get(path).status_code for path in paths]
    assert codes == [200, 200, 422, 200]
    assert_all_given(client, *PROBES)


def test_event_streams_give_every_answer_they_declare(tmp_path: Path, opencl_cache: Path) -> None:
    with serve(tmp_path / "data", opencl_cache, EVENTS_MAX_STREAMS_PER_USER="1") as (http, _proc):
        alice = sign_up_and_in(http, "alice")
        done = submit(http, alice)["job_id"]
        wait_for(http, done, alice)
        streams = ("/events", f"/jobs/{done}/events")
        answers = [answer for path in streams
                   for answer in (http.get(path), http.get(path, headers={**alice, "Last-Event-ID": "x"}))]
        answers.append(http.get(f"/jobs/{'0' * 32}/events", headers=alice))
        with http.stream("GET", "/events", headers=alice) as one:  # the most a user may have open
            answers += [one, *(http.get(path, headers=alice) for path in streams)]
        answers.append(opened(http, streams[1], alice))  # once the server has seen the first closed
        assert [r.status_code for r in answers] == [401, 422, 401, 422, 404, 200, 429, 429, 200]
        # the finished job's stream ends by itself
        assert answers[-1].headers["content-type"].startswith("text/event-stream")
        doc = http.get("/openapi.json").json()
        given_all(doc, [answer_of(r) for r in answers], *EVENT_OPERATIONS)


def opened(http: httpx.Client, path: str, auth: dict[str, str], timeout: float = 30) -> httpx.Response:
    """GET `path` until it is not refused for too many streams, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while (response := http.get(path, headers=auth)).status_code == 429:
        assert time.monotonic() < deadline, f"{path} still refused after {timeout} s: {response.text}"
        time.sleep(0.05)
    return response
