"""`Last-Event-ID`: ASCII digits naming an event that exists, not too far back; anything else
is a 422 in the JSON shape /openapi.json declares, never a 500 nor a silent stream."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.scheduler.conftest import Client, sign_up_and_in, submit, wait_for

ODD = [b"\xb2", b"\xb9", b"1\xb3", b"12a", b"-1", b"1 2", b"0x10", b"\xd9\xa3", b"1" * 19]


@pytest.fixture
def resumable(make_client: Client) -> tuple[TestClient, dict[str, str], str]:
    client = make_client(events_max_resume=3)
    alice = sign_up_and_in(client, "alice")
    job_id = submit(client, alice)["job_id"]
    wait_for(client, job_id, alice)
    return client, alice, job_id


@pytest.mark.parametrize("value", ODD, ids=[v.decode("latin-1") for v in ODD])
@pytest.mark.parametrize("path", ["/events", "/jobs/{job_id}/events"])
def test_an_id_that_is_not_ascii_digits_is_a_422(
    resumable: tuple[TestClient, dict[str, str], str], path: str, value: bytes
) -> None:
    client, alice, job_id = resumable
    answer = client.get(path.format(job_id=job_id), headers={**alice, "Last-Event-ID": value})  # type: ignore[dict-item]
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"].startswith("Last-Event-ID must be the id of an event")


def test_an_id_past_the_newest_event_is_a_422(resumable: tuple[TestClient, dict[str, str], str]) -> None:
    client, alice, job_id = resumable
    for value in ("999999999999999999", "100000"):
        answer = client.get(f"/jobs/{job_id}/events", headers={**alice, "Last-Event-ID": value})
        assert answer.status_code == 422, answer.text
        assert answer.json()["detail"].startswith(f"Last-Event-ID: no event has the id {value}")


def test_a_resume_too_far_back_is_a_422_that_says_what_to_do(
    resumable: tuple[TestClient, dict[str, str], str],
) -> None:
    client, alice, job_id = resumable
    far = client.get(f"/jobs/{job_id}/events", headers={**alice, "Last-Event-ID": "0"})
    assert far.status_code == 422
    assert "EVENTS_MAX_RESUME (3)" in far.json()["detail"] and "without Last-Event-ID" in far.json()["detail"]
    with client.stream("GET", f"/jobs/{job_id}/events", headers=alice) as fresh:  # the job as it is now
        assert fresh.status_code == 200
        ids = [line.split(":", 1)[1].strip() for line in fresh.iter_lines() if line.startswith("id:")]
    assert len(ids) == 1
    newest = int(ids[0])
    near = client.get(f"/jobs/{job_id}/events", headers={**alice, "Last-Event-ID": str(newest - 2)})
    assert near.status_code == 200 and near.text.count("data:") == 2  # the last two, then its end
