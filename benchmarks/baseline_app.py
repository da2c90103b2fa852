"""The yardstick of benchmarks/api_load.py: a minimal FastAPI app that answers GET /jobs/{id}
with the same document and the same checks as the service, and nothing else.

The same bearer check (HTTPBearer, python-jose HS256 with the service's secret) and one SQLite
read in a worker thread of the service's own database: the job's latest document from the event
log, as stored (the service builds it from the job's row). Served by the same uvicorn (httptools,
uvloop), one process:

    JWT_SECRET=... BASELINE_DB=data/scheduler.db .venv/bin/python -m uvicorn benchmarks.baseline_app:app
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from jose import JWTError, jwt

SECRET = os.environ["JWT_SECRET"]
DATABASE = os.environ["BASELINE_DB"]
READ = "SELECT document FROM jobevent WHERE job_id = ? AND owner = ? ORDER BY seq DESC LIMIT 1"

app = FastAPI()
bearer = HTTPBearer()
connections = threading.local()  # one SQLite connection per worker thread


def read_document(job_id: str, owner: str) -> bytes | None:
    if not hasattr(connections, "db"):
        connections.db = sqlite3.connect(DATABASE)
    row = connections.db.execute(READ, (job_id, owner)).fetchone()
    return row[0].encode() if row else None


@app.get("/jobs/{job_id}")
async def get_job(
    job_id: str, credentials: Annotated[HTTPAuthorizationCredentials, Depends(bearer)]
) -> Response:
    try:
        owner = jwt.decode(credentials.credentials, SECRET, algorithms=["HS256"])["sub"]
    except JWTError as exc:
        raise HTTPException(401, "invalid token") from exc
    document = await asyncio.to_thread(read_document, job_id, owner)
    if document is None:
        raise HTTPException(404, "no such job")
    return Response(document, media_type="application/json")
