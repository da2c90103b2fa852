"""State that survives restarts, probes, metrics, the MinIO path and callbacks, through the app."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

import httpx
from fastapi.testclient import TestClient
from sqlmodel import Session

from job_image.storage import Download, LocalStorage, StorageError
from scheduler.core.config import Settings
from scheduler.main import create_app
from scheduler.models import Job, Task
from tests.conftest import free_port
from tests.scheduler.conftest import Client, sign_up_and_in, submit, wait_for
from tests.scheduler.test_full_disk import until
from tests.scheduler.test_openapi import on_s3


def set_job(client: TestClient, job_id: str, **fields: object) -> None:
    """Rewrite a job record as a crashed service would have left it (its one task with it)."""
    with Session(client.app.state.service.engine) as session:
        job, task = session.get(Job, job_id), session.get(Task, (job_id, 0))
        for name, value in fields.items():
            setattr(job, name, value)
        task.status, task.admissions = job.status, job.attempts
        session.add_all([job, task])
        session.commit()


def test_queued_jobs_start_after_a_restart(make_client: Client) -> None:
    first = make_client(local_max_concurrent=0)
    alice = sign_up_and_in(first, "alice")
    job_id = submit(first, alice)["job_id"]
    first.__exit__(None, None, None)

    second = make_client()
    assert wait_for(second, job_id, alice)["status"] == "succeeded"


def test_a_job_running_when_the_service_stopped_runs_again(make_client: Client) -> None:
    first = make_client(local_max_concurrent=0)
    alice = sign_up_and_in(first, "alice")
    job_id = submit(first, alice)["job_id"]
    first.__exit__(None, None, None)
    set_job(first, job_id, status="running", attempts=1)  # as a crash mid-render leaves it

    second = make_client()
    doc = wait_for(second, job_id, alice)
    assert doc["status"] == "succeeded", doc


def test_a_job_interrupted_too_often_fails_with_a_reason(make_client: Client, settings: Settings) -> None:
    first = make_client(local_max_concurrent=0)
    alice = sign_up_and_in(first, "alice")
    job_id = submit(first, alice)["job_id"]
    first.__exit__(None, None, None)
    set_job(first, job_id, status="running", attempts=settings.job_max_attempts)

    second = make_client()
    doc = wait_for(second, job_id, alice)
    assert doc["status"] == "failed" and "interrupted" in doc["error"]


def test_probes_and_metrics(client: TestClient, alice: dict[str, str]) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["runner"] == "local"
    job_id = submit(client, alice)["job_id"]
    wait_for(client, job_id, alice, ("succeeded",))
    client.get(f"/jobs/{job_id}", headers=alice)
    text = client.get("/metrics").text
    assert 'fractal_jobs{status="succeeded"} 1.0' in text
    assert "fractal_jobs_submitted_total 1.0" in text
    assert 'fractal_job_duration_seconds_count{status="succeeded"} 1.0' in text
    assert 'route="/jobs/{job_id}"' in text and job_id not in text
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/JobCreate"}  # the model FastAPI parses, not a copy
    fields = schema["components"]["schemas"]["JobCreate"]["properties"]
    assert {"max_iter", "callback_url", "supersample"} <= set(fields)


def test_readyz_is_503_when_storage_is_down(make_client: Client) -> None:
    client = make_client(
        minio_endpoint=f"127.0.0.1:{free_port()}",  # nothing listens there
        minio_access_key="k",
        minio_secret_key="s",
        storage_connect_timeout=0.5,
    )
    ready = client.get("/readyz")
    assert ready.status_code == 503 and "storage" in ready.json()["problems"]
    assert "storage" in ready.json()["detail"]
    assert client.get("/readyz", params={"exclude": "storage"}).status_code == 200
    assert client.get("/readyz", params={"exclude": "disk"}).status_code == 422


def test_minio_path_renders_and_streams_through_s3(make_client: Client, minio_env: dict[str, str]) -> None:
    client = make_client(**on_s3(minio_env))
    alice = sign_up_and_in(client, "alice")
    job_id = submit(client, alice)["job_id"]
    assert wait_for(client, job_id, alice)["status"] == "succeeded"
    png = client.get(f"/jobs/{job_id}/result", headers=alice)
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    # opened with no stat first: the GET's own headers give the length and the type
    assert png.headers["content-type"] == "image/png"
    assert png.headers["content-length"] == str(len(png.content))
    assert png.headers["etag"] == f'"{hashlib.sha256(png.content).hexdigest()}"'
    meta = client.get(f"/jobs/{job_id}/result", params={"file": "result.json"}, headers=alice)
    assert meta.headers["content-type"] == "application/json" and meta.json()["job_id"] == job_id
    assert client.get(f"/jobs/{job_id}/result", params={"file": "nope.txt"}, headers=alice).status_code == 404
    part = client.get(f"/jobs/{job_id}/result", headers={**alice, "Range": "bytes=1-3"})
    assert part.status_code == 206 and part.content == b"PNG"
    names = {f["name"] for f in client.get(f"/jobs/{job_id}/result/list", headers=alice).json()["files"]}
    assert {"image.png", "result.json", "job.log"} <= names
    assert client.delete(f"/jobs/{job_id}", headers=alice).status_code == 200
    assert client.app.state.service.storage.list(f"alice/{job_id}/") == []


def test_hung_storage_is_a_503_not_a_stuck_request(make_client: Client) -> None:
    """A store that accepts connections and never answers: the read timeout turns it into a 503."""
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(16)
        client = make_client(
            minio_endpoint=f"127.0.0.1:{hung.getsockname()[1]}",
            minio_access_key="k",
            minio_secret_key="s",
            storage_read_timeout=0.3,
            local_max_concurrent=0,
        )
        alice = sign_up_and_in(client, "alice")
        job_id = submit(client, alice)["job_id"]
        for path in ("/result", "/result/list"):
            response = client.get(f"/jobs/{job_id}{path}", headers=alice)
            assert response.status_code == 503, path
            assert "storage" in response.json()["detail"].lower()
        assert client.get("/readyz").status_code == 503


class VanishingStorage(LocalStorage):
    """The image is deleted just before it is opened, as a DELETE racing a GET does.
    (Other reads, e.g. of result.json for the ETag, go through.)"""

    def open(self, key: str, start: int = 0, length: int | None = None) -> Download | None:
        if key.endswith("/image.png"):
            self.delete_prefix(key.rsplit("/", 1)[0])
        return super().open(key, start, length)


class BrokenStorage(LocalStorage):
    """Storage that fails as the image is opened (e.g. it went away after the job read)."""

    def open(self, key: str, start: int = 0, length: int | None = None) -> Download | None:
        if key.endswith("/image.png"):
            raise StorageError(f"download {key}: storage unreachable")
        return super().open(key, start, length)


def test_a_download_that_fails_to_open_is_a_503(settings: Settings) -> None:
    with TestClient(create_app(settings, BrokenStorage(settings.storage_dir))) as client:
        alice = sign_up_and_in(client, "alice")
        job_id = submit(client, alice)["job_id"]
        wait_for(client, job_id, alice, ("succeeded",))
        for headers in ({}, {"Range": "bytes=0-9"}):  # opened at once, or after a stat
            response = client.get(f"/jobs/{job_id}/result", headers={**alice, **headers})
            assert response.status_code == 503 and "storage" in response.json()["detail"].lower()


class UnreadableResultJson(LocalStorage):
    """result.json (the PNG's ETag) cannot be read once `broken`; what opens is recorded."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.broken, self.opened = False, []

    def open(self, key: str, start: int = 0, length: int | None = None) -> Download | None:
        if self.broken and key.endswith("/result.json"):
            raise StorageError(f"download {key}: storage unreachable")
        download = super().open(key, start, length)
        if download is not None and self.broken:
            self.opened.append(download.chunks)
        return download


def test_a_download_whose_etag_cannot_be_read_is_a_503_and_releases_the_image(settings: Settings) -> None:
    """The image opens while its ETag is read: when that read fails, the image is closed."""
    storage = UnreadableResultJson(settings.storage_dir)
    with TestClient(create_app(settings, storage)) as client:
        alice = sign_up_and_in(client, "alice")
        job_id = submit(client, alice)["job_id"]
        wait_for(client, job_id, alice, ("succeeded",))
        storage.broken = True
        response = client.get(f"/jobs/{job_id}/result", headers=alice)
        assert response.status_code == 503 and "storage" in response.json()["detail"].lower()
        # closed as soon as it has opened (in its worker thread): a generator closed has no frame
        assert until(lambda: storage.opened and all(c.gi_frame is None for c in storage.opened), 10)


def test_a_download_that_vanishes_as_it_opens(settings: Settings) -> None:
    """A plain GET opens the image first: what is gone by then is a 404. A range is stat'ed
    first: what vanishes after that is a 503, as storage failing mid-request is."""
    with TestClient(create_app(settings, VanishingStorage(settings.storage_dir))) as client:
        alice = sign_up_and_in(client, "alice")
        plain, ranged = (submit(client, alice)["job_id"] for _ in range(2))
        for job_id in (plain, ranged):
            wait_for(client, job_id, alice, ("succeeded",))
        response = client.get(f"/jobs/{plain}/result", headers=alice)
        assert response.status_code == 404 and "image.png" in response.json()["detail"]
        response = client.get(f"/jobs/{ranged}/result", headers={**alice, "Range": "bytes=0-9"})
        assert response.status_code == 503 and "storage" in response.json()["detail"].lower()


def test_redirect_to_a_presigned_url_on_s3(make_client: Client, minio_env: dict[str, str]) -> None:
    """?redirect=true: a 307 to S3 itself, which serves the same bytes with no token; files
    other than the PNG too. The URL expires after PRESIGN_SECONDS (X-Amz-Expires)."""
    client = make_client(presign_seconds=120, **on_s3(minio_env))
    alice = sign_up_and_in(client, "alice")
    job_id = submit(client, alice)["job_id"]
    assert wait_for(client, job_id, alice)["status"] == "succeeded"
    for file in ("image.png", "result.json"):
        proxied = client.get(f"/jobs/{job_id}/result", params={"file": file}, headers=alice)
        moved = client.get(f"/jobs/{job_id}/result", params={"file": file, "redirect": "true"}, headers=alice,
                           follow_redirects=False)
        assert moved.status_code == 307, moved.text
        url = httpx.URL(moved.headers["location"])
        assert url.host == "127.0.0.1" and url.path == f"/{minio_env['MINIO_BUCKET']}/alice/{job_id}/{file}"
        assert url.params["X-Amz-Expires"] == "120"
        direct = httpx.get(url)  # followed as a client would: no Authorization, straight to S3
        assert direct.status_code == 200 and direct.content == proxied.content
    assert client.get(f"/jobs/{job_id}/result", params={"file": "nope.txt", "redirect": "true"},
                      headers=alice).status_code == 404


def test_redirect_on_local_storage_streams_as_before(client: TestClient, alice: dict[str, str]) -> None:
    job_id = submit(client, alice)["job_id"]
    assert wait_for(client, job_id, alice)["status"] == "succeeded"
    answer = client.get(f"/jobs/{job_id}/result", params={"redirect": "true"}, headers=alice,
                        follow_redirects=False)
    assert answer.status_code == 200 and answer.content.startswith(b"\x89PNG")
