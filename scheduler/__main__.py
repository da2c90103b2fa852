"""`python -m scheduler [--host H] [--port P]`: serve the API with uvicorn."""

from __future__ import annotations

import argparse
import os
import sys

import uvicorn
from pydantic import ValidationError

from job_image.storage import StorageError
from scheduler.api.http_protocol import limited_protocol
from scheduler.core import files, logs
from scheduler.core.config import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scheduler", description="the fractal-scheduler API")
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"), help="default 127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8888")), help="default 8888")
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "info"))
    args = parser.parse_args(argv)
    logs.configure(args.log_level)
    os.umask(files.PRIVATE_UMASK)  # what the service and its local jobs create is theirs alone
    try:
        settings = Settings()
        from scheduler.main import create_app

        app = create_app(settings)
    except (ValidationError, ValueError, OSError, StorageError) as exc:
        print(f"fractal-scheduler: cannot start: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_config=None,
        access_log=False,
        http=limited_protocol(settings.max_header_bytes, settings.header_timeout_seconds),
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
