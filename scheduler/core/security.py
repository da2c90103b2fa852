"""Usernames and passwords: the sign-up rules and bcrypt hashing, kept off the event loop.

bcrypt is slow on purpose (about 0.2 s at cost 12), so every hash and check runs in a worker thread;
on the loop it would stall every other request for that long. bcrypt only reads 72 bytes of input
and the `bcrypt` 5 library raises ValueError beyond that: sign-up refuses such passwords with a
sentence instead of silently truncating them, and sign-in answers False.
"""

from __future__ import annotations

import asyncio
import re
import threading

import bcrypt

from scheduler.core.config import Settings

BCRYPT_MAX_BYTES = 72
_DEFAULT_USERNAME_RULE = (
    "a username is 3 to 32 characters: lower-case letters, digits, '_', '.' and '-', "
    "starting with a letter or a digit"
)


def username_problem(username: str, settings: Settings) -> str | None:
    """A sentence saying what is wrong with `username`, or None when it follows the rule."""
    if re.fullmatch(settings.username_pattern, username):
        return None
    if settings.username_pattern == Settings.model_fields["username_pattern"].default:
        rule = _DEFAULT_USERNAME_RULE
    else:
        rule = f"a username must match the pattern {settings.username_pattern}"
    return f"Invalid username {username!r}: {rule}."


def password_problem(password: str, settings: Settings) -> str | None:
    """A sentence saying why `password` cannot be used, or None when it can."""
    if len(password) < settings.password_min_length:
        return f"The password must be at least {settings.password_min_length} characters long."
    max_bytes = min(settings.password_max_bytes, BCRYPT_MAX_BYTES)
    size = len(password.encode("utf-8"))
    if size > max_bytes:
        return (
            f"The password must be at most {max_bytes} bytes in UTF-8 (this one has {size}); "
            f"{BCRYPT_MAX_BYTES} bytes is bcrypt's input limit, and longer passwords are not truncated."
        )
    return None


async def hash_password(password: str, rounds: int) -> str:
    """The bcrypt hash of `password` at cost `rounds`, computed in a worker thread.

    Raises ValueError for passwords over 72 bytes: check `password_problem` first.
    """
    return await asyncio.to_thread(_hash, password, rounds)


async def verify_password(password: str, hashed: str | None, rounds: int) -> bool:
    """Whether `password` matches `hashed`; never raises for bad input.

    `hashed` is None for an unknown user: the password is then checked against a dummy hash of the
    same cost and the answer is False, so sign-in takes about as long whether or not the user
    exists (no probing for usernames by timing).
    """
    return await asyncio.to_thread(_verify, password, hashed, rounds)


async def prepare(rounds: int) -> None:
    """Make the dummy hash now (at start-up), so the first unknown-user sign-in is not the one
    request that takes two hashes' time."""
    await asyncio.to_thread(_dummy_hash, rounds)


def _hash(password: str, rounds: int) -> str:
    return bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt(rounds)).decode("ascii")


def _verify(password: str, hashed: str | None, rounds: int) -> bool:
    secret = password.encode("utf-8")
    if len(secret) > BCRYPT_MAX_BYTES:
        return False  # could never have been stored: sign-up refuses it
    if hashed is None:
        _check(secret, _dummy_hash(rounds))
        return False
    return _check(secret, hashed.encode("utf-8"))


def _check(secret: bytes, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(secret, hashed)
    except ValueError:  # a malformed stored hash ("Invalid salt")
        return False


_dummy_hashes: dict[int, bytes] = {}
_dummy_lock = threading.Lock()


def _dummy_hash(rounds: int) -> bytes:
    """A hash at cost `rounds` that no password matches in practice, made once per cost, lazily."""
    with _dummy_lock:
        hashed = _dummy_hashes.get(rounds)
        if hashed is None:
            hashed = bcrypt.hashpw(b"no such user", bcrypt.gensalt(rounds))
            _dummy_hashes[rounds] = hashed
        return hashed
