"""Callbacks end to end, to a real HTTP receiver on 127.0.0.1: Standard Webhooks signatures
checked as a receiver would, the delivery state on the job, retries with backoff, and retries
that outlive a restart of the service."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient

from tests.conftest import free_port
from tests.scheduler.conftest import Client, sign_up_and_in, submit, wait_for
from tests.scheduler.receiver import Received, receiving
from tests.scheduler.test_http_e2e import serve, sign_in

FAST = {"callback_allow_private": True, "callback_backoff_seconds": 0.05, "callback_poll_seconds": 0.2}


def verify(secret: str, request: Received) -> dict[str, Any]:
    """A receiver's check, written from the Standard Webhooks spec (not the service's code)."""
    msg_id, timestamp = request.headers["webhook-id"], request.headers["webhook-timestamp"]
    key = base64.b64decode(secret.split("_", 1)[1])
    expected = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + request.body, hashlib.sha256).digest()
    versions = dict(part.split(",", 1) for part in request.headers["webhook-signature"].split(" "))
    assert hmac.compare_digest(base64.b64decode(versions["v1"]), expected), "bad signature"
    assert abs(time.time() - int(timestamp)) < 300, "stale timestamp"
    return json.loads(request.body)


def callback_settles(
    client: TestClient | httpx.Client, job_id: str, auth: dict[str, str], timeout: float = 60
) -> dict[str, Any]:
    """Poll until the job's callback is no longer pending (or fail at the deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        doc = client.get(f"/jobs/{job_id}", headers=auth).json()
        if doc["callback"]["state"] != "pending":
            return doc
        assert time.monotonic() < deadline, f"the callback of {job_id} stayed pending: {doc['callback']}"
        time.sleep(0.05)


def test_delivered_signed_after_retries(make_client: Client) -> None:
    with receiving([500, 503, 204]) as hook:
        client = make_client(**FAST)
        alice = sign_up_and_in(client, "alice")
        secret = client.get("/auth/me", headers=alice).json()["webhook_secret"]
        job_id = submit(client, alice, callback_url=hook.url)["job_id"]
        assert client.get(f"/jobs/{job_id}", headers=alice).json()["callback"] == {
            "url": hook.url,
            "state": "pending",
            "attempts": 0,
            "last_error": None,
        }
        final = wait_for(client, job_id, alice)
        doc = callback_settles(client, job_id, alice)
        assert doc["callback"] == {"url": hook.url, "state": "delivered", "attempts": 3, "last_error": None}
        assert len(hook.requests) == 3
        sent = [verify(secret, request) for request in hook.requests]
        assert {r.headers["webhook-id"] for r in hook.requests} == {f"msg_{job_id}"}  # one message
        assert all(s["job_id"] == job_id and s["status"] == final["status"] == "succeeded" for s in sent)
        assert hook.requests[0].headers["content-type"] == "application/json"


def test_a_signature_with_another_users_secret_does_not_verify(make_client: Client) -> None:
    with receiving([204]) as hook:
        client = make_client(**FAST)
        alice, bob = sign_up_and_in(client, "alice"), sign_up_and_in(client, "bob")
        bobs = client.get("/auth/me", headers=bob).json()["webhook_secret"]
        job_id = submit(client, alice, callback_url=hook.url)["job_id"]
        assert callback_settles(client, job_id, alice)["callback"]["state"] == "delivered"
        try:
            verify(bobs, hook.requests[0])
        except AssertionError as exc:
            assert "bad signature" in str(exc)
        else:
            raise AssertionError("bob's secret verified alice's callback")


def test_gives_up_after_the_attempts_with_the_reason(make_client: Client) -> None:
    with receiving([500]) as hook:
        client = make_client(**FAST, callback_attempts=3)
        alice = sign_up_and_in(client, "alice")
        job_id = submit(client, alice, callback_url=hook.url)["job_id"]
        doc = callback_settles(client, job_id, alice)
        assert doc["callback"] == {
            "url": hook.url,
            "state": "failed",
            "attempts": 3,
            "last_error": "HTTP 500",
        }
        assert len(hook.requests) == 3


def test_a_4xx_is_final(make_client: Client) -> None:
    with receiving([410]) as hook:
        client = make_client(**FAST)
        alice = sign_up_and_in(client, "alice")
        job_id = submit(client, alice, callback_url=hook.url)["job_id"]
        doc = callback_settles(client, job_id, alice)
        assert doc["callback"]["state"] == "failed" and doc["callback"]["attempts"] == 1
        assert doc["callback"]["last_error"] == "HTTP 410" and len(hook.requests) == 1


def test_a_private_address_is_refused_with_how_to_allow_it(client: TestClient, alice: dict[str, str]) -> None:
    refused = client.post("/jobs", json={"callback_url": "http://127.0.0.1:9/hook"}, headers=alice)
    assert refused.status_code == 422
    assert "CALLBACK_ALLOW_PRIVATE" in refused.json()["detail"]
    assert client.get("/jobs", headers=alice).json()["count"] == 0


def test_retries_survive_a_restart(tmp_path: Path, opencl_cache: Path) -> None:
    """The receiver is down while the job ends; the service stops before the retry; the next
    start (same database) delivers it."""
    data, port = tmp_path / "data", free_port()
    settings = {"CALLBACK_ALLOW_PRIVATE": "true", "CALLBACK_BACKOFF_SECONDS": "2", "JWT_SECRET": "k" * 40}
    url = f"http://127.0.0.1:{port}/hook"
    with serve(data, opencl_cache, **settings) as (client, _proc):
        auth = sign_in(client)
        secret = client.get("/auth/me", headers=auth).json()["webhook_secret"]
        job_id = client.post(
            "/jobs", json={"width": 48, "height": 32, "device": "cpu", "callback_url": url}, headers=auth
        ).json()["job_id"]
        deadline = time.monotonic() + 60
        while (callback := client.get(f"/jobs/{job_id}", headers=auth).json()["callback"])["attempts"] == 0:
            assert time.monotonic() < deadline, callback
            time.sleep(0.05)
        assert callback["state"] == "pending" and "ConnectError" in callback["last_error"]
    with receiving([204], port=port) as hook, serve(data, opencl_cache, **settings) as (client, _proc):
        doc = callback_settles(client, job_id, auth)
        assert doc["callback"]["state"] == "delivered" and doc["callback"]["attempts"] == 2
        assert [verify(secret, r)["job_id"] for r in hook.requests] == [job_id]
