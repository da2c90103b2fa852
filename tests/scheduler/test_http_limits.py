"""Header size and header-read time, tried with raw sockets against `python -m scheduler`:
oversized heads are a 431, half-sent ones a 408, bytes that are not HTTP a 400, all JSON."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.scheduler.test_http_e2e import serve

LIMITS = {"MAX_HEADER_BYTES": "4096", "HEADER_TIMEOUT_SECONDS": "1"}
DEADLINE = 30.0  # generous: the server is asked to give up after 1 s


@pytest.fixture
def server(tmp_path: Path, opencl_cache: Path) -> Iterator[tuple[httpx.Client, int]]:
    with serve(tmp_path / "data", opencl_cache, **LIMITS) as (client, _proc):
        yield client, httpx.URL(str(client.base_url)).port
    log = next(tmp_path.glob("server-*.log")).read_text()
    assert "Traceback" not in log, log


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (or DEADLINE fails the test)."""
    data = b""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    raise AssertionError(f"the server kept the connection open; it sent {data[:200]!r}")


def answer(data: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), head
    return int(head.split(b" ", 2)[1]), json.loads(body)


def test_an_oversized_header_is_431(server: tuple[httpx.Client, int]) -> None:
    client, port = server
    for head in (
        b"X-Big: " + b"a" * (1 << 20) + b"\r\n",  # one huge header
        b"".join(b"X-%d: %s\r\n" % (i, b"b" * 100) for i in range(100)),  # many that add up
    ):
        with connect(port) as sock:
            # closed before we finished sending? the answer is still there to read
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n")
            status, body = answer(read_until_closed(sock))
        assert status == 431 and "4096 bytes" in str(body["detail"])
    ok = client.get("/healthz", headers={"X-Fits": "c" * 3000})
    assert ok.status_code == 200


def test_half_sent_heads_are_dropped_while_the_service_answers(server: tuple[httpx.Client, int]) -> None:
    client, port = server
    stalled = [connect(port) for _ in range(50)]
    silent = connect(port)
    try:
        for sock in stalled:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Half: ")
        assert client.get("/healthz").status_code == 200  # while they hang
        for sock in stalled:
            status, body = answer(read_until_closed(sock))
            assert status == 408 and "took longer than 1 seconds" in str(body["detail"])
        assert read_until_closed(silent) == b""  # sent nothing: closed without an answer
    finally:
        for sock in [*stalled, silent]:
            sock.close()


def test_a_trickled_head_is_cut_at_the_deadline(server: tuple[httpx.Client, int]) -> None:
    """The limit is on the whole head, not on silence between bytes (slowloris keeps sending)."""
    _client, port = server
    with connect(port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        sock.settimeout(0.2)
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            try:
                data = sock.recv(65536)
                break
            except TimeoutError:
                sock.sendall(b"X")  # one more byte of a header that never ends
        else:
            raise AssertionError("the trickled head was never cut")
        sock.settimeout(DEADLINE)
        status, _ = answer(data + read_until_closed(sock))
    assert status == 408


def test_a_kept_alive_connection_has_a_deadline_for_each_request(server: tuple[httpx.Client, int]) -> None:
    _client, port = server
    with connect(port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n")
        data = read_until_closed(sock)
    first, _, rest = data.partition(b'{"status":"ok"}')
    assert first.startswith(b"HTTP/1.1 200") and answer(rest)[0] == 408


def test_bytes_that_are_not_http_are_a_json_400(server: tuple[httpx.Client, int]) -> None:
    _client, port = server
    for garbage in (
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",  # a TLS hello on the plain port
        b"GET /jobs/\xff HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /auth/sign-in HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    ):
        with connect(port) as sock:
            sock.sendall(garbage)
            status, body = answer(read_until_closed(sock))
        assert status == 400 and str(body["detail"]).endswith(".")
