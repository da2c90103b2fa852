"""Route dependencies as `Annotated` aliases: each route asks for the parts it uses (the
database engine, the job operations, the tracker, the storage, accounts, ...), the signed-in
user, and their job. The parts are wired once per app (`service.py`).

There is no request-wide DB session: each read opens a short session in a worker thread
(`db.in_thread`), so a long-poll, a bcrypt hash or a streamed download never holds a pooled
connection, and a query waiting on the database never holds the event loop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine

from job_image.storage import Storage
from scheduler.accounts import Accounts
from scheduler.api.errors import job_not_found, unauthorized
from scheduler.core.config import Settings
from scheduler.core.jwt import TokenError, token_subject
from scheduler.events import EventFeed
from scheduler.jobs import Jobs
from scheduler.metrics import Metrics
from scheduler.models import Job, User
from scheduler.readiness import Readiness
from scheduler.service import Service
from scheduler.tracker import Tracker
from scheduler.videos import Videos


def _part(name: str) -> Callable[[Request], Awaitable[Any]]:
    """A dependency that hands out one wired part (async: no thread-pool hop per request)."""

    async def part(request: Request) -> Any:
        service: Service = request.app.state.service
        return getattr(service, name)

    return part


SettingsDep = Annotated[Settings, Depends(_part("settings"))]
EngineDep = Annotated[Engine, Depends(_part("engine"))]
StorageDep = Annotated[Storage, Depends(_part("storage"))]
TrackerDep = Annotated[Tracker, Depends(_part("tracker"))]
JobsDep = Annotated[Jobs, Depends(_part("jobs"))]
AccountsDep = Annotated[Accounts, Depends(_part("accounts"))]
EventsDep = Annotated[EventFeed, Depends(_part("events"))]
ReadinessDep = Annotated[Readiness, Depends(_part("readiness"))]
MetricsDep = Annotated[Metrics, Depends(_part("metrics"))]
VideosDep = Annotated[Videos, Depends(_part("videos"))]


bearer = HTTPBearer(auto_error=False, description="the access_token from POST /auth/sign-in")


async def get_current_user(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> User:
    # The service is read from the request, not through AccountsDep: every dependency FastAPI
    # resolves costs a status poll about as much as the token check (benchmarks/api_load.py).
    return await authenticate(request.app.state.service.accounts, credentials)


async def authenticate(accounts: Accounts, credentials: HTTPAuthorizationCredentials | None) -> User:
    """The user the bearer token names; a 401 for no token, a bad or expired one, or an unknown user."""
    if credentials is None:
        raise unauthorized("Sign in first and send the token as 'Authorization: Bearer <token>'.")
    try:
        username = token_subject(credentials.credentials, accounts.jwt_secret)
    except TokenError as exc:
        raise unauthorized(f"{str(exc).capitalize().rstrip('.')}; sign in again.") from exc
    user = await accounts.known_user(username)
    if user is None:  # e.g. a token from before the database was reset
        raise unauthorized("The token's user does not exist; sign in again.")
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


async def get_owned_job(job_id: str, user: CurrentUser, request: Request) -> Job:
    """The caller's job; someone else's is a 404 exactly like a missing one."""
    job = await request.app.state.service.job_reads.owned(job_id, user.username)
    if job is None:
        raise job_not_found(job_id)
    return job


OwnedJob = Annotated[Job, Depends(get_owned_job)]
