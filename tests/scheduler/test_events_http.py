"""Server-Sent Events over real HTTP (`python -m scheduler` under uvicorn on 127.0.0.1): a job
followed to its end, resumption with Last-Event-ID, keep-alives, isolation, and a second
replica on the same database."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.scheduler.conftest import LONG, TINY
from tests.scheduler.sse import collect, parse
from tests.scheduler.test_http_e2e import serve, sign_in, wait_status

FINISHED = ("succeeded", "failed", "cancelled")


def submit(client: httpx.Client, auth: dict[str, str], **params: object) -> str:
    response = client.post("/jobs", json={**TINY, **params}, headers=auth)
    assert response.status_code == 202, response.text
    return response.json()["job_id"]


def test_a_job_stream_follows_it_to_its_end_then_resumes_without_repeats_or_gaps(
    tmp_path: Path, opencl_cache: Path
) -> None:
    with serve(tmp_path / "data", opencl_cache) as (client, _proc):
        auth = sign_in(client)
        job_id = submit(client, auth, width=320, height=240)
        events, ended = collect(client, f"/jobs/{job_id}/events", auth)
        assert ended  # the server closed the stream after the terminal status
        docs = [e.document for e in events]
        assert {d["job_id"] for d in docs} == {job_id}
        assert docs[-1]["status"] == "succeeded" and docs[-1]["progress"] == 1.0
        assert [d["status"] for d in docs if d["status"] in FINISHED] == ["succeeded"]
        ids = [int(e.id or 0) for e in events]
        assert ids == sorted(set(ids)) and all(ids)  # every event has an id, increasing
        assert docs[-1] == client.get(f"/jobs/{job_id}", headers=auth).json()

        # the whole log of the job, from before its first event
        everything, ended = collect(client, f"/jobs/{job_id}/events", auth, last_event_id="0")
        assert ended and everything[-len(events) + 1 :] == events[1:]
        # a fresh stream starts with the job as it is now: the logged document of that moment,
        # but for an estimate that has passed since (null now, docs/design.md)
        first, logged = events[0], everything[-len(events)]
        assert first.id == logged.id
        passed = {k: None for k in ("estimated_start_at", "estimated_finish_at") if first.document[k] is None}
        assert first.document == logged.document | passed
        assert [e.document["status"] for e in everything][:3] == ["queued", "pending", "running"]
        # a resume after any event gives exactly the ones after it
        for cut in range(len(everything)):
            rest, ended = collect(client, f"/jobs/{job_id}/events", auth, last_event_id=everything[cut].id)
            assert ended and rest == everything[cut + 1 :], cut
        # the all-jobs stream holds the same events
        mine, _ = collect(
            client, "/events", auth, last_event_id="0", until=lambda got: len(got) == len(everything)
        )
        assert mine == everything


def test_a_stream_cut_midway_resumes_where_it_stopped(tmp_path: Path, opencl_cache: Path) -> None:
    with serve(tmp_path / "data", opencl_cache) as (client, _proc):
        auth = sign_in(client)
        job_id = submit(client, auth, width=1024, height=768, max_iter=2000)
        first, ended = collect(
            client, f"/jobs/{job_id}/events", auth, until=lambda got: got[-1].document["status"] == "running"
        )
        assert not ended
        rest, ended = collect(client, f"/jobs/{job_id}/events", auth, last_event_id=first[-1].id)
        assert ended and rest[-1].document["status"] == "succeeded"
        whole, _ = collect(client, f"/jobs/{job_id}/events", auth, last_event_id=first[0].id)
        assert first[1:] + rest == whole  # nothing repeated, nothing missing


def test_keep_alives_cancel_and_the_end_of_a_cancelled_job(tmp_path: Path, opencl_cache: Path) -> None:
    with serve(tmp_path / "data", opencl_cache, EVENTS_PING_SECONDS="0.2") as (client, _proc):
        auth = sign_in(client)
        job_id = submit(client, auth, **LONG)
        wait_status(client, job_id, auth, ("running",))
        with client.stream("GET", f"/jobs/{job_id}/events", headers=auth) as response:
            lines = response.iter_lines()
            assert next(parse(lines)).document["status"] == "running"
            # a ping comes while nothing changes (the read timeout bounds the wait)
            ping = next(line for line in lines if line.startswith(":"))
            assert client.post(f"/jobs/{job_id}/cancel", headers=auth).json()["status"] == "cancelled"
            rest = list(parse(lines))  # ends: the server closes the stream after `cancelled`
        assert ping.startswith(": ping")
        assert rest[-1].document["status"] == "cancelled"


def test_another_users_job_is_404_and_their_events_never_show(tmp_path: Path, opencl_cache: Path) -> None:
    with serve(tmp_path / "data", opencl_cache) as (client, _proc):
        alice = sign_in(client)
        client.post("/auth/sign-up", json={"username": "bobby", "password": "correct-horse"})
        token = client.post("/auth/sign-in", auth=("bobby", "correct-horse")).json()["access_token"]
        bob = {"Authorization": f"Bearer {token}"}
        theirs = submit(client, alice)
        mine = submit(client, bob)
        refused = client.get(f"/jobs/{theirs}/events", headers=bob)
        missing = client.get(f"/jobs/{'0' * 32}/events", headers=bob)
        assert refused.status_code == missing.status_code == 404
        assert refused.json()["detail"].replace(theirs, "0" * 32) == missing.json()["detail"]
        events, _ = collect(
            client,
            "/events",
            bob,
            last_event_id="0",
            until=lambda got: got[-1].document["status"] in FINISHED,
        )
        assert {e.document["job_id"] for e in events} == {mine}
        assert client.get("/events", headers={"Last-Event-ID": "x"} | bob).status_code == 422


def test_a_second_replica_streams_changes_made_by_the_first(tmp_path: Path, opencl_cache: Path) -> None:
    """Two services on one database, each with its DATA_DIR: the stream on B shows the job A runs
    (B reads the log)."""
    database = {"DATABASE_URL": f"sqlite:///{tmp_path / 'shared.db'}", "JWT_SECRET": "s" * 40}
    with serve(tmp_path / "a", opencl_cache, **database) as (a, _pa), \
            serve(tmp_path / "b", opencl_cache, **database) as (b, _pb):
        auth = sign_in(a)
        job_id = submit(a, auth)
        events, ended = collect(b, f"/jobs/{job_id}/events", auth, last_event_id="0")
        assert ended and events[-1].document["status"] == "succeeded"
        assert events[-1].document == a.get(f"/jobs/{job_id}", headers=auth).json()
        assert a.delete(f"/jobs/{job_id}", headers=auth).status_code == 200
        deleted, _ = collect(
            b, "/events", auth, last_event_id=events[-1].id, until=lambda got: got[-1].event == "deleted"
        )
        assert [(e.event, e.document) for e in deleted] == [("deleted", {"job_id": job_id})]
