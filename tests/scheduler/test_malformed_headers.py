"""Every header the service parses, sent malformed: a 4xx JSON sentence, never a 500.

Header values are sent as raw bytes (latin-1 on the wire, as an attacker's client would), not
only as the text a well-behaved client sends.
"""

from __future__ import annotations

import base64

import pytest
from fastapi.testclient import TestClient

from tests.scheduler.conftest import submit, wait_for


def refused(response, status: int) -> str:  # noqa: ANN001 - an httpx.Response
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail.endswith(".")
    return detail


@pytest.mark.parametrize(
    "value",
    [
        b"Basic \xff\xfe\xfd\xfc",  # not base64 and not even ASCII
        b"Basic " + base64.b64encode(b"alice:\xe9t\xe9-horse"),  # latin-1, not UTF-8
        b"Basic " + base64.b64encode(b"\xff\xfe:correct-horse"),
        b"Basic YWxp Y2U6eA==",  # a space inside
        b"Basic YWxpY2U6eA",  # unpadded
    ],
)
def test_malformed_basic_credentials(client: TestClient, value: bytes) -> None:
    response = client.post("/auth/sign-in", headers={"Authorization": value})
    assert "Basic credentials" in refused(response, 401)


@pytest.mark.parametrize("suffix", [b"\xe9", b"!", b"\xff"])
def test_a_bearer_token_with_bytes_outside_base64url(
    client: TestClient, alice: dict[str, str], suffix: bytes
) -> None:
    token = alice["Authorization"].encode()
    assert client.get("/jobs", headers={"Authorization": token}).status_code == 200
    refused(client.get("/jobs", headers={"Authorization": token + suffix}), 401)
    refused(client.get("/jobs", headers={"Authorization": b"Bearer \xff\xfe.\xff.\xff"}), 401)


def test_ranges_and_validators(client: TestClient, alice: dict[str, str]) -> None:
    job_id = submit(client, alice)["job_id"]
    wait_for(client, job_id, alice, ("succeeded",))
    url = f"/jobs/{job_id}/result"
    size = len(client.get(url, headers=alice).content)

    def get(name: str, value: bytes):  # noqa: ANN202
        return client.get(url, headers={**alice, name: value})

    huge = b"9" * 5000
    assert "outside the" in refused(get("Range", b"bytes=" + huge + b"-"), 416)
    assert get("Range", b"bytes=0-" + huge).status_code == 206  # clipped to the file
    assert get("Range", b"bytes=-" + huge).content == client.get(url, headers=alice).content
    beyond = get("Range", f"bytes={size}-".encode())
    assert f"{size}-byte" in refused(beyond, 416) and beyond.headers["content-range"] == f"bytes */{size}"
    for ignored in (b"bytes=\xff-", b"bytes=\xd9\xa3-", b"bytes 0-1", b"bytes=0-1,,"):
        assert get("Range", ignored).status_code == 200  # not a range we serve: the whole file
    for odd in (b"\xff", b'W/"', b"*" * 10000):
        assert get("If-None-Match", odd).status_code in (200, 304)


@pytest.mark.parametrize("name", ["image.png\n", "image.png\r\n", "result.json\x00", "../result.json", " a"])
def test_file_names_are_matched_whole(client: TestClient, alice: dict[str, str], name: str) -> None:
    job_id = submit(client, alice)["job_id"]
    wait_for(client, job_id, alice, ("succeeded",))
    response = client.get(f"/jobs/{job_id}/result", params={"file": name}, headers=alice)
    assert "plain file name" in refused(response, 422)


@pytest.mark.parametrize("path", ["/jobs", "/auth/sign-up", "/auth/sign-in"])
def test_a_body_that_is_not_utf8_is_a_422(client: TestClient, alice: dict[str, str], path: str) -> None:
    body = b'{"username": "\xff\xfe", "password": "correct-horse", "width": "\xff"}'
    response = client.post(path, content=body, headers={**alice, "Content-Type": "application/json"})
    assert "not UTF-8" in refused(response, 422)
