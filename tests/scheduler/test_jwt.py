"""Tokens: what is accepted, what is refused, and where the signing secret comes from."""

from __future__ import annotations

import base64
import json
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from jose import jwt as jose_jwt

from scheduler.core.config import Settings
from scheduler.core.jwt import TokenError, issue_token, load_secret, token_subject

SECRET = "test-secret-" + "x" * 40


def b64url(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def claims(**extra: object) -> dict[str, object]:
    now = int(datetime.now(UTC).timestamp())
    return {"sub": "alice", "iat": now, "exp": now + 600, **extra}


def assert_refused(token: object, secret: str = SECRET) -> TokenError:
    with pytest.raises(TokenError) as caught:
        token_subject(token, secret)  # type: ignore[arg-type]
    message = str(caught.value)
    assert message and message[0].islower() and " " in message  # a sentence for the 401 detail
    return caught.value


def test_round_trip() -> None:
    token = issue_token("alice", SECRET, 600)
    assert token_subject(token, SECRET) == "alice"
    payload = jose_jwt.get_unverified_claims(token)
    assert set(payload) == {"sub", "iat", "exp"}
    assert all(isinstance(payload[name], int) for name in ("iat", "exp"))
    assert payload["exp"] - payload["iat"] == 600


def test_issue_token_uses_the_given_time() -> None:
    now = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    payload = jose_jwt.get_unverified_claims(issue_token("alice", SECRET, 60, now=now))
    assert payload["iat"] == int(now.timestamp()) and payload["exp"] == int(now.timestamp()) + 60


def test_expired_token_is_refused() -> None:
    assert "expired" in str(assert_refused(issue_token("alice", SECRET, -10)))
    long_ago = datetime.now(UTC) - timedelta(hours=2)
    assert "expired" in str(assert_refused(issue_token("alice", SECRET, 3600, now=long_ago)))


def test_wrong_key_is_refused() -> None:
    assert_refused(issue_token("alice", "another-secret-" + "y" * 40, 600))


def test_tampered_payload_is_refused() -> None:
    header, payload, signature = issue_token("alice", SECRET, 600).split(".")
    original = jose_jwt.get_unverified_claims(f"{header}.{payload}.{signature}")
    assert_refused(f"{header}.{b64url({**original, 'sub': 'bob'})}.{signature}")


def test_alg_none_is_refused() -> None:
    assert_refused(f"{b64url({'alg': 'none', 'typ': 'JWT'})}.{b64url(claims())}.")
    assert_refused(f"{b64url({'alg': 'None', 'typ': 'JWT'})}.{b64url(claims())}.")


def test_other_algorithms_are_refused() -> None:
    assert_refused(jose_jwt.encode(claims(), SECRET, algorithm="HS512"))
    # an RS256 header over an HMAC signature made with the secret (the key-confusion attack)
    header = b64url({"alg": "RS256", "typ": "JWT"})
    _, payload, signature = jose_jwt.encode(claims(), SECRET, algorithm="HS256").split(".")
    assert_refused(f"{header}.{payload}.{signature}")


@pytest.mark.parametrize("missing", ["exp", "iat", "sub"])
def test_missing_claims_are_refused(missing: str) -> None:
    payload = claims()
    del payload[missing]
    assert_refused(jose_jwt.encode(payload, SECRET, algorithm="HS256"))


@pytest.mark.parametrize("sub", ["", 42, None, ["alice"]])
def test_bad_subject_is_refused(sub: object) -> None:
    assert_refused(jose_jwt.encode(claims(sub=sub), SECRET, algorithm="HS256"))


def test_non_integer_exp_is_refused() -> None:
    assert_refused(jose_jwt.encode(claims(exp="tomorrow"), SECRET, algorithm="HS256"))


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "",
        "a.b.c",
        "...",
        "Bearer x",
        "e30.e30.",
        "eyJhbGciOiJIUzI1NiJ9.W10.xx",
        "\x00\xff",
        None,
        42,
        b"x",
    ],
)
def test_garbage_is_refused(token: object) -> None:
    assert_refused(token)


def test_payload_that_is_not_an_object_is_refused() -> None:
    header, _, _ = issue_token("alice", SECRET, 600).split(".")
    assert_refused(f"{header}.{base64.urlsafe_b64encode(b'[1,2]').rstrip(b'=').decode()}.AAAA")


@pytest.mark.parametrize("extra", ["é", "!", " ", "\n", "=", "\x00"])
def test_a_token_with_characters_outside_base64url_is_refused(extra: str) -> None:
    # python-jose's decoder skips such characters, so the signature alone would still match
    token = issue_token("alice", SECRET, 60)
    for tampered in (token + extra, extra + token, token.replace(".", "." + extra, 1)):
        with pytest.raises(TokenError):
            token_subject(tampered, SECRET)


# --- the signing secret ----------------------------------------------------------------------


def make_settings(tmp_path: Path, **overrides: object) -> Settings:
    return Settings(data_dir=tmp_path / "data", **overrides)


def test_load_secret_generates_once_with_mode_600(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    first = load_secret(settings)
    path = tmp_path / "data" / "jwt_secret"
    assert path.read_text() == first
    assert len(first.encode()) >= settings.jwt_min_secret_bytes
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_secret(settings) == first
    assert load_secret(make_settings(tmp_path)) == first  # a restart keeps it


def test_env_secret_wins_over_the_file(tmp_path: Path) -> None:
    generated = load_secret(make_settings(tmp_path))
    assert load_secret(make_settings(tmp_path, jwt_secret=SECRET)) == SECRET != generated


def test_env_secret_does_not_create_a_file(tmp_path: Path) -> None:
    load_secret(make_settings(tmp_path, jwt_secret=SECRET))
    assert not (tmp_path / "data" / "jwt_secret").exists()


def test_short_env_secret_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="JWT_SECRET must be at least 32 bytes"):
        load_secret(make_settings(tmp_path, jwt_secret="too-short"))


def test_secret_length_counts_utf8_bytes(tmp_path: Path) -> None:
    assert load_secret(make_settings(tmp_path, jwt_secret="é" * 16)) == "é" * 16  # 32 bytes
    with pytest.raises(ValueError, match="JWT_SECRET"):
        load_secret(make_settings(tmp_path, jwt_secret="é" * 15 + "x"))  # 31 bytes


def test_short_secret_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "data" / "jwt_secret"
    path.parent.mkdir(parents=True)
    path.write_text("short\n")
    with pytest.raises(ValueError, match="JWT_SECRET must be at least") as caught:
        load_secret(make_settings(tmp_path))
    assert str(path) in str(caught.value)


def test_existing_secret_file_is_used_without_its_newline(tmp_path: Path) -> None:
    path = tmp_path / "data" / "jwt_secret"
    path.parent.mkdir(parents=True)
    path.write_text(SECRET + "\n")
    path.chmod(0o600)
    assert load_secret(make_settings(tmp_path)) == SECRET


def test_secret_file_created_by_a_concurrent_start_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race: the file appears between our failed read and our O_EXCL create."""
    import scheduler.core.jwt as module

    path = tmp_path / "data" / "jwt_secret"
    path.parent.mkdir(parents=True)
    real_read = module._read_when_written
    calls: list[Path] = []

    def read_then_lose_the_race(p: Path, timeout: float = 2.0) -> str:
        calls.append(p)
        if len(calls) == 1:
            path.write_text(SECRET)  # the other process wins just after our read
            raise FileNotFoundError(p)
        return real_read(p, timeout)

    monkeypatch.setattr(module, "_read_when_written", read_then_lose_the_race)
    assert load_secret(make_settings(tmp_path)) == SECRET
    assert len(calls) == 2


def test_concurrent_first_starts_agree_on_one_secret(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    barrier = threading.Barrier(8)

    def start() -> str:
        barrier.wait()
        return load_secret(settings)

    with ThreadPoolExecutor(8) as pool:
        secrets = set(pool.map(lambda _: start(), range(8)))
    assert secrets == {(tmp_path / "data" / "jwt_secret").read_text()}



def test_a_token_verified_before_still_expires_on_time() -> None:
    """Tokens are verified once and remembered; the expiry is still checked on every use."""
    token = issue_token("alice", SECRET, ttl_seconds=60)
    assert token_subject(token, SECRET) == "alice"
    exp = jose_claims(token)["exp"]
    assert token_subject(token, SECRET, now=exp) == "alice"  # the last second it is valid
    with pytest.raises(TokenError, match="expired"):
        token_subject(token, SECRET, now=exp + 1)
    with pytest.raises(TokenError, match="invalid"):  # the remembered token does not open other secrets
        token_subject(token, "another-" + SECRET)


def jose_claims(token: str) -> dict[str, int]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
