"""Fixtures shared by every test area: an S3 endpoint (moto's server mode) on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator

import pytest

os.environ.setdefault("OCL_ICD_VENDORS", "/etc/OpenCL/vendors")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A real HTTP S3 endpoint (moto server mode); yields its `host:port`."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def minio_env(s3_server: str) -> dict[str, str]:
    """The job contract's MinIO variables, pointing at a fresh bucket name per test."""
    return {
        "MINIO_ENDPOINT": s3_server,
        "MINIO_BUCKET": f"test-{uuid.uuid4().hex[:12]}",
        "MINIO_ACCESS_KEY": "testing",
        "MINIO_SECRET_KEY": "testing-secret",
        "MINIO_SECURE": "false",
    }


@pytest.fixture(scope="session")
def live_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m scheduler` on 127.0.0.1, shared by the client tests (fractalctl, the explorer),
    which each use their own users; yields its URL."""
    from tests.scheduler.test_http_e2e import serve  # imported late: it imports this module

    root = tmp_path_factory.mktemp("live-service")
    limits = {"SIGNUPS_PER_MINUTE": "1000", "SIGNIN_ATTEMPTS_PER_MINUTE": "1000",
              "SIGNIN_ATTEMPTS_PER_CLIENT_PER_MINUTE": "1000"}
    with serve(root / "data", root / "opencl-cache", **limits) as (client, _proc):
        yield str(client.base_url).rstrip("/")
