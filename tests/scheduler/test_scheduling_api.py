"""Admission through the HTTP API and the local runner: fair share, priority, where jobs stand
while they wait, auto placement, and what is refused at submit."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient

from tests.scheduler.conftest import LONG, Client, sign_up_and_in, submit, wait_for


def docs_when(client: TestClient, auth: dict[str, str], ready: Callable[[list[dict[str, Any]]], bool],
              timeout: float = 60) -> list[dict[str, Any]]:
    """The caller's job documents once `ready(docs)` holds (the dispatcher writes estimates
    in its next cycle), or fail at the deadline."""
    deadline = time.monotonic() + timeout
    docs: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        docs = client.get("/jobs", params={"limit": 100}, headers=auth).json()["data"]
        if ready(docs):
            return docs
        time.sleep(0.05)
    raise AssertionError(f"not ready in {timeout} s: {docs}")


def all_placed(count: int) -> Callable[[list[dict[str, Any]]], bool]:
    def ready(docs: list[dict[str, Any]]) -> bool:
        queued = [d for d in docs if d["status"] == "queued"]
        return len(queued) == count and all(d["queue_position"] for d in queued)

    return ready


def blocked(make_client: Client) -> tuple[TestClient, dict[str, str]]:
    """One CPU slot, held by another user's long render: what comes next waits."""
    client = make_client(local_max_concurrent=1)
    carol = sign_up_and_in(client, "carol")
    wait_for(client, submit(client, carol, **LONG)["job_id"], carol, ("running",))
    return client, carol


def test_one_users_six_jobs_do_not_hold_back_anothers_single_job(make_client: Client) -> None:
    client, _ = blocked(make_client)
    alice, bob = sign_up_and_in(client, "alice"), sign_up_and_in(client, "bob")
    for _ in range(6):
        submit(client, alice)
    bobs = submit(client, bob)
    assert bobs["priority"] == "normal" and bobs["estimated_iterations"] > 0
    bob_doc = docs_when(client, bob, all_placed(1))[0]  # all queued jobs' estimates are written at once
    docs = docs_when(client, alice, all_placed(6))
    assert bob_doc["queue_position"] == 2  # behind alice's oldest only (she has waited longer)
    positions = sorted(d["queue_position"] for d in docs)
    assert positions == [1, 3, 4, 5, 6, 7]
    ordered = sorted([*docs, bob_doc], key=lambda d: d["queue_position"])
    starts = [d["estimated_start_at"] for d in ordered]
    assert all(starts) and starts == sorted(starts)  # ISO 8601 UTC strings sort as times
    assert all(d["estimated_finish_at"] > d["estimated_start_at"] for d in ordered)
    assert all(d["placement"] is None for d in ordered)
    ahead = ordered[3]["queue_position"] - 1
    assert ordered[3]["message"] == f"waiting for a CPU slot: 1 of 1 in use; {ahead} jobs ahead"


def test_priority_orders_a_users_own_jobs(make_client: Client) -> None:
    client, _ = blocked(make_client)
    alice = sign_up_and_in(client, "alice")
    for priority in ("low", "normal", "high"):
        submit(client, alice, priority=priority)
    docs = docs_when(client, alice, all_placed(3))
    in_line = sorted(docs, key=lambda d: d["queue_position"])
    assert [d["priority"] for d in in_line] == ["high", "normal", "low"]
    stored = client.get(f"/jobs/{docs[0]['job_id']}", headers=alice).json()
    assert "priority" not in stored["params"]  # the job's FRACTAL_PARAMS hold fractal fields only


def test_the_running_job_shows_its_placement_and_finish_estimate(make_client: Client) -> None:
    client, carol = blocked(make_client)
    running = client.get("/jobs", headers=carol).json()["data"][0]
    assert running["placement"] == "cpu" and running["queue_position"] is None
    assert running["estimated_finish_at"] and running["estimated_start_at"] is None


def test_auto_goes_to_the_class_that_finishes_first(make_client: Client) -> None:
    """A GPU slot (that this host cannot back) finishes a big render sooner than the CPU: the
    job is admitted there and renders with device gpu, which fails here with the job's reason."""
    client = make_client(local_gpus=1)
    alice = sign_up_and_in(client, "alice")
    big = submit(client, alice, device="auto", width=2048, height=2048, max_iter=50_000)  # CPU ~8 s, GPU ~4
    doc = wait_for(client, big["job_id"], alice)
    assert doc["placement"] == "gpu" and doc["status"] == "failed"
    assert doc["error"].startswith("error: no GPU OpenCL device")
    assert doc["params"]["device"] == "auto"  # the request is kept as it was asked


def test_gpu_without_gpus_is_refused(client: TestClient, alice: dict[str, str]) -> None:
    response = client.post("/jobs", json={"device": "gpu"}, headers=alice)
    assert response.status_code == 422
    assert response.json()["detail"] == (
        "Device gpu cannot run here: LOCAL_GPUS (default: the OpenCL GPU devices found) is 0; "
        "ask for device cpu or auto."
    )
    assert client.get("/jobs", headers=alice).json()["count"] == 0


def test_too_many_estimated_iterations_are_refused(make_client: Client) -> None:
    client = make_client(max_job_iterations=1e6)
    alice = sign_up_and_in(client, "alice")
    response = client.post("/jobs", json={"width": 400, "height": 300, "max_iter": 500}, headers=alice)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail.startswith("The render is estimated at ") and "above MAX_JOB_ITERATIONS (1e+06)" in detail
    assert submit(client, alice, width=10, height=10, max_iter=100)["estimated_iterations"] <= 10_000


def test_a_full_queue_is_a_429_with_retry_after(make_client: Client) -> None:
    client = make_client(local_max_concurrent=0, max_queued_jobs=2, queue_full_retry_after_seconds=12)
    alice, bob = sign_up_and_in(client, "alice"), sign_up_and_in(client, "bob")
    submit(client, alice)
    submit(client, bob)
    response = client.post("/jobs", json={"width": 8, "height": 8}, headers=alice)
    assert response.status_code == 429 and response.headers["retry-after"] == "12"
    assert response.json()["detail"] == (
        "The queue is full (2 jobs wait, all users together); try again in 12 seconds."
    )
