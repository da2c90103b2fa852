"""Sign-up and sign-in."""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.security import HTTPBasic, HTTPBasicCredentials

from scheduler import crud
from scheduler.api.deps import ServiceDep
from scheduler.core.jwt import issue_token
from scheduler.core.security import hash_password, password_problem, username_problem, verify_password
from scheduler.models import Credentials, Token, UserPublic

router = APIRouter(prefix="/auth", tags=["auth"])
basic = HTTPBasic(auto_error=False, description="username and password, as an alternative to the JSON body")

BAD_CREDENTIALS = "Wrong username or password."


@router.post("/sign-up", status_code=status.HTTP_201_CREATED)
async def sign_up(body: Credentials, service: ServiceDep) -> UserPublic:
    """Create an account."""
    settings = service.settings
    problem = username_problem(body.username, settings) or password_problem(body.password, settings)
    if problem:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, problem)
    taken = HTTPException(status.HTTP_409_CONFLICT, f"The username {body.username!r} is taken.")
    with service.session() as session:
        if crud.get_user(session, username=body.username) is not None:
            raise taken
    password_hash = await hash_password(body.password, settings.bcrypt_rounds)
    try:
        with service.session() as session:
            user = crud.create_user(session, username=body.username, password_hash=password_hash)
    except crud.UsernameTaken as exc:
        raise taken from exc
    return UserPublic(username=user.username, created_at=user.created_at)


@router.post("/sign-in")
async def sign_in(
    request: Request,
    service: ServiceDep,
    basic_credentials: Annotated[HTTPBasicCredentials | None, Depends(basic)],
    body: Credentials | None = None,
) -> Token:
    """Exchange a username and password (JSON body or HTTP Basic) for a bearer token."""
    if body is None and basic_credentials is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "Send a username and password as a JSON body or with HTTP Basic.",
            headers={"WWW-Authenticate": "Basic"},
        )
    username, password = (
        (body.username, body.password)
        if body
        else (
            basic_credentials.username,
            basic_credentials.password,  # type: ignore[union-attr]
        )
    )
    client = request.client.host if request.client else "unknown"
    for wait in (service.signins_per_client.hit(client), service.signins_per_user.hit(username)):
        if wait is not None:
            raise HTTPException(
                status.HTTP_429_TOO_MANY_REQUESTS,
                f"Too many sign-in attempts; try again in {math.ceil(wait)} seconds.",
                headers={"Retry-After": str(math.ceil(wait))},
            )
    with service.session() as session:
        user = crud.get_user(session, username=username)
    # an unknown user is checked against a dummy hash: same answer, similar time
    if not await verify_password(
        password, user.password_hash if user else None, service.settings.bcrypt_rounds
    ):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, BAD_CREDENTIALS, headers={"WWW-Authenticate": "Basic"}
        )
    ttl = service.settings.jwt_ttl_seconds
    return Token(access_token=issue_token(username, service.jwt_secret, ttl), expires_in=ttl)
