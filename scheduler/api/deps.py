"""Route dependencies as `Annotated` aliases: the service, the signed-in user, their job.

There is no request-wide DB session: each read opens a short session in a worker thread
(`service.db`), so a long-poll, a bcrypt hash or a streamed download never holds a pooled
connection, and a query waiting on the database never holds the event loop.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from scheduler import crud
from scheduler.api.errors import job_not_found, unauthorized
from scheduler.core.jwt import TokenError, token_subject
from scheduler.models import Job, User
from scheduler.service import Service


async def get_service(request: Request) -> Service:
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(get_service)]


bearer = HTTPBearer(auto_error=False, description="the access_token from POST /auth/sign-in")


async def get_current_user(
    service: ServiceDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> User:
    if credentials is None:
        raise unauthorized("Sign in first and send the token as 'Authorization: Bearer <token>'.")
    try:
        username = token_subject(credentials.credentials, service.jwt_secret)
    except TokenError as exc:
        raise unauthorized(f"{str(exc).capitalize().rstrip('.')}; sign in again.") from exc
    user = await service.known_user(username)
    if user is None:  # e.g. a token from before the database was reset
        raise unauthorized("The token's user does not exist; sign in again.")
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


async def get_owned_job(job_id: str, user: CurrentUser, service: ServiceDep) -> Job:
    """The caller's job; someone else's is a 404 exactly like a missing one."""
    job = await service.db(lambda s: crud.get_job(s, job_id=job_id, owner=user.username))
    if job is None:
        raise job_not_found(job_id)
    return job


OwnedJob = Annotated[Job, Depends(get_owned_job)]
