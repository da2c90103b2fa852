"""Faults an operator meets: a full disk, a read-only or unreadable database. Requests answer a
JSON 503 with the driver's reason (never a 500, never half a record) and /readyz says so.

DATA_DIR is a small tmpfs of its own, so the disk can really fill up or turn read-only (mounting
needs root; elsewhere these tests skip with the reason).
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.scheduler.conftest import Client, sign_up_and_in
from tests.scheduler.openapi import assert_declared, declared, provoked

BOB = {"username": "bob", "password": "correct-horse"}


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def client_on_disk(make_client: Client, small_disk: Path) -> TestClient:
    data = small_disk / "data"  # model_copy does not derive the paths again: all three are given
    return make_client(data_dir=data, storage_dir=data / "results", database_url=f"sqlite:///{data}/scheduler.db")


def unavailable(response, reason: str) -> None:  # noqa: ANN001 - an httpx.Response
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/json"
    detail = response.json()["detail"]
    assert detail.startswith("The database is unavailable: ") and reason in detail and detail.endswith(".")


def fill(client: TestClient, disk: Path) -> Path:
    """Take every free byte; first empty SQLite's WAL, so that the next write needs new space
    (a WAL that still has room would take a few more writes, then fail the same way)."""
    with client.app.state.service.engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as f:
        for size in (65536, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * size)
    return filler


def test_a_full_disk_is_a_503_and_not_ready(client_on_disk: TestClient, small_disk: Path) -> None:
    client = client_on_disk
    alice = sign_up_and_in(client, "alice")
    filler = fill(client, small_disk)

    unavailable(client.post("/auth/sign-up", json=BOB), "database or disk is full")
    refused = client.post("/jobs", json={"width": 16, "height": 16}, headers=alice)
    unavailable(refused, "disk is full")
    assert_declared(client, refused, "/jobs")
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert set(ready.json()["problems"]) == {"database", "storage"}, ready.json()
    assert "disk is full" in ready.json()["problems"]["database"]

    filler.unlink()
    deadline = time.monotonic() + 30
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, client.get("/readyz").json()
        time.sleep(0.1)
    assert client.get("/jobs", headers=alice).json()["count"] == 0  # nothing half-written
    assert client.post("/auth/sign-in", json=BOB).status_code == 401
    assert client.post("/auth/sign-up", json=BOB).status_code == 201


def test_a_read_only_database_is_a_503_and_not_ready(client_on_disk: TestClient, small_disk: Path) -> None:
    client = client_on_disk
    alice = sign_up_and_in(client, "alice")
    # a read-only view of DATA_DIR over it (remounting the disk itself is refused while SQLite
    # has files open for writing); connections opened from now on go through it
    data = str(small_disk / "data")
    subprocess.run(["mount", "--bind", data, data], check=True)
    subprocess.run(["mount", "-o", "remount,bind,ro", data], check=True)
    client.app.state.service.engine.dispose()
    unavailable(client.post("/auth/sign-up", json=BOB), "readonly database")
    unavailable(client.post("/jobs", json={"width": 16, "height": 16}, headers=alice), "readonly database")
    problems = client.get("/readyz").json()["problems"]
    assert "readonly database" in problems["database"] and "storage" in problems


def damage(client: TestClient, data: Path) -> None:
    """Overwrite the SQLite file with bytes that are not a database."""
    engine = client.app.state.service.engine
    engine.dispose()  # closing checkpoints the WAL into the file: close first, then damage it
    for name in ("scheduler.db-wal", "scheduler.db-shm"):
        (data / name).unlink(missing_ok=True)
    (data / "scheduler.db").write_bytes(b"this is not a database " * 100)
    engine.dispose()  # connections opened from now on see the damage


def test_an_unreadable_database_is_a_503_and_not_ready(client_on_disk: TestClient, small_disk: Path) -> None:
    client = client_on_disk
    alice = sign_up_and_in(client, "alice")
    damage(client, small_disk / "data")
    unavailable(client.get("/jobs", headers=alice), "file is not a database")
    unavailable(client.post("/auth/sign-in", json=BOB), "file is not a database")
    assert "file is not a database" in client.get("/readyz").json()["problems"]["database"]


def test_every_operation_that_needs_the_database_declares_and_gives_its_503(
    client_on_disk: TestClient, small_disk: Path
) -> None:
    client = client_on_disk
    alice = sign_up_and_in(client, "alice")
    assert client.get("/auth/me", headers=alice).status_code == 200  # the service knows her now
    bob = sign_up_and_in(client, "bob")  # but not him: his token needs the database
    damage(client, small_disk / "data")
    job = f"/jobs/{'0' * 32}"  # whose is it? only the database knows
    asked = [
        client.post("/auth/sign-up", json={"username": "carol", "password": "correct-horse"}),
        client.post("/auth/sign-in", json=BOB),
        client.get("/auth/me", headers=alice),
        client.post("/jobs", json={"width": 16, "height": 16}, headers=alice),
        client.get("/jobs", headers=alice),
        client.get("/events", headers=bob),
        *(client.request(method, job + path, headers=alice) for method, path in [
            ("GET", ""), ("DELETE", ""), ("POST", "/cancel"), ("POST", "/retry"), ("GET", "/logs"),
            ("GET", "/result/list"), ("GET", "/result"), ("HEAD", "/result"), ("GET", "/events")]),
    ]
    for response in asked:
        assert response.status_code == 503, (response.request.method, response.request.url.path)
        if response.request.method != "HEAD":
            unavailable(response, "file is not a database")
    assert client.get("/readyz").status_code == 503
    # each 503 that /openapi.json declares was given (make_client checks that each was declared)
    doc = client.app.openapi()
    given = provoked(doc, client.app.state.answers, *doc["paths"])
    assert {a for a in given if a[2] == "503"} == {a for a in declared(doc, *doc["paths"]) if a[2] == "503"}
