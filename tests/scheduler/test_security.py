"""Passwords and usernames: bcrypt off the event loop, bcrypt's 72-byte limit, and the sign-up rules."""

from __future__ import annotations

import asyncio

import bcrypt
import pytest
from pydantic import ValidationError

from scheduler.core import security
from scheduler.core.config import Settings
from scheduler.core.security import hash_password, password_problem, username_problem, verify_password

ROUNDS = 4
SETTINGS = Settings()


def test_hash_and_verify_round_trip() -> None:
    hashed = asyncio.run(hash_password("correct-horse", ROUNDS))
    assert isinstance(hashed, str) and hashed.startswith("$2b$04$")
    assert asyncio.run(verify_password("correct-horse", hashed, ROUNDS)) is True


def test_wrong_password_is_false() -> None:
    hashed = asyncio.run(hash_password("correct-horse", ROUNDS))
    assert asyncio.run(verify_password("wrong-horse", hashed, ROUNDS)) is False
    assert asyncio.run(verify_password("", hashed, ROUNDS)) is False


def test_unknown_user_is_false_and_checks_a_dummy_hash_of_the_same_cost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checked: list[bytes] = []
    real_checkpw = bcrypt.checkpw

    def spy(password: bytes, hashed: bytes) -> bool:
        checked.append(hashed)
        return real_checkpw(password, hashed)

    monkeypatch.setattr(security.bcrypt, "checkpw", spy)
    assert asyncio.run(verify_password("correct-horse", None, ROUNDS)) is False
    assert asyncio.run(verify_password("no such user", None, ROUNDS)) is False  # even the dummy's own
    assert len(checked) == 2 and checked[0] == checked[1]  # computed once per cost, then cached
    assert checked[0].startswith(b"$2b$04$")
    assert asyncio.run(verify_password("x", None, 5)) is False
    assert checked[-1].startswith(b"$2b$05$")


def test_too_long_password_is_false_never_an_error() -> None:
    hashed = asyncio.run(hash_password("x" * 72, ROUNDS))
    assert asyncio.run(verify_password("x" * 73, hashed, ROUNDS)) is False
    assert asyncio.run(verify_password("x" * 200, None, ROUNDS)) is False


@pytest.mark.parametrize("stored", ["", "nonsense", "$2b$04$short", "é", "$2b$04$" + "!" * 53])
def test_malformed_stored_hash_is_false(stored: str) -> None:
    assert asyncio.run(verify_password("correct-horse", stored, ROUNDS)) is False


def test_72_byte_multibyte_password_works() -> None:
    password = "é" * 36  # 72 bytes in UTF-8
    assert password_problem(password, SETTINGS) is None
    hashed = asyncio.run(hash_password(password, ROUNDS))
    assert asyncio.run(verify_password(password, hashed, ROUNDS)) is True
    assert asyncio.run(verify_password("é" * 35 + "e", hashed, ROUNDS)) is False


def test_hash_refuses_what_password_problem_refuses() -> None:
    with pytest.raises(ValueError):
        asyncio.run(hash_password("x" * 73, ROUNDS))


@pytest.mark.parametrize("password", ["x" * 73, "é" * 37])
def test_password_over_72_bytes_is_a_sentence(password: str) -> None:
    problem = password_problem(password, SETTINGS)
    assert problem is not None and "72" in problem and "bcrypt" in problem and problem.endswith(".")


def test_short_password_is_a_sentence() -> None:
    problem = password_problem("short", SETTINGS)
    assert problem is not None and "8" in problem and problem.endswith(".")
    assert password_problem("12345678", SETTINGS) is None
    assert password_problem("éééééééé", SETTINGS) is None  # characters, not bytes


def test_password_limits_follow_the_settings() -> None:
    settings = Settings(password_min_length=12, password_max_bytes=20)
    assert "12" in (password_problem("x" * 11, settings) or "")
    assert "20" in (password_problem("x" * 21, settings) or "")
    assert password_problem("x" * 20, settings) is None
    # never above bcrypt's own limit, whatever the setting says
    assert "72" in (password_problem("x" * 73, Settings(password_max_bytes=100)) or "")


@pytest.mark.parametrize("username", ["alice", "bob", "a.b-c_d", "0day", "x" * 32])
def test_good_usernames(username: str) -> None:
    assert username_problem(username, SETTINGS) is None


@pytest.mark.parametrize(
    "username",
    ["Al", "al", "Alice", "../etc", ".alice", "-alice", "_alice", "x" * 33, "alice\n", "al ice", "ålice", ""],
)
def test_bad_usernames_are_a_sentence(username: str) -> None:
    problem = username_problem(username, SETTINGS)
    assert problem is not None and "username" in problem and "3 to 32" in problem and problem.endswith(".")


def test_custom_username_pattern_is_named() -> None:
    settings = Settings(username_pattern=r"^[A-Z]{4}$")
    assert username_problem("ABCD", settings) is None
    problem = username_problem("abcd", settings)
    assert problem is not None and "^[A-Z]{4}$" in problem


def test_a_username_pattern_that_does_not_compile_refuses_to_start() -> None:
    with pytest.raises(ValidationError, match="not a regular expression"):
        Settings(username_pattern="[a-")


def test_hashing_leaves_the_event_loop_responsive() -> None:
    async def scenario() -> tuple[int, bool]:
        ticks = 0
        stop = asyncio.Event()

        async def tick() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0)

        ticker = asyncio.create_task(tick())
        await asyncio.sleep(0)
        before = ticks
        hashed = await hash_password("correct-horse", 10)
        during_hash = ticks - before
        before = ticks
        ok = await verify_password("correct-horse", hashed, 10)
        during_verify = ticks - before
        stop.set()
        await ticker
        return min(during_hash, during_verify), ok

    ticked, ok = asyncio.run(scenario())
    assert ok and ticked >= 1
