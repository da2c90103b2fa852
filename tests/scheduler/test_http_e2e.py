"""The README's curl workflow over real HTTP: `python -m scheduler` under uvicorn on 127.0.0.1,
and a crash (SIGKILL) of the service in the middle of a render."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.scheduler.conftest import LONG, TINY
from tests.scheduler.openapi import answer_of, undeclared
from tests.scheduler.test_reconciler import UNENDING

ROOT = Path(__file__).resolve().parents[2]


def service_env(data_dir: Path, opencl_cache: Path, **settings: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MINIO_", "JWT_", "DATABASE_"))},
        "DATA_DIR": str(data_dir),
        "BCRYPT_ROUNDS": "4",
        "OPENCL_CACHE_DIR": str(opencl_cache),
        **settings,
    }


@contextlib.contextmanager
def serve(
    data_dir: Path, opencl_cache: Path, **settings: str
) -> Iterator[tuple[httpx.Client, subprocess.Popen[bytes]]]:
    port = free_port()
    env = service_env(data_dir, opencl_cache, **settings)
    log = open(data_dir.parent / f"server-{port}.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "scheduler", "--port", str(port)], cwd=ROOT, env=env, stdout=log, stderr=log
    )
    answers: list[httpx.Response] = []  # each checked against /openapi.json at the end
    client = httpx.Client(
        base_url=f"http://127.0.0.1:{port}", timeout=30, event_hooks={"response": [answers.append]}
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (data_dir.parent / f"server-{port}.log").read_text()
            with contextlib.suppress(httpx.TransportError):
                if client.get("/healthz").status_code == 200:
                    break
            assert time.monotonic() < deadline, "the service did not come up in 30 s"
            time.sleep(0.1)
        doc = client.get("/openapi.json").json()
        yield client, proc
        found = undeclared(doc, [answer_of(response) for response in answers])
        assert not found, "answers that /openapi.json does not declare:\n" + "\n".join(found)
    finally:
        client.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan whose parent was killed may stay unreaped here)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def sign_in(client: httpx.Client) -> dict[str, str]:
    assert client.post(
        "/auth/sign-up", json={"username": "alice", "password": "correct-horse"}
    ).status_code in (201, 409)
    token = client.post("/auth/sign-in", auth=("alice", "correct-horse")).json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


def wait_status(client: httpx.Client, job_id: str, auth: dict[str, str], wanted: tuple[str, ...]) -> dict:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        doc = client.get(f"/jobs/{job_id}", params={"wait": 1}, headers=auth).json()
        if doc["status"] in wanted:
            return doc
    raise AssertionError(f"job {job_id} never reached {wanted}")


def test_curl_workflow_over_http(tmp_path: Path, opencl_cache: Path) -> None:
    with serve(tmp_path / "data", opencl_cache) as (client, _proc):
        auth = sign_in(client)
        job_id = client.post("/jobs", json=TINY, headers=auth).json()["job_id"]
        done = client.get(f"/jobs/{job_id}", params={"wait": 60}, headers=auth).json()
        assert done["status"] == "succeeded", done
        png = client.get(f"/jobs/{job_id}/result", headers=auth)
        assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
        assert int(png.headers["content-length"]) == len(png.content)
        assert [j["job_id"] for j in client.get("/jobs", headers=auth).json()["data"]] == [job_id]
        assert "progress 100%" in client.get(f"/jobs/{job_id}/logs", headers=auth).text
        assert client.delete(f"/jobs/{job_id}", headers=auth).status_code == 200
        assert client.get(f"/jobs/{job_id}", headers=auth).status_code == 404
        assert (tmp_path / "data" / "jwt_secret").stat().st_mode & 0o777 == 0o600
    # the umask: everything the service and its job wrote is its user's alone
    readable = [p for p in (tmp_path / "data").rglob("*") if p.stat().st_mode & 0o077]
    assert (tmp_path / "data").stat().st_mode & 0o077 == 0 and not readable, readable


def test_downloads_abandoned_midway_leave_the_server_sound(tmp_path: Path, opencl_cache: Path) -> None:
    """Clients that hang up mid-download (while the next chunk is being read ahead) cause no
    error and leave nothing held: a later download is whole."""
    data = tmp_path / "data"
    with serve(data, opencl_cache) as (client, _proc):
        auth = sign_in(client)
        job_id = client.post("/jobs", json=TINY, headers=auth).json()["job_id"]
        wait_status(client, job_id, auth, ("succeeded",))
        blob = os.urandom(20 * 1024 * 1024)  # several storage chunks
        (data / "results" / "alice" / job_id / "blob.bin").write_bytes(blob)
        url = f"/jobs/{job_id}/result?file=blob.bin"
        for _ in range(20):
            with client.stream("GET", url, headers=auth) as response:
                assert response.status_code == 200
                next(response.iter_bytes(1 << 20))
        assert client.get(url, headers=auth).content == blob
        assert client.get("/healthz").status_code == 200
    log = next(tmp_path.glob("server-*.log")).read_text()
    assert "Exception in ASGI application" not in log and "Traceback" not in log


@pytest.mark.parametrize("trusted", ["127.0.0.1", ""])
def test_sign_in_limit_counts_clients_behind_a_trusted_proxy(
    tmp_path: Path, opencl_cache: Path, trusted: str
) -> None:
    """Behind the Ingress every request comes from its address: X-Forwarded-For names the client,
    but only when the proxy is in FORWARDED_ALLOW_IPS (otherwise anyone could pick a fresh one)."""
    limits = {"SIGNIN_ATTEMPTS_PER_CLIENT_PER_MINUTE": "2", "FORWARDED_ALLOW_IPS": trusted}
    with serve(tmp_path / "data", opencl_cache, **limits) as (client, _proc):
        def attempt(client_ip: str, user: str) -> int:
            body = {"username": user, "password": "wrong-horse"}
            return client.post("/auth/sign-in", json=body, headers={"X-Forwarded-For": client_ip}).status_code

        assert [attempt("203.0.113.7", f"user{i}") for i in range(3)] == [401, 401, 429]
        assert attempt("203.0.113.8", "user9") == (401 if trusted else 429)


def test_service_killed_mid_render_reruns_the_job(tmp_path: Path, opencl_cache: Path) -> None:
    data = tmp_path / "data"
    orphan = None
    try:
        with serve(data, opencl_cache) as (client, proc):
            auth = sign_in(client)
            job_id = client.post("/jobs", json=LONG, headers=auth).json()["job_id"]
            wait_status(client, job_id, auth, ("running",))
            orphan = int((data / "local-jobs" / f"{job_id}.pid").read_text())
            proc.kill()  # no shutdown: the render goes on without anyone tracking it
            proc.wait()

        with serve(data, opencl_cache) as (client, _proc):
            doc = wait_status(client, job_id, auth, ("running", "failed", "succeeded"))
            assert doc["status"] == "running", doc
            assert not running(orphan)  # the untracked render is gone (killed, or its pipe broke)
            rerun = int((data / "local-jobs" / f"{job_id}.pid").read_text())
            assert rerun != orphan
            deleted = client.delete(f"/jobs/{job_id}", headers=auth)
            assert deleted.status_code == 200 and deleted.json()["status"] == "cancelled"
            assert not running(rerun)
    finally:
        if orphan is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(orphan, signal.SIGKILL)


def start_refused(env: dict[str, str], port: int) -> subprocess.CompletedProcess[str]:
    """`python -m scheduler` expected to refuse to start: its exit and what it printed."""
    return subprocess.run([sys.executable, "-m", "scheduler", "--port", str(port)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_a_second_service_on_the_same_data_dir_refuses_and_touches_nothing(
    tmp_path: Path, opencl_cache: Path
) -> None:
    data = tmp_path / "data"
    with serve(data, opencl_cache) as (client, proc):
        auth = sign_in(client)
        job_id = client.post("/jobs", json=UNENDING, headers=auth).json()["job_id"]
        wait_status(client, job_id, auth, ("running",))
        job_pid = int((data / "local-jobs" / f"{job_id}.pid").read_text())

        second = start_refused(service_env(data, opencl_cache), free_port())
        assert second.returncode == 2, second.stderr
        assert f"another fractal-scheduler (PID {proc.pid}) is using DATA_DIR {data}" in second.stderr
        assert len(second.stderr.splitlines()) == 1, second.stderr  # one sentence, no recovery's logs
        assert running(job_pid)
        assert client.get(f"/jobs/{job_id}", headers=auth).json()["status"] == "running"

        # Another DATA_DIR on the first's port: refused before its recovery, which would stop the
        # process its pid file names (here a stand-in carrying a job's JOB_ID).
        other, leftover_id = tmp_path / "other", "e" * 32
        (other / "local-jobs").mkdir(parents=True)
        stand_in = subprocess.Popen(["sleep", "120"], env={"JOB_ID": leftover_id})
        try:
            (other / "local-jobs" / f"{leftover_id}.pid").write_text(f"{stand_in.pid}\n")
            third = start_refused(service_env(other, opencl_cache), client.base_url.port or 0)
            assert third.returncode == 3, third.stderr
            assert f"127.0.0.1:{client.base_url.port} cannot be served" in third.stderr
            assert stand_in.poll() is None, "the refused service stopped a process it had no business with"
        finally:
            stand_in.kill()
            stand_in.wait()
        doc = client.get(f"/jobs/{job_id}", headers=auth).json()  # ran on undisturbed (or ended well)
        assert doc["status"] in ("running", "succeeded"), doc
