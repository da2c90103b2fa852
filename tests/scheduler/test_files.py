"""The service's files are private to its user (the database holds bcrypt hashes)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from fastapi.testclient import TestClient

from scheduler.core import files
from tests.scheduler.conftest import Client, sign_up_and_in, submit, wait_for


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_private_dir_creates_every_missing_level_0700(tmp_path: Path) -> None:
    files.private_dir(tmp_path / "a" / "b" / "c")
    assert [mode(tmp_path / p) for p in ("a", "a/b", "a/b/c")] == [0o700] * 3


def test_loose_paths_are_tightened_and_others_paths_left_alone(tmp_path: Path) -> None:
    mine, theirs = tmp_path / "mine", tmp_path / "theirs"
    mine.mkdir(mode=0o755)
    theirs.mkdir(mode=0o755)
    os.chmod(mine, 0o755)
    os.chmod(theirs, 0o755)
    if os.geteuid() == 0:
        os.chown(theirs, 65534, 65534)
        files.make_private(theirs)
        assert mode(theirs) == 0o755  # not ours: not changed
    files.make_private(mine)
    assert mode(mine) == 0o700


def test_the_database_and_its_wal_are_0600(tmp_path: Path) -> None:
    db, wal = tmp_path / "data" / "x.db", tmp_path / "data" / "x.db-wal"
    files.private_file(db)
    assert mode(db) == 0o600 and mode(db.parent) == 0o700
    wal.write_bytes(b"")
    for path in (db, wal):  # as an earlier version left them
        os.chmod(path, 0o644)
    files.private_file(db)
    assert mode(db) == mode(wal) == 0o600


def test_the_service_keeps_its_state_private(client: TestClient, settings: object) -> None:
    data = Path(client.app.state.service.settings.data_dir)
    auth = sign_up_and_in(client, "alice")
    assert wait_for(client, submit(client, auth)["job_id"], auth)["status"] == "succeeded"
    assert mode(data) == 0o700 and mode(data / "results") == 0o700
    for name in ("scheduler.db", "scheduler.db-wal", "scheduler.db-shm"):
        assert mode(data / name) == 0o600, name


def test_a_data_dir_left_readable_is_made_private_at_start(make_client: Client, settings: object) -> None:
    data = Path(settings.data_dir)  # type: ignore[attr-defined]
    data.mkdir(parents=True)
    os.chmod(data, 0o755)
    (data / "scheduler.db").write_bytes(b"")
    os.chmod(data / "scheduler.db", 0o644)
    client = make_client()
    sign_up_and_in(client, "alice")
    assert mode(data) == 0o700 and mode(data / "scheduler.db") == 0o600
