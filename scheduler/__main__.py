"""`python -m scheduler [--host H] [--port P]`: serve the API with uvicorn."""

from __future__ import annotations

import argparse
import os
import socket
import sys

import uvicorn
from pydantic import ValidationError

from job_image.storage import StorageError
from scheduler.api.http_protocol import limited_protocol
from scheduler.core import files, logs, malloc
from scheduler.core.config import Settings
from scheduler.core.lock import DataDirInUse


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, taken before the app starts: uvicorn would bind only after the
    lifespan's start-up, which recovers DATA_DIR's jobs (uvicorn.Config.bind_socket, with its
    errors raised rather than exiting)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scheduler", description="the fractal-scheduler API")
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"), help="default 127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8888")), help="default 8888")
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "info"))
    args = parser.parse_args(argv)
    logs.configure(args.log_level)
    os.umask(files.PRIVATE_UMASK)  # what the service and its local jobs create is theirs alone
    malloc.keep_freed_chunks()
    try:
        settings = Settings()
        from scheduler.main import create_app

        app = create_app(settings)  # takes DATA_DIR's lock (DataDirInUse)
    except (ValidationError, ValueError, OSError, StorageError, DataDirInUse) as exc:
        print(f"fractal-scheduler: cannot start: {exc}", file=sys.stderr)
        return 2
    try:
        sock = bind(args.host, args.port)
    except OSError as exc:
        print(f"fractal-scheduler: cannot start: {args.host}:{args.port} cannot be served "
              f"({exc.strerror or exc}); is another service on it? --port chooses another", file=sys.stderr)
        return 3
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        http=limited_protocol(settings.max_header_bytes, settings.header_timeout_seconds),
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
    )
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    return 0 if server.started else 3  # as uvicorn.run: the start-up failed (its log says why)


if __name__ == "__main__":
    sys.exit(main())
