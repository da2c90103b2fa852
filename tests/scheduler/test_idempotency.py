"""`Idempotency-Key` on `POST /jobs` (docs/design.md, "Reuse"): a replay answers the first
answer, another body is a 422, a key still in progress a 409, keys are per user, expire, and a
refused request gives its key back. Racing threads: here on SQLite, on two PostgreSQL replicas
in test_postgres.py."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from scheduler import db, idempotency
from scheduler.models import JobCreate, utcnow
from tests.scheduler.conftest import TINY, Client, sign_up_and_in
from tests.scheduler.test_submit_limits import SUBMITTERS, race

QUEUE_ONLY = {"local_max_concurrent": 0, "signups_per_minute": SUBMITTERS}  # nothing runs: jobs stay queued


def keyed(auth: dict[str, str], key: str) -> dict[str, str]:
    return {**auth, "Idempotency-Key": key}


def hold_key(client: TestClient, owner: str, key: str, body: dict[str, object]) -> None:
    """Take `key` as a first request in progress would (its submit has not answered yet)."""
    request = JobCreate.model_validate(body).model_dump(mode="json")
    with Session(client.app.state.service.engine) as session:
        assert idempotency.claim(session, owner=owner, key=key, fingerprint=idempotency.fingerprint(request),
                                 now=utcnow(), ttl=60, lease=60) is None


def job_count(client: TestClient, auth: dict[str, str]) -> int:
    return client.get("/jobs", headers=auth).json()["count"]


def test_a_replay_answers_the_first_answer(make_client: Client) -> None:
    client = make_client(**QUEUE_ONLY)
    alice = sign_up_and_in(client, "alice")
    first = client.post("/jobs", json=TINY, headers=keyed(alice, "order-1"))
    assert first.status_code == 202 and "idempotent-replayed" not in first.headers
    # the same body spelt otherwise (key order, a default made explicit) is the same request
    again = client.post("/jobs", json={"colormap": "classic", **dict(reversed(TINY.items()))},
                        headers=keyed(alice, '"order-1"'))  # an sf-string, as the draft writes it
    assert again.status_code == 202 and again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json() and again.headers["location"] == first.headers["location"]
    assert job_count(client, alice) == 1

    other = client.post("/jobs", json={**TINY, "max_iter": 41}, headers=keyed(alice, "order-1"))
    assert other.status_code == 422 and "another request body" in other.json()["detail"]
    assert job_count(client, alice) == 1

    bob = sign_up_and_in(client, "bob")  # keys are per user: bob's order-1 is his own
    his = client.post("/jobs", json=TINY, headers=keyed(bob, "order-1"))
    assert his.status_code == 202 and his.json()["job_id"] != first.json()["job_id"]
    unkeyed = client.post("/jobs", json=TINY, headers=alice)
    assert unkeyed.status_code == 202 and job_count(client, alice) == 2


def test_a_key_in_progress_is_a_409_and_a_bad_key_a_422(make_client: Client) -> None:
    client = make_client(**QUEUE_ONLY)
    alice = sign_up_and_in(client, "alice")
    hold_key(client, "alice", "busy", TINY)
    busy = client.post("/jobs", json=TINY, headers=keyed(alice, "busy"))
    assert busy.status_code == 409 and "still being handled" in busy.json()["detail"]
    for bad in ("", "x" * 256, "caf\u00e9".encode()):
        answer = client.post("/jobs", json=TINY, headers={**alice, "Idempotency-Key": bad})
        assert answer.status_code == 422 and "Idempotency-Key must be" in answer.json()["detail"], bad
    assert job_count(client, alice) == 0


def test_a_refused_request_gives_its_key_back(make_client: Client) -> None:
    client = make_client(**QUEUE_ONLY, max_active_jobs_per_user=1)
    alice = sign_up_and_in(client, "alice")
    running = client.post("/jobs", json={**TINY, "max_iter": 41}, headers=alice).json()["job_id"]
    refused = client.post("/jobs", json=TINY, headers=keyed(alice, "retry-me"))
    assert refused.status_code == 429
    assert client.delete(f"/jobs/{running}", headers=alice).status_code == 200
    accepted = client.post("/jobs", json=TINY, headers=keyed(alice, "retry-me"))
    assert accepted.status_code == 202 and "idempotent-replayed" not in accepted.headers


def test_keys_expire_and_abandoned_ones_are_taken_anew(tmp_path: Path) -> None:
    engine = db.make_engine(f"sqlite:///{tmp_path / 'keys.db'}")
    db.init_db(engine)
    now, print_ = utcnow(), idempotency.fingerprint({"a": 1})

    def claim(at: timedelta, key: str = "k") -> idempotency.Replay | None:
        with Session(engine) as session:
            return idempotency.claim(session, owner="alice", key=key, fingerprint=print_, now=now + at,
                                     ttl=100, lease=10)

    try:
        assert claim(timedelta(0)) is None
        with pytest.raises(idempotency.KeyInProgress):
            claim(timedelta(seconds=9))
        assert claim(timedelta(seconds=11)) is None  # its request never answered: taken anew
        with Session(engine) as session:
            done = {"job_id": "j" * 32}
            idempotency.answer(session, owner="alice", key="k", job_id="j" * 32, document=done)
            session.commit()
        assert claim(timedelta(seconds=50)) == idempotency.Replay("j" * 32, {"job_id": "j" * 32})
        assert claim(timedelta(seconds=112)) is None  # expired (100 s after it was taken at 11 s)
    finally:
        engine.dispose()


def idempotent_race(replicas: Sequence[TestClient]) -> None:
    """Also run on PostgreSQL by test_postgres.py: SUBMITTERS threads over the replicas send
    one key and body at once. One job is made; every answer is it (202) or a 409."""
    alice = sign_up_and_in(replicas[0], "alice")

    def submit(i: int) -> httpx.Response:
        return replicas[i % len(replicas)].post("/jobs", json=TINY, headers=keyed(alice, "raced"))

    answers = [a for a in race(SUBMITTERS, submit) if isinstance(a, httpx.Response)]
    assert len(answers) == SUBMITTERS
    assert {a.status_code for a in answers} <= {202, 409}, [a.text for a in answers]
    made = {a.json()["job_id"] for a in answers if a.status_code == 202}
    assert len(made) == 1 and job_count(replicas[0], alice) == 1
    after = replicas[-1].post("/jobs", json=TINY, headers=keyed(alice, "raced"))
    assert after.status_code == 202 and after.json()["job_id"] in made


def test_racing_submits_with_one_key_make_one_job(make_client: Client) -> None:
    idempotent_race([make_client(**QUEUE_ONLY)])
