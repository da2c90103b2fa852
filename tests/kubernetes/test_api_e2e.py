"""The whole path with RUNNER=kubernetes: POST /jobs -> Job in the double -> the real job renders
into S3 (moto) -> status succeeded -> the PNG downloaded through the API; and the API-server
failures a user meets through HTTP."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import text

from scheduler.core.config import Settings
from scheduler.main import create_app
from tests.kubernetes.apiserver import FakeApiServer, load_rules
from tests.kubernetes.conftest import STANDIN
from tests.scheduler.conftest import sign_up_and_in


def test_render_through_the_api(settings: Settings, apiserver: FakeApiServer) -> None:
    apiserver.default_command = None  # the real `python -m job_image`
    settings = settings.model_copy(update={"jwt_secret": "x" * 48, "bcrypt_rounds": 4, "result_cache": True})
    with TestClient(create_app(settings)) as client:
        creds = {"username": "alice", "password": "correct-horse"}
        assert client.post("/auth/sign-up", json=creds).status_code == 201
        token = client.post("/auth/sign-in", json=creds).json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        created = client.post(
            "/jobs", json={"width": 96, "height": 64, "max_iter": 64, "device": "cpu"}, headers=auth
        )
        assert created.status_code == 202, created.text
        job_id = created.json()["job_id"]
        deadline = time.monotonic() + 90
        doc = {}
        while time.monotonic() < deadline:
            doc = client.get(f"/jobs/{job_id}", params={"wait": 5}, headers=auth).json()
            if doc["status"] in ("succeeded", "failed", "cancelled"):
                break
        assert doc["status"] == "succeeded", doc
        assert apiserver.job(job_id) is not None  # it really went through a Kubernetes Job
        png = client.get(f"/jobs/{job_id}/result", headers=auth)
        assert png.status_code == 200 and png.content.startswith(b"\x89PNG\r\n\x1a\n")
        logs = client.get(f"/jobs/{job_id}/logs", headers=auth)
        assert logs.status_code == 200
        (pod,) = apiserver.pods(job_id)
        meta = client.get(f"/jobs/{job_id}/result", params={"file": "result.json"}, headers=auth).json()
        where = f"pod {pod['metadata']['name']} (node {pod['spec']['nodeName']})"
        assert logs.text.splitlines()[0] == f"job {job_id} task 0 on {where}, device {meta['device']}"

        again = client.post("/jobs", json={"width": 96, "height": 64, "max_iter": 64, "device": "cpu"},
                            headers=auth).json()
        assert again["status"] == "succeeded" and again["cached"] is True  # served from the first render
        assert apiserver.job(again["job_id"]) is None  # no Job, no pod
        assert client.get(f"/jobs/{again['job_id']}/result", headers=auth).content == png.content


def test_api_server_down_keeps_jobs_queued_and_refuses_cancel_cleanly(
    settings: Settings, apiserver: FakeApiServer, tmp_path: Path
) -> None:
    settings = settings.model_copy(
        update={"jwt_secret": "x" * 48, "bcrypt_rounds": 4, "dispatch_retry_max_seconds": 0.5}
    )
    with TestClient(create_app(settings)) as client:
        auth = sign_up_and_in(client, "alice")
        go = tmp_path / "go"
        apiserver.default_command = [sys.executable, STANDIN, "wait-file", str(go)]
        sleeper = client.post("/jobs", json={"width": 8, "height": 8}, headers=auth).json()["job_id"]
        poll_until(client, sleeper, auth, ("running",))

        apiserver.down()
        created = client.post("/jobs", json={"width": 8, "height": 8}, headers=auth)
        assert created.status_code == 202  # the user gets a job id, not a 500
        new_id = created.json()["job_id"]
        waiting = poll_until(client, new_id, auth, ("queued",), lambda doc: bool(doc["message"]))
        assert "waiting for the runner" in waiting["message"]
        refused = client.delete(f"/jobs/{sleeper}", headers=auth)
        assert refused.status_code == 503 and "try again" in refused.json()["detail"]
        assert client.get(f"/jobs/{sleeper}", headers=auth).json()["status"] == "running"  # nothing lost

        apiserver.default_command = [sys.executable, STANDIN, "ok"]
        apiserver.up()
        assert poll_until(client, new_id, auth, FINISHED)["status"] == "succeeded"
        go.touch()  # the refused cancel left no mark: the job ends as it would have
        assert poll_until(client, sleeper, auth, FINISHED)["status"] == "succeeded"


def test_a_forbidden_cancel_is_a_503_and_leaves_no_mark(
    settings: Settings, apiserver: FakeApiServer, tmp_path: Path
) -> None:
    apiserver.rules = [dict(r, verbs=[v for v in r["verbs"] if v != "delete"]) for r in load_rules()]
    settings = settings.model_copy(update={"jwt_secret": "x" * 48, "bcrypt_rounds": 4})
    go = tmp_path / "go"
    apiserver.default_command = [sys.executable, STANDIN, "wait-file", str(go)]
    with TestClient(create_app(settings)) as client:
        auth = sign_up_and_in(client, "alice")
        job_id = client.post("/jobs", json={"width": 8, "height": 8}, headers=auth).json()["job_id"]
        poll_until(client, job_id, auth, ("running",))

        refused = client.delete(f"/jobs/{job_id}", headers=auth)
        assert refused.status_code == 503
        assert "the service account may not delete jobs.batch in namespace fractal-test" in (
            refused.json()["detail"]
        )
        go.touch()
        assert poll_until(client, job_id, auth, FINISHED)["status"] == "succeeded"


def test_an_active_record_whose_job_vanished_is_ended_with_the_reason(
    settings: Settings, apiserver: FakeApiServer
) -> None:
    """A record left `running` with no Job behind it (its end was never recorded) is ended by
    the reconciler with RUNNER=kubernetes too, once the runner's first lists are in."""
    settings = settings.model_copy(update={
        "jwt_secret": "x" * 48, "bcrypt_rounds": 4, "kube_max_active_jobs": 0,  # nothing is created
        "reconcile_interval_seconds": 0.1, "job_lost_after_seconds": 0.5,
    })
    with TestClient(create_app(settings)) as client:
        auth = sign_up_and_in(client, "alice")
        job_id = client.post("/jobs", json={"width": 8, "height": 8}, headers=auth).json()["job_id"]
        with client.app.state.service.engine.begin() as conn:  # what a lost end leaves behind
            conn.execute(text("UPDATE job SET status = 'running' WHERE id = :id"), {"id": job_id})
            conn.execute(text("UPDATE task SET status = 'running' WHERE job_id = :id"), {"id": job_id})
        doc = poll_until(client, job_id, auth, FINISHED)
        assert doc["status"] == "failed" and "Kubernetes Job was gone" in doc["error"], doc
        assert apiserver.job(job_id) is None


FINISHED = ("succeeded", "failed", "cancelled")


def poll_until(
    client: Any,
    job_id: str,
    auth: dict[str, str],
    statuses: tuple[str, ...],
    where: Callable[[dict[str, Any]], bool] = bool,
) -> dict[str, Any]:
    """The job's document once it has one of `statuses` (and `where` holds), within 90 s."""
    deadline = time.monotonic() + 90
    doc: dict[str, Any] = {}
    while time.monotonic() < deadline:
        doc = client.get(f"/jobs/{job_id}", headers=auth).json()
        if doc["status"] in statuses and where(doc):
            return doc
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached {statuses}: {doc}")


def test_gpu_jobs_beyond_the_quota_wait_queued_and_all_succeed(
    settings: Settings, apiserver: FakeApiServer, tmp_path: Path
) -> None:
    """A ResourceQuota allows one GPU (the node has two): of three GPU jobs one is admitted, the
    others wait `queued` with the reason and their place, and none fails, whatever the short
    pending deadline; each runs when the GPU is free."""
    settings = settings.model_copy(update={"jwt_secret": "x" * 48, "bcrypt_rounds": 4,
                                           "job_pending_deadline_seconds": 3})
    apiserver.node_gpus = 2
    apiserver.store.create("resourcequotas", apiserver.namespace, {
        "metadata": {"name": "gpus"}, "spec": {"hard": {"requests.nvidia.com/gpu": "1"}}})
    go = tmp_path / "go"
    apiserver.default_command = [sys.executable, STANDIN, "wait-file", str(go)]
    with TestClient(create_app(settings)) as client:
        auth = sign_up_and_in(client, "alice")
        started = time.monotonic()
        gpu_job = {"width": 8, "height": 8, "device": "gpu"}
        ids = [client.post("/jobs", json=gpu_job, headers=auth).json()["job_id"] for _ in range(3)]
        first = poll_until(client, ids[0], auth, ("running",))
        assert first["placement"] == "gpu"
        for position, job_id in enumerate(ids[1:], start=1):
            doc = poll_until(client, job_id, auth, ("queued",), lambda d: d["queue_position"] is not None)
            assert doc["queue_position"] == position
            assert doc["message"] == (
                "waiting for a GPU: 1 of 1 in use (requests.nvidia.com/gpu of ResourceQuota gpus); "
                f"{position - 1} job{'' if position == 2 else 's'} ahead"
            )
        assert [apiserver.job(j) is not None for j in ids] == [True, False, False]  # nothing over quota
        while time.monotonic() < started + 4:  # the others have waited longer than the pending deadline
            assert client.get(f"/jobs/{ids[2]}", headers=auth).json()["status"] == "queued"
            time.sleep(0.1)
        go.touch()  # each runs to the end in turn
        assert [poll_until(client, j, auth, FINISHED)["status"] for j in ids] == ["succeeded"] * 3
