"""The submit path cannot be one user's lever on everyone (issue: refused submits stalled all):
the cheap refusals come before the cost probe, the probe has its own bounded pool, a user past
their share of it is a 429 at once, and a probe whose client has gone is not run."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient
from starlette.requests import Request

from job_image.params import FractalParams
from scheduler import pricing
from scheduler.admission.cost import estimated_iterations
from scheduler.api.disconnect import ClientGone, unless_gone
from scheduler.pricing import Pricer
from tests.scheduler.conftest import TINY, Client, sign_up_and_in

COSTLY = {"width": 64, "height": 64, "center_x": 0.25, "center_y": 0, "zoom": 1e6, "max_iter": 100000}
TIMEOUT = 60  # seconds; every wait below ends long before unless the behaviour is broken


class Probes:
    """The real cost probe, counted, and held at its start while `gate` is closed."""

    def __init__(self) -> None:
        self.started = 0
        self.gate = threading.Event()
        self.gate.set()
        self._lock = threading.Lock()
        self.running = threading.Semaphore(0)

    def __call__(self, params: FractalParams) -> int:
        with self._lock:
            self.started += 1
        self.running.release()
        assert self.gate.wait(TIMEOUT), "the test never opened the gate"
        return estimated_iterations(params)


@pytest.fixture
def probes(monkeypatch: pytest.MonkeyPatch) -> Iterator[Probes]:
    spy = Probes()
    monkeypatch.setattr(pricing, "estimated_iterations", spy)
    yield spy
    spy.gate.set()


def test_a_user_at_their_quota_is_refused_before_pricing(make_client: Client, probes: Probes) -> None:
    client = make_client(local_max_concurrent=0, max_active_jobs_per_user=2)
    alice = sign_up_and_in(client, "alice")
    for _ in range(2):
        assert client.post("/jobs", json=TINY, headers=alice).status_code == 202
    assert probes.started == 2
    for _ in range(5):
        refused = client.post("/jobs", json=COSTLY, headers=alice)
        assert refused.status_code == 429, refused.text
        assert "unfinished jobs" in refused.json()["detail"]
    assert probes.started == 2  # none of the refused ones was priced


def test_probes_waiting_for_their_pool_never_hold_up_the_database(
    make_client: Client, probes: Probes
) -> None:
    """More probes held than asyncio's default pool has threads (min(32, cores + 4)): another
    user's reads and sign-in, which run in that pool, still answer."""
    held = 40
    client = make_client(local_max_concurrent=0, max_active_jobs_per_user=100, cost_probe_workers=held,
                         cost_probes_per_user=held, cost_probes_total=held)
    alice, bob = sign_up_and_in(client, "alice"), sign_up_and_in(client, "bob")
    probes.gate.clear()
    with ThreadPoolExecutor(held + 1) as pool:
        submits = [pool.submit(client.post, "/jobs", json=TINY, headers=alice) for _ in range(held)]
        for _ in range(held):
            assert probes.running.acquire(timeout=TIMEOUT), "the probes did not all start"
        try:
            assert pool.submit(client.get, "/jobs", headers=bob).result(TIMEOUT / 4).status_code == 200
            creds = {"username": "bob", "password": "correct-horse"}
            assert pool.submit(client.post, "/auth/sign-in", json=creds).result(TIMEOUT / 4).is_success
        finally:
            probes.gate.set()
        assert [s.result(TIMEOUT).status_code for s in submits] == [202] * held


def test_a_user_past_their_share_of_pricing_gets_429s_at_once(make_client: Client, probes: Probes) -> None:
    client = make_client(
        local_max_concurrent=0, cost_probe_workers=3, cost_probes_per_user=2, cost_probes_total=3
    )
    alice, bob, carol = (sign_up_and_in(client, name) for name in ("alice", "bob", "carol"))
    probes.gate.clear()
    with ThreadPoolExecutor(3) as pool:
        held = [pool.submit(client.post, "/jobs", json=COSTLY, headers=alice) for _ in range(2)]
        for _ in range(2):
            assert probes.running.acquire(timeout=TIMEOUT)
        try:
            refused = client.post("/jobs", json=COSTLY, headers=alice)
            assert refused.status_code == 429, refused.text
            assert refused.headers["retry-after"] == "1"
            assert "being priced" in refused.json()["detail"]
            bobs = pool.submit(client.post, "/jobs", json=TINY, headers=bob)  # the third slot, not alice's
            assert probes.running.acquire(timeout=TIMEOUT)
            full = client.post("/jobs", json=TINY, headers=carol)  # every slot is taken
            assert full.status_code == 429 and "3 submits are being priced" in full.json()["detail"]
        finally:
            probes.gate.set()
        assert bobs.result(TIMEOUT).status_code == 202
        assert [h.result(TIMEOUT).status_code for h in held] == [202, 202]
    assert probes.started == 3
    assert client.app.state.service.pricer.in_flight == 0


def test_a_probe_not_started_when_its_caller_gives_up_never_runs(probes: Probes) -> None:
    async def scenario() -> None:
        pricer = Pricer(workers=1, per_user=5, total=5)
        params = FractalParams(**TINY)
        probes.gate.clear()
        first = asyncio.create_task(pricer.estimate("alice", params))
        await asyncio.to_thread(probes.running.acquire, timeout=TIMEOUT)
        second = asyncio.create_task(pricer.estimate("alice", params))  # waits for the one thread
        await asyncio.sleep(0)
        second.cancel()
        with pytest.raises(asyncio.CancelledError):
            await second
        probes.gate.set()
        assert await first > 0
        assert probes.started == 1
        while pricer.in_flight:  # the slot comes back from the pool's thread
            await asyncio.sleep(0.01)
        pricer.close()

    asyncio.run(asyncio.wait_for(scenario(), TIMEOUT))


def test_work_for_a_client_that_disconnects_is_cancelled() -> None:
    async def scenario() -> None:
        gone = asyncio.Event()

        async def receive() -> dict[str, object]:
            await gone.wait()
            return {"type": "http.disconnect"}

        request = Request({"type": "http", "method": "POST", "headers": []}, receive)
        started, cancelled = asyncio.Event(), asyncio.Event()

        async def work() -> int:
            started.set()
            try:
                await asyncio.sleep(TIMEOUT)
            except asyncio.CancelledError:
                cancelled.set()
                raise
            return 1

        waiting = asyncio.create_task(unless_gone(request, work()))
        await started.wait()
        gone.set()
        with pytest.raises(ClientGone):
            await waiting
        assert cancelled.is_set()

        async def quick() -> int:
            return 7

        async def stays() -> dict[str, object]:
            await asyncio.Event().wait()
            return {"type": "http.disconnect"}

        assert await unless_gone(Request({"type": "http", "headers": []}, stays), quick()) == 7

    asyncio.run(asyncio.wait_for(scenario(), TIMEOUT))


def test_pricing_busy_is_declared(client: TestClient) -> None:
    answer = client.app.openapi()["paths"]["/jobs"]["post"]["responses"]["429"]
    assert "COST_PROBES_PER_USER" in answer["description"] and "Retry-After" in answer["headers"]
