"""Callback slots are shared fairly: one user's endpoint that never answers holds at most
CALLBACK_CONCURRENCY_PER_USER of them, so another user's callback goes out at once; and no
callback URL's query (where receivers keep tokens) reaches the log."""

from __future__ import annotations

import collections
import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest

from scheduler.core import logs
from scheduler.deliveries import fair_pick, redact
from scheduler.models import Job
from tests.scheduler.conftest import Client, sign_up_and_in, submit
from tests.scheduler.receiver import receiving
from tests.scheduler.test_callback_delivery import FAST, callback_settles


@contextmanager
def never_answering() -> Iterator[tuple[str, list[float]]]:
    """An endpoint that accepts connections and never answers; the times it accepted them."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[float] = []
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:  # closed: the test is over
                return
            accepted.append(time.time())
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}/hook", accepted
    finally:
        server.close()
        for conn in held:
            conn.close()
        thread.join(10)


def test_a_dead_endpoint_holds_only_its_users_share_of_the_slots(make_client: Client) -> None:
    settings = {**FAST, "callback_timeout": 1.0, "callback_concurrency": 2,
                "callback_concurrency_per_user": 1, "local_max_concurrent": 0}
    with never_answering() as (dead, accepted), receiving([204]) as hook:
        client = make_client(**settings)
        mallory, alice = sign_up_and_in(client, "mallory"), sign_up_and_in(client, "alice")
        for _ in range(6):  # each ends at once (cancelled while queued): six callbacks due
            job_id = submit(client, mallory, callback_url=dead)["job_id"]
            assert client.post(f"/jobs/{job_id}/cancel", headers=mallory).status_code == 200
        deadline = time.monotonic() + 60
        while not accepted:  # mallory's callbacks are being attempted
            assert time.monotonic() < deadline, "no callback reached the dead endpoint"
            time.sleep(0.05)
        job_id = submit(client, alice, callback_url=hook.url)["job_id"]
        ended = client.post(f"/jobs/{job_id}/cancel", headers=alice).json()["finished_at"]
        assert callback_settles(client, job_id, alice)["callback"]["state"] == "delivered"
        delivered = time.time()
    since_end = [t for t in accepted if t >= datetime.fromisoformat(ended).timestamp()]
    # with fair slots alice's went out in the free one: at most mallory's one attempt began meanwhile
    # (first come, first served, it waited for mallory's six to time out, two at a time)
    assert len([t for t in since_end if t <= delivered]) <= 2, (len(accepted), since_end)


def due(owner: str, seconds: int) -> Job:
    at = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)
    return Job(id=f"{owner}{seconds}", owner=owner, status="succeeded", params={}, runner="local",
               callback_url="http://x", callback_state="pending", callback_next_at=at)


def test_free_slots_go_to_the_users_with_fewest_in_flight() -> None:
    backlog = [due("mallory", s) for s in range(10)] + [due("alice", 20), due("bob", 30), due("bob", 31)]
    picked = fair_pick(backlog, collections.Counter(mallory=1), free=4, per_user=3)
    assert [j.id for j in picked] == ["alice20", "bob30", "mallory0", "bob31"]
    assert fair_pick(backlog, collections.Counter(mallory=3), free=10, per_user=3)[-1].owner == "bob"
    assert [j.owner for j in fair_pick(backlog, collections.Counter(), free=3, per_user=1)] == [
        "mallory", "alice", "bob"]


def test_callback_urls_reach_the_log_without_their_query(
    make_client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    assert redact("https://example.com/hook?token=SECRET#x") == "https://example.com/hook?..."
    root, httpx_log = logging.getLogger(), logging.getLogger("httpx")
    handlers, level, httpx_level = root.handlers[:], root.level, httpx_log.level
    logs.configure("info")  # what `python -m scheduler` sets up, httpx's request log included
    root.addHandler(caplog.handler)
    try:
        with receiving([500, 204]) as hook:
            client = make_client(**FAST, local_max_concurrent=0)
            alice = sign_up_and_in(client, "alice")
            job_id = submit(client, alice, callback_url=f"{hook.url}?token=SECRET")["job_id"]
            client.post(f"/jobs/{job_id}/cancel", headers=alice)
            assert callback_settles(client, job_id, alice)["callback"]["state"] == "delivered"
            assert hook.requests[-1].path == "/hook?token=SECRET"  # sent whole, of course
    finally:  # the suite's own logging back as it was
        root.handlers[:] = handlers
        root.setLevel(level)
        httpx_log.setLevel(httpx_level)
    lines = [record.getMessage() for record in caplog.records]
    assert any("/hook?..." in line for line in lines), lines
    assert not [line for line in lines if "SECRET" in line]
