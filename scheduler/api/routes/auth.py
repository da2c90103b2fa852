"""Sign-up, sign-in and the signed-in account."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

from fastapi import APIRouter, Depends, Request, status
from fastapi.security import HTTPBasic, HTTPBasicCredentials

from scheduler import crud, db
from scheduler.api.deps import AccountsDep, CurrentUser, EngineDep, SettingsDep
from scheduler.api.errors import (
    DATABASE_DOWN,
    SIGNED_IN,
    TOO_BIG,
    Answers,
    InvalidRequest,
    problem,
    unauthorized,
    unprocessable,
)
from scheduler.core.jwt import issue_token
from scheduler.core.ratelimit import throttle
from scheduler.core.security import hash_password, password_problem, username_problem, verify_password
from scheduler.models import Credentials, Me, Token, UserPublic

router = APIRouter(prefix="/auth", tags=["auth"])

BAD_CREDENTIALS = "Wrong username or password."
NO_CREDENTIALS = "Send a username and password as a JSON body or with HTTP Basic."

SIGN_UP_ANSWERS: Answers = {
    409: problem("the username is taken"),
    413: TOO_BIG,
    422: problem("a body that does not parse, or a username or password that breaks the rules",
                 model=InvalidRequest),
    429: problem("too many sign-ups from this address (SIGNUPS_PER_MINUTE)", "Retry-After"),
    503: DATABASE_DOWN,
}
SIGN_IN_ANSWERS: Answers = {
    401: problem("no credentials, malformed Basic credentials, or a wrong username or password",
                 "WWW-Authenticate"),
    413: TOO_BIG,
    422: problem("a body that does not parse", model=InvalidRequest),
    429: problem("too many attempts from this address, or for this username from it", "Retry-After"),
    503: DATABASE_DOWN,
}


class Utf8Basic(HTTPBasic):
    """HTTP Basic decoded as UTF-8 (RFC 7617; curl sends the bytes it was given), where
    FastAPI's decodes ASCII only: any password that sign-up accepts also signs in with -u."""

    async def __call__(self, request: Request) -> HTTPBasicCredentials | None:  # type: ignore[override]
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return None
        try:  # the header arrives as latin-1 text: its bytes, then strict base64, then UTF-8
            decoded = base64.b64decode(encoded.strip().encode("latin-1"), validate=True).decode()
        except (binascii.Error, UnicodeError) as exc:
            raise unauthorized(
                "The Basic credentials are not base64 of UTF-8 'username:password'.", "Basic"
            ) from exc
        username, sep, password = decoded.partition(":")
        if not sep:
            raise unauthorized("The Basic credentials have no ':' between username and password.", "Basic")
        return HTTPBasicCredentials(username=username, password=password)


basic = Utf8Basic(auto_error=False, description="username and password, as an alternative to the JSON body")


def client_address(request: Request) -> str:
    # behind a proxy listed in FORWARDED_ALLOW_IPS, uvicorn has put X-Forwarded-For here
    return request.client.host if request.client else "unknown"


@router.post("/sign-up", status_code=status.HTTP_201_CREATED, responses=SIGN_UP_ANSWERS)
async def sign_up(
    body: Credentials, request: Request, accounts: AccountsDep, engine: EngineDep, settings: SettingsDep
) -> UserPublic:
    """Create an account."""
    problem = username_problem(body.username, settings) or password_problem(body.password, settings)
    if problem:
        raise unprocessable(problem)
    # Before anything else: each hash costs ~0.2 s of CPU, and a 409 tells whether a name exists,
    # so unthrottled 409s would list the usernames.
    throttle((accounts.signups_per_client, client_address(request)))
    if await db.in_thread(engine, lambda s: crud.get_user(s, username=body.username)) is not None:
        raise crud.UsernameTaken(body.username)
    hashed = await hash_password(body.password, settings.bcrypt_rounds)
    user = await db.in_thread(
        engine, lambda s: crud.create_user(s, username=body.username, password_hash=hashed)
    )
    return UserPublic(username=user.username, created_at=user.created_at)


@router.post("/sign-in", responses=SIGN_IN_ANSWERS)
async def sign_in(
    request: Request,
    accounts: AccountsDep,
    engine: EngineDep,
    settings: SettingsDep,
    basic_credentials: Annotated[HTTPBasicCredentials | None, Depends(basic)],
    body: Credentials | None = None,
) -> Token:
    """Exchange a username and password (JSON body or HTTP Basic) for a bearer token."""
    if body is not None:
        username, password = body.username, body.password
    elif basic_credentials is not None:
        username, password = basic_credentials.username, basic_credentials.password
    else:
        raise unauthorized(NO_CREDENTIALS, "Basic")
    # Per client, and per (name, client): guessing from one address is slowed down, while
    # guesses from other addresses never lock the owner out of their own account.
    client = client_address(request)
    throttle(
        (accounts.signins_per_client, client),
        (accounts.signins_per_user_and_client, f"{username}\n{client}"),
    )
    user = await db.in_thread(engine, lambda s: crud.get_user(s, username=username))
    # an unknown user is checked against a dummy hash: same answer, similar time
    if not await verify_password(password, user.password_hash if user else None, settings.bcrypt_rounds):
        raise unauthorized(BAD_CREDENTIALS, "Basic")
    ttl = settings.jwt_ttl_seconds
    return Token(access_token=issue_token(username, accounts.jwt_secret, ttl), expires_in=ttl)


@router.get("/me", responses=SIGNED_IN)
async def me(user: CurrentUser, engine: EngineDep) -> Me:
    """Your account, with the `webhook_secret` that signs your jobs' callbacks."""
    secret = await db.in_thread(engine, lambda s: crud.webhook_secret(s, username=user.username))
    return Me(username=user.username, created_at=user.created_at, webhook_secret=secret)
