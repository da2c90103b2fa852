"""Fixtures for the API: settings on embedded defaults in a temporary DATA_DIR, a TestClient,
signed-in users, and a deadline-bounded wait for a job's status."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from scheduler import db
from scheduler.core.config import Settings
from scheduler.main import create_app
from tests.scheduler.openapi import Answer, Recorder, undeclared

TINY = {"width": 48, "height": 32, "max_iter": 40, "device": "cpu"}
# a render that runs for minutes on 2 cores: for cancellation and restart tests
LONG = {"width": 4096, "height": 4096, "max_iter": 100_000, "precision": "float64", "device": "cpu"}
FINISHED = ("succeeded", "failed", "cancelled")


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    """A fresh SQLite file with every table: for the parts that take an engine, without a service."""
    engine = db.make_engine(f"sqlite:///{tmp_path / 'test.db'}")
    db.init_db(engine)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def opencl_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One PoCL kernel cache for the session: later jobs skip the kernel build."""
    return tmp_path_factory.mktemp("opencl-cache")


@pytest.fixture
def settings(tmp_path: Path, opencl_cache: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        jwt_secret="test-secret-" + "x" * 40,
        bcrypt_rounds=4,
        opencl_cache_dir=opencl_cache,
        signin_attempts_per_minute=1000,
        signin_attempts_per_client_per_minute=1000,
        result_cache=False,  # tests submit equal renders meaning each to run (test_result_cache.py: on)
    )


Client = Callable[..., TestClient]


@pytest.fixture
def make_client(settings: Settings) -> Iterator[Client]:
    """Builds started apps (lifespan entered); all are shut down at the end of the test. Every
    answer they gave must be one that /openapi.json declares (docs/design.md, "HTTP API"): checked then."""
    opened: list[tuple[TestClient, list[Answer]]] = []

    def make(**overrides: Any) -> TestClient:
        app, answers = create_app(settings.model_copy(update=overrides)), []
        app.add_middleware(Recorder, answers=answers)
        app.state.answers = answers  # for tests that check which answers they provoked
        client = TestClient(app)
        client.__enter__()
        opened.append((client, answers))
        return client

    yield make
    for client, _ in reversed(opened):
        client.__exit__(None, None, None)
    found = [line for client, answers in opened for line in undeclared(client.app.openapi(), answers)]
    assert not found, "answers that /openapi.json does not declare:\n" + "\n".join(found)


@pytest.fixture
def client(make_client: Client) -> TestClient:
    return make_client()


def sign_up_and_in(client: TestClient, username: str, password: str = "correct-horse") -> dict[str, str]:
    creds = {"username": username, "password": password}
    assert client.post("/auth/sign-up", json=creds).status_code in (201, 409)
    response = client.post("/auth/sign-in", json=creds)
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


@pytest.fixture
def alice(client: TestClient) -> dict[str, str]:
    return sign_up_and_in(client, "alice")


@pytest.fixture
def bob(client: TestClient) -> dict[str, str]:
    return sign_up_and_in(client, "bob")


def wait_for(
    client: TestClient,
    job_id: str,
    auth: dict[str, str],
    statuses: tuple[str, ...] = FINISHED,
    timeout: float = 120,
) -> dict[str, Any]:
    """Poll until the job reaches one of `statuses`, or fail at the deadline. Waiting for an end
    uses the API's long-poll; waiting for an intermediate status polls every 50 ms."""
    deadline = time.monotonic() + timeout
    long_poll = 2 if set(statuses) <= set(FINISHED) else 0
    doc: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = client.get(f"/jobs/{job_id}", params={"wait": long_poll}, headers=auth)
        assert response.status_code == 200, response.text
        doc = response.json()
        if doc["status"] in statuses:
            return doc
        if not long_poll:
            time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not reach {statuses} in {timeout} s: {doc}")


def submit(client: TestClient, auth: dict[str, str], **params: Any) -> dict[str, Any]:
    response = client.post("/jobs", json={**TINY, **params}, headers=auth)
    assert response.status_code == 202, response.text
    return response.json()
