"""/openapi.json declares exactly what each operation answers (DESIGN, "HTTP API"): every
status, with the body's schema and the headers that come with it."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.scheduler.conftest import TINY, Client, sign_up_and_in
from tests.scheduler.openapi import assert_declared, declared_answers


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
    }
    assert client.post("/jobs", json=TINY, headers=bob).status_code == 202  # the queue is full now
    answers["queue full"] = client.post("/jobs", json=TINY, headers=carol)
    statuses = {why: r.status_code for why, r in answers.items()}
    assert statuses == {"queued": 202, "no token": 401, "too big": 413, "bad parameter": 422, "not JSON": 422,
                        "no GPU": 422, "too costly": 422, "too many of yours": 429, "queue full": 429}
    for response in answers.values():
        assert_declared(client, response, "/jobs")
    assert answers["queue full"].headers["Retry-After"] == "7"
    assert "Retry-After" in declared_answers(client, "POST", "/jobs")["429"]["headers"]
    # and nothing more is declared: 503 (the database unusable) is answered in test_faults.py
    assert set(declared_answers(client, "POST", "/jobs")) == {str(s) for s in statuses.values()} | {"503"}
