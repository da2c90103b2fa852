"""Access tokens: the signing secret, issuing a token, and reading its subject back.

All python-jose code of the project lives in this module. python-jose is thinly maintained, so its
surface is kept to one `encode` and one `decode` call behind three functions; swapping the library
means rewriting this file only.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import secrets
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from jose import jwt as jose_jwt
from jose.exceptions import ExpiredSignatureError, JWTClaimsError, JWTError

from scheduler.core.config import Settings

log = logging.getLogger(__name__)

ALGORITHM = "HS256"
SECRET_FILE = "jwt_secret"
# header.payload.signature in unpadded base64url, as issue_token makes them. python-jose's decoder
# skips characters outside the alphabet, so without this check `<token>é` would be accepted too.
TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
VERIFIED_TOKENS = 4096  # tokens remembered as verified (~1 MiB): far more than users signed in at once
_GENERATED_BYTES = 48  # secrets.token_urlsafe(48): 64 characters, 384 bits of entropy

# Every claim is checked, and the three the service relies on must be present.
_DECODE_OPTIONS = {
    "verify_signature": True,
    "verify_exp": True,
    "verify_iat": True,
    "verify_nbf": True,
    "verify_sub": True,
    "require_exp": True,
    "require_iat": True,
    "require_sub": True,
    "leeway": 0,
}


class TokenError(Exception):
    """A token that cannot be trusted; its str is a lower-case sentence fit for a 401 detail."""


def load_secret(settings: Settings) -> str:
    """The HS256 key: `JWT_SECRET` if set, else the one kept in `DATA_DIR/jwt_secret`.

    The file is generated once so that tokens survive restarts without any configuration. It is
    created with mode 0600 from the start (O_CREAT|O_EXCL), so it is never readable by others, not
    even between creation and a chmod. A short secret refuses to start the service: an HS256 key
    that can be guessed lets anyone forge tokens for any user.
    """
    if settings.jwt_secret is not None:
        return _checked(settings.jwt_secret, settings.jwt_min_secret_bytes, source=None)
    path = Path(settings.data_dir) / SECRET_FILE
    secret = _read_or_create(path, max(_GENERATED_BYTES, settings.jwt_min_secret_bytes))
    return _checked(secret, settings.jwt_min_secret_bytes, source=path)


def _checked(secret: str, min_bytes: int, source: Path | None) -> str:
    size = len(secret.encode("utf-8"))
    if size >= max(min_bytes, 1):
        return secret
    if source is None:
        raise ValueError(
            f"JWT_SECRET must be at least {min_bytes} bytes long (it has {size}); "
            "use a random value, e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`."
        )
    raise ValueError(
        f"JWT_SECRET must be at least {min_bytes} bytes long, but the secret kept in {source} has {size}; "
        "delete that file to generate a new one, or set JWT_SECRET."
    )


def _read_or_create(path: Path, nbytes: int) -> str:
    """Read the secret file, creating it first if it does not exist (safe against concurrent starts)."""
    try:
        return _read_when_written(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(nbytes)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        # another process (a second replica, a parallel test) won the race: use its secret,
        # giving it a moment to finish writing
        return _read_when_written(path)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(secret)
        file.flush()
        os.fsync(file.fileno())
    log.info("generated a new JWT secret in %s", path)
    return secret


def _read(path: Path) -> str:
    mode = path.stat().st_mode
    if mode & 0o077:
        log.warning("%s is readable by other users (mode %o); chmod 600 it", path, mode & 0o777)
    return path.read_text(encoding="utf-8").strip()


def _read_when_written(path: Path, timeout: float = 2.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        secret = _read(path)
        if secret or time.monotonic() >= deadline:
            return secret  # still empty: _checked says so
        time.sleep(0.01)


def issue_token(subject: str, secret: str, ttl_seconds: int, now: datetime | None = None) -> str:
    """A signed HS256 token for `subject` (the username) that expires after `ttl_seconds`."""
    issued = now or datetime.now(UTC)
    iat = int(issued.timestamp())
    exp = int((issued + timedelta(seconds=ttl_seconds)).timestamp())
    return jose_jwt.encode({"sub": subject, "iat": iat, "exp": exp}, secret, algorithm=ALGORITHM)


def token_subject(token: str, secret: str, now: float | None = None) -> str:
    """The subject of a valid token; `TokenError` for anything else.

    Only HS256 is accepted, so `alg: none`, other HMAC sizes and public-key algorithms (the
    RS256-with-the-HMAC-secret confusion) are all refused by the algorithm allow-list.
    A token verified before is not verified again (every status poll sends the same one, and
    the check is most of a poll's work): its subject and expiry are remembered, and only the
    expiry is compared with the clock again.
    """
    if not isinstance(token, str) or not TOKEN_SHAPE.fullmatch(token):
        raise TokenError("the token is invalid")
    if not isinstance(secret, str) or not secret:
        raise TokenError("the token is invalid")
    subject, expires = _verified(token, secret)
    if (time.time() if now is None else now) > expires:  # python-jose's rule: expired once past exp
        raise TokenError("the token has expired")
    return subject


@functools.lru_cache(maxsize=VERIFIED_TOKENS)
def _verified(token: str, secret: str) -> tuple[str, float]:
    """(subject, exp) of a token whose signature and claims check out; raises TokenError (a
    failure is not cached: lru_cache keeps only returned values)."""
    try:
        claims = jose_jwt.decode(token, secret, algorithms=[ALGORITHM], options=_DECODE_OPTIONS)
    except ExpiredSignatureError as exc:
        raise TokenError("the token has expired") from exc
    except JWTClaimsError as exc:
        raise TokenError("the token's claims are invalid") from exc
    except JWTError as exc:
        raise TokenError("the token is invalid") from exc
    except (ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:  # malformed input
        raise TokenError("the token is invalid") from exc
    subject = claims.get("sub") if isinstance(claims, dict) else None
    if not isinstance(subject, str) or not subject:
        raise TokenError("the token has no subject")
    return subject, float(claims["exp"])
