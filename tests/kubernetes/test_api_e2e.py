"""The whole path with RUNNER=kubernetes: POST /jobs -> Job in the double -> the real job renders
into S3 (moto) -> status succeeded -> the PNG downloaded through the API. Runs once the
scheduler app (scheduler.main.create_app) exists; skipped before."""

from __future__ import annotations

import time

import pytest

from scheduler.core.config import Settings
from tests.kubernetes.apiserver import FakeApiServer

main = pytest.importorskip("scheduler.main", reason="the scheduler app is not there yet")
create_app = getattr(main, "create_app", None)


@pytest.mark.skipif(create_app is None, reason="scheduler.main has no create_app(settings)")
def test_render_through_the_api(settings: Settings, apiserver: FakeApiServer) -> None:
    from fastapi.testclient import TestClient

    apiserver.default_command = None  # the real `python -m job_image`
    settings = settings.model_copy(update={"jwt_secret": "x" * 48, "bcrypt_rounds": 4})
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
