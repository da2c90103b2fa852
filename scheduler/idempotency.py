"""`Idempotency-Key` on `POST /jobs` (draft-ietf-httpapi-idempotency-key-header): a retried
submit whose first answer was lost gets that answer again instead of making a second job.

A key belongs to one user and lives `IDEMPOTENCY_TTL_SECONDS`. The first request with a key
inserts its row (the primary key decides between racing requests, on every replica); the job's
insert fills in the answer in the same transaction (`job_status.create`), so a key never points
at a job that does not exist. A request that fails before that gives its key back (`release`):
the client may try again with it. Pure DB functions; the service calls them in worker threads.
https://datatracker.ietf.org/doc/draft-ietf-httpapi-idempotency-key-header/
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from scheduler.models import IdempotencyKey, as_utc

MAX_KEY_LENGTH = 255


class KeyInProgress(Exception):
    """The key's first request is still being handled: 409."""


class KeyReused(Exception):
    """The key came with another body before: 422."""


class BadKey(ValueError):
    """Not a key this service keeps (empty, too long, not printable ASCII): 422."""


@dataclass(frozen=True)
class Replay:
    """The first answer to the key: the job and its document as it was then."""

    job_id: str
    document: dict[str, Any]


def parse_key(header: str) -> str:
    """The key of an `Idempotency-Key` header: an sf-string (`"..."`, RFC 8941) or, as many
    clients send it, the bare text."""
    key = header.strip()
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    if not key or len(key) > MAX_KEY_LENGTH or not all(" " <= c <= "~" for c in key):
        raise BadKey(f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable ASCII characters.")
    return key


def fingerprint(body: dict[str, Any]) -> str:
    """The request as validated (defaults filled in), in one canonical form: equal requests
    match however their JSON was spelt."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def claim(
    session: Session, *, owner: str, key: str, fingerprint: str, now: datetime, ttl: float, lease: float
) -> Replay | None:
    """Take the key for a new request (None), or the first answer to replay. Raises KeyReused
    for another body, KeyInProgress while the first request runs. An expired key, or one whose
    first request stopped without an answer for `lease` seconds (its replica died), is taken anew."""
    session.execute(delete(IdempotencyKey).where(col(IdempotencyKey.expires_at) < now))
    for _ in range(2):  # the second round: after an expired or abandoned row was removed
        session.add(IdempotencyKey(owner=owner, key=key, fingerprint=fingerprint, created_at=now,
                                   expires_at=now + timedelta(seconds=ttl)))
        try:
            session.commit()
            return None
        except IntegrityError:  # it exists: a replica or thread took it first
            session.rollback()
        found = session.get(IdempotencyKey, (owner, key), populate_existing=True)
        if found is None:  # released meanwhile
            continue
        if found.job_id is None and as_utc(found.created_at) + timedelta(seconds=lease) < now:
            release(session, owner=owner, key=key, in_progress_since=found.created_at)
            continue
        if found.fingerprint != fingerprint:
            raise KeyReused(key)
        if found.job_id is None or found.response is None:
            raise KeyInProgress(key)
        return Replay(found.job_id, found.response)
    raise KeyInProgress(key)  # it came back at once both times: another request holds it


def answer(session: Session, *, owner: str, key: str, job_id: str, document: dict[str, Any]) -> None:
    """Record the first answer (the caller commits it with the job's insert)."""
    row = session.get(IdempotencyKey, (owner, key))
    if row is not None:
        row.job_id, row.response = job_id, document
        session.add(row)


def release(session: Session, *, owner: str, key: str, in_progress_since: datetime | None = None) -> None:
    """Give back a key whose request failed before it had an answer (never an answered one)."""
    query = delete(IdempotencyKey).where(
        col(IdempotencyKey.owner) == owner,
        col(IdempotencyKey.key) == key,
        col(IdempotencyKey.job_id).is_(None),
    )
    if in_progress_since is not None:  # only the abandoned row seen, not one just taken anew
        query = query.where(col(IdempotencyKey.created_at) == in_progress_since)
    session.execute(query)
    session.commit()
