"""A throwaway PostgreSQL server for tests: `initdb` and `pg_ctl` from the server binaries
(Debian package `postgresql`, which `scripts/setup requirements-dev.txt` installs).

The server lives in a temporary directory, listens on 127.0.0.1 only (on a free port, with its
unix socket in that directory), requires a password generated for the session, and is stopped
at the end. PostgreSQL refuses to run as root, so under root it runs as the `postgres` user.
Where the binaries are missing, `Unavailable` says why and the tests skip.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.conftest import free_port

if TYPE_CHECKING:
    import psycopg

SUPERUSER = "fractal"
# Not UTC on purpose: a timestamp stored or read with the wrong zone is then hours off.
SERVER_TIMEZONE = "Asia/Kolkata"  # +05:30 all year; zone data is a dependency of the server package
START_ATTEMPTS = 3  # a free port can be taken between free_port() and the server's bind


class Unavailable(Exception):
    """No PostgreSQL server can be started here; the str says why (the skip reason)."""


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str
    password: str

    def url(self, database: str) -> str:
        """The SQLAlchemy URL of one database (psycopg 3, as requirements.txt pins)."""
        return f"postgresql+psycopg://{self.user}:{self.password}@{self.host}:{self.port}/{database}"

    def admin(self) -> psycopg.Connection[Any]:
        """An autocommit connection to the `postgres` database, for CREATE/DROP DATABASE."""
        import psycopg  # here, so that importing this module never needs the driver

        return psycopg.connect(
            host=self.host, port=self.port, user=self.user, password=self.password,
            dbname="postgres", autocommit=True, connect_timeout=10,
        )

    @contextlib.contextmanager
    def fresh_database(self) -> Iterator[str]:
        """A new, empty database for one test; dropped afterwards (open connections included)."""
        name = f"test_{uuid.uuid4().hex[:16]}"
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        try:
            yield self.url(name)
        finally:
            with self.admin() as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def find_bindir() -> Path | None:
    """Where `initdb` and `pg_ctl` are: $PG_BINDIR, PATH, or the newest /usr/lib/postgresql/N/bin."""
    candidates = []
    if os.environ.get("PG_BINDIR"):
        candidates.append(Path(os.environ["PG_BINDIR"]))
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    versions = Path("/usr/lib/postgresql").glob("*/bin")  # Debian's layout, one folder per major
    candidates += sorted(versions, key=lambda p: [int(n) for n in re.findall(r"\d+", p.parent.name)])[::-1]
    for folder in candidates:
        if all(os.access(folder / tool, os.X_OK) for tool in ("initdb", "pg_ctl", "postgres")):
            return folder
    return None


def _server_account() -> pwd.struct_passwd | None:
    """The unprivileged account to run the server as; None means this process's own user."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise Unavailable(
            "running as root and there is no `postgres` user to run the PostgreSQL server as"
        ) from None


class _Runner:
    """Runs the server's tools as the server's account, in its directory."""

    def __init__(self, root: Path, account: pwd.struct_passwd | None) -> None:
        self.root, self.account = root, account

    def chown(self, path: Path) -> None:
        if self.account is not None:
            os.chown(path, self.account.pw_uid, self.account.pw_gid)

    def __call__(self, *args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        env = {"PATH": os.environ.get("PATH", os.defpath), "LC_ALL": "C.UTF-8", "HOME": str(self.root)}
        extra = {}
        if self.account is not None:
            extra = {"user": self.account.pw_uid, "group": self.account.pw_gid, "extra_groups": []}
        return subprocess.run(
            [str(a) for a in args], cwd=self.root, env=env, capture_output=True, text=True,
            timeout=timeout, check=False, **extra,
        )


def _log_tail(path: Path, lines: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return "(no server log)"


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """Start a private PostgreSQL server; stop it and remove its files on exit."""
    bindir = find_bindir()
    if bindir is None:
        raise Unavailable(
            "PostgreSQL server binaries (initdb, pg_ctl) not found in $PG_BINDIR, PATH or "
            "/usr/lib/postgresql/*/bin; install the Debian package `postgresql` "
            "(`scripts/setup requirements-dev.txt` does)"
        )
    account = _server_account()
    # Under root, in /tmp (not $TMPDIR) so the server's account can reach it; short, so the
    # socket's path stays within the 107-byte limit of a unix socket address.
    root = Path(tempfile.mkdtemp(prefix="fractal-pg-", dir="/tmp" if account is not None else None))
    run = _Runner(root, account)
    data, log = root / "data", root / "server.log"
    try:
        run.chown(root)
        password = secrets.token_hex(16)
        pwfile = root / "pwfile"
        pwfile.write_text(password + "\n")
        pwfile.chmod(0o600)
        run.chown(pwfile)
        done = run(
            bindir / "initdb", "-D", data, "-U", SUPERUSER, "--pwfile", pwfile, "-A", "scram-sha-256",
            "-E", "UTF8", "--locale", "C", "--no-sync",
        )
        pwfile.unlink()
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}): {done.stderr or done.stdout}")
        for _ in range(START_ATTEMPTS):
            port = free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c timezone={SERVER_TIMEZONE} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"  # throwaway data
            )
            started = run(bindir / "pg_ctl", "-D", data, "-l", log, "-w", "-t", "60", "-o", options, "start")
            if started.returncode == 0:
                break
        else:
            raise RuntimeError(f"the PostgreSQL server did not start:\n{started.stderr}\n{_log_tail(log)}")
        try:
            yield PostgresServer("127.0.0.1", port, SUPERUSER, password)
        finally:
            _stop(run, bindir, data)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _stop(run: _Runner, bindir: Path, data: Path) -> None:
    """`pg_ctl stop -m immediate`; if that fails, SIGKILL the postmaster this module started."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        stopped = run(bindir / "pg_ctl", "-D", data, "-m", "immediate", "-w", "-t", "30", "stop", timeout=60)
        if stopped.returncode == 0:
            return
    with contextlib.suppress(OSError, ValueError, IndexError):
        pid = int((data / "postmaster.pid").read_text().splitlines()[0])
        os.kill(pid, signal.SIGKILL)
