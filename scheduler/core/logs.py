"""Structured logs: one JSON object per line, with the job id as its own field when known."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime

JOB_ID = re.compile(r"\b[0-9a-f]{32}\b")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": message,
        }
        # modules log "job %s ..." (STYLE.md); lift the id out so logs can be filtered by job
        job_id = getattr(record, "job_id", None) or (m.group(0) if (m := JOB_ID.search(message)) else None)
        if job_id:
            entry["job_id"] = job_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs each request's URL whole at info, and callback URLs' queries hold receivers'
    # secrets: deliveries.py logs each attempt itself, with the query left out
    logging.getLogger("httpx").setLevel(max(logging.WARNING, root.level))
