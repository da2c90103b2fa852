"""Accounts as the routes see them: the token key, known users, and the sign-in rate limiters."""

from __future__ import annotations

from sqlalchemy import Engine

from scheduler import crud, db
from scheduler.core.config import Settings
from scheduler.core.jwt import load_secret
from scheduler.core.ratelimit import RateLimiter
from scheduler.models import User


class Accounts:
    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings, self.engine = settings, engine
        self.jwt_secret = load_secret(settings)  # refuses to start with a short secret
        self._users: dict[str, User] = {}  # accounts are never removed, so a hit stays true
        self.signins_per_user_and_client = RateLimiter(settings.signin_attempts_per_minute)
        self.signins_per_client = RateLimiter(settings.signin_attempts_per_client_per_minute)
        self.signups_per_client = RateLimiter(settings.signups_per_minute)

    async def known_user(self, username: str) -> User | None:
        """The account, from memory after the first look-up: every request checks its token's
        user, and this saves that query on the hot path (GET /jobs/{id} polling)."""
        user = self._users.get(username)
        if user is None:
            user = await db.in_thread(self.engine, lambda s: crud.get_user(s, username=username))
            if user is not None:
                self._users[username] = user
        return user
