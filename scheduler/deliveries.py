"""The callback queue: every ended job's callback is delivered from the database, so retries
survive a restart and replicas share the work.

A job that ends gets `callback_next_at` in the transaction that ends it (`job_status`). This
loop finds due callbacks, claims each with a conditional update and a lease (no two replicas
send one at once; a replica that dies mid-send leaves it due again when the lease ends), POSTs
the job document signed with the owner's webhook secret, and stores the outcome on the job:
`delivered`, `pending` with the next attempt's time (backoff), or `failed` with the reason.

Slots are shared fairly between users: a user has at most CALLBACK_CONCURRENCY_PER_USER POSTs in
flight, and each free slot goes to the user with the fewest in flight (`fair_pick`). Only what
can start at once is claimed, so nothing waits out its lease in a queue here: a user whose
endpoint never answers delays another's callback by one attempt's timeout at most, and only
when every slot is taken. URLs are logged without their query (`redact`): receivers put their
secrets there.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
from datetime import timedelta
from urllib.parse import urlsplit, urlunsplit

import httpx
from sqlalchemy import Engine
from sqlmodel import Session

from job_image.backoff import Backoff
from scheduler import crud, db, webhooks
from scheduler.callbacks import USER_AGENT, post_once
from scheduler.core.config import Settings
from scheduler.models import Job, JobPublic, as_utc, utcnow

log = logging.getLogger(__name__)

BATCH = 100  # due callbacks claimed per look


class CallbackDeliveries:
    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine, self.settings = engine, settings
        self._wake = asyncio.Event()
        self._sending: set[asyncio.Task[None]] = set()
        self._in_flight: collections.Counter[str] = collections.Counter()  # POSTs per owner
        # no kept-alive connections: each POST connects to the address just checked, and a
        # pooled TLS connection must never carry another host's callback
        self._client = httpx.AsyncClient(
            follow_redirects=False, limits=httpx.Limits(max_keepalive_connections=0)
        )

    def wake(self) -> None:
        """A job has ended here: look for due callbacks now."""
        self._wake.set()

    async def close(self, grace: float = 5.0) -> None:
        """After the loop stopped: give POSTs in flight `grace` seconds (an unfinished one is sent
        again after its lease, by the next start or another replica)."""
        if self._sending:
            _done, late = await asyncio.wait(set(self._sending), timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        await self._client.aclose()

    async def run(self) -> None:
        while True:
            try:
                await self.send_due()
                wait = await db.in_thread(self.engine, self._until_next)
            except Exception:  # a DB hiccup: look again later, the queue is in the database
                log.warning("callbacks: looking for due callbacks failed", exc_info=True)
                wait = self.settings.callback_poll_seconds
            with contextlib.suppress(TimeoutError):  # not wait_for: see EventFeed.run
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            self._wake.clear()

    def _until_next(self, session: Session) -> float:
        due = as_utc(crud.next_callback_at(session))
        poll = self.settings.callback_poll_seconds
        return poll if due is None else min(poll, max(0.0, (due - utcnow()).total_seconds()))

    async def send_due(self) -> int:
        """Claim what is due and can start now (fairly between users), and start sending it;
        how many were started."""
        settings = self.settings
        free = settings.callback_concurrency - self._in_flight.total()
        if free <= 0:
            return 0  # a slot that frees wakes the loop
        lease = timedelta(seconds=settings.callback_timeout * 3 + 5)
        in_flight = collections.Counter(self._in_flight)

        def claim(session: Session) -> list[Job]:
            per_user = settings.callback_concurrency_per_user
            due = crud.due_callbacks(session, now=utcnow(), limit=BATCH, per_owner=per_user)
            picked = fair_pick(due, in_flight, free, per_user)
            until = utcnow() + lease
            return [job for job in picked if crud.claim_callback(session, job=job, lease_until=until)]

        claimed = await db.in_thread(self.engine, claim)
        for job in claimed:
            self._in_flight[job.owner] += 1
            task = asyncio.create_task(self._send(job), name=f"callback-{job.id}")
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        return len(claimed)

    async def _send(self, job: Job) -> None:
        try:
            await self._attempt(job)
        except Exception:  # never lose the loop to one job; the lease makes it due again
            log.exception("callback for job %s: attempt failed unexpectedly", job.id)
        finally:
            self._in_flight[job.owner] -= 1
            if self._in_flight[job.owner] <= 0:
                del self._in_flight[job.owner]
            self.wake()  # a slot is free

    async def _attempt(self, job: Job) -> None:
        settings, url = self.settings, redact(job.callback_url or "")
        secret = await db.in_thread(self.engine, lambda s: crud.webhook_secret(s, username=job.owner))
        body = json.dumps(JobPublic.of(job).model_dump(mode="json")).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            **webhooks.headers(secret, f"msg_{job.id}", int(time.time()), body),
        }
        outcome = await post_once(
            self._client,
            job.callback_url or "",
            body,
            headers,
            allow_private=settings.callback_allow_private,
            timeout=settings.callback_timeout,
        )
        attempt = job.callback_attempts + 1
        if outcome.delivered:
            state, next_at = "delivered", None
            log.info("callback for job %s delivered to %s (attempt %d)", job.id, url, attempt)
        elif outcome.retry and attempt < settings.callback_attempts:
            backoff = Backoff(
                settings.callback_backoff_seconds, settings.callback_backoff_max_seconds, 0.1, attempt - 1
            )
            state, next_at = "pending", utcnow() + timedelta(seconds=backoff.next())
            log.warning(
                "callback for job %s to %s failed (attempt %d): %s; retrying",
                job.id,
                url,
                attempt,
                outcome.reason,
            )
        else:
            state, next_at = "failed", None
            log.error(
                "callback for job %s to %s given up after %d attempts: %s",
                job.id,
                url,
                attempt,
                outcome.reason,
            )
        error = outcome.reason
        await db.in_thread(
            self.engine,
            lambda s: crud.record_callback(s, job_id=job.id, state=state, error=error, next_at=next_at),
        )


def fair_pick(due: list[Job], in_flight: collections.Counter[str], free: int, per_user: int) -> list[Job]:
    """Up to `free` of `due` (oldest first), a slot at a time to the user with the fewest POSTs
    in flight (`in_flight`, then counting those picked), never more than `per_user` of one user."""
    waiting: dict[str, collections.deque[Job]] = {}
    for job in sorted(due, key=lambda j: (as_utc(j.callback_next_at) or utcnow(), j.id)):
        waiting.setdefault(job.owner, collections.deque()).append(job)
    taken, picked = collections.Counter(in_flight), []
    while len(picked) < free:
        owners = [owner for owner, jobs in waiting.items() if jobs and taken[owner] < per_user]
        if not owners:
            break
        owner = min(owners, key=lambda o: taken[o])  # ties: dict order, the oldest due first
        picked.append(waiting[owner].popleft())
        taken[owner] += 1
    return picked


def redact(url: str) -> str:
    """The URL without its query and fragment (receivers' tokens live there) for the log."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query="", fragment="")) + ("?..." if parts.query else "")
