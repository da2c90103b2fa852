"""Jobs through the app on embedded defaults (SQLite, local runner, local storage): the whole
flow with real renders, every 4xx, and isolation between two users on every path."""

from __future__ import annotations

import hashlib
import json
import re
import socket
import time
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.scheduler.conftest import LONG, TINY, Client, sign_up_and_in, submit, wait_for


def test_submit_render_and_download(client: TestClient, alice: dict[str, str]) -> None:
    created = submit(client, alice, kind="julia", colormap="magma")
    assert created["status"] in ("queued", "pending", "running")
    assert len(created["job_id"]) == 32 and created["params"]["kind"] == "julia"
    assert created["links"]["result"] == f"/jobs/{created['job_id']}/result"
    job_id = created["job_id"]

    doc = wait_for(client, job_id, alice)
    assert doc["status"] == "succeeded", doc
    assert doc["started_at"] and doc["finished_at"] and doc["error"] is None and doc["progress"] == 1.0

    png = client.get(f"/jobs/{job_id}/result", headers=alice)
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content.startswith(b"\x89PNG\r\n\x1a\n")
    assert png.headers["content-length"] == str(len(png.content))
    sha = hashlib.sha256(png.content).hexdigest()
    assert png.headers["etag"] == f'"{sha}"'

    meta = client.get(f"/jobs/{job_id}/result", params={"file": "result.json"}, headers=alice).json()
    assert meta["job_id"] == job_id and meta["sha256"] == sha and meta["width"] == TINY["width"]

    files = client.get(f"/jobs/{job_id}/result/list", headers=alice).json()["files"]
    sizes = {f["name"]: f["size"] for f in files}
    assert sizes["image.png"] == len(png.content) and {"result.json", "job.log"} <= set(sizes)

    logs = client.get(f"/jobs/{job_id}/logs", headers=alice)
    assert logs.status_code == 200 and "progress 100%" in logs.text
    # the first line names the worker and the device (docs/design.md, /logs)
    host = re.escape(socket.gethostname())
    assert re.fullmatch(rf"job {job_id} on host {host}, pid \d+, device {re.escape(meta['device'])}",
                        logs.text.splitlines()[0])


def test_conditional_and_range_downloads(client: TestClient, alice: dict[str, str]) -> None:
    job_id = submit(client, alice)["job_id"]
    wait_for(client, job_id, alice, ("succeeded",))
    url = f"/jobs/{job_id}/result"
    whole = client.get(url, headers=alice)
    etag, size = whole.headers["etag"], len(whole.content)

    assert client.get(url, headers={**alice, "If-None-Match": etag}).status_code == 304
    assert client.get(url, headers={**alice, "If-None-Match": '"other"'}).status_code == 200

    part = client.get(url, headers={**alice, "Range": "bytes=0-99"})
    assert part.status_code == 206 and part.content == whole.content[:100]
    assert part.headers["content-range"] == f"bytes 0-99/{size}" and part.headers["content-length"] == "100"
    tail = client.get(url, headers={**alice, "Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == whole.content[-10:]
    open_ended = client.get(url, headers={**alice, "Range": f"bytes={size - 5}-"})
    assert open_ended.content == whole.content[-5:]
    beyond = client.get(url, headers={**alice, "Range": f"bytes={size}-"})
    assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{size}"


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"width": 5000, "height": 5000}, "25000000 samples"),
        ({"width": 4096, "height": 4096, "supersample": 2}, "4096x4096 at supersample 2 is 67108864 samples"),
        ({"priority": "urgent"}, "priority"),
        ({"max_iter": 10**7}, "max_iter"),
        ({"kind": "sierpinski"}, "kind"),
        ({"zoom": 0}, "zoom"),
        ({"zoom": "1e20", "precision": "float64"}, "float64 cannot resolve this frame"),
        ({"zoom": "1e1001"}, "zoom 1e1001 is above the limit of 1E+1000"),
        ({"center_x": "-0." + "7" * 2000}, "center_x has 2001 digits; the limit is 2000"),
        ({"center_y": "0x10"}, "center_y: must be a decimal number"),
        ({"supersample": 9}, "supersample"),
        ({"status": "succeeded"}, "status"),  # a request model is not the table
        ({"owner": "bob"}, "owner"),
        ({"job_id": "0" * 32}, "job_id"),
        ({"callback_url": "http://127.0.0.1:8080/hook"}, "callback_url"),
        ({"callback_url": "ftp://example.com/x"}, "callback_url"),
    ],
)
def test_bad_parameters_are_422_and_record_nothing(
    client: TestClient, alice: dict[str, str], body: dict[str, Any], words: str
) -> None:
    response = client.post("/jobs", json=body, headers=alice)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and words in detail
    assert client.get("/jobs", headers=alice).json()["count"] == 0


@pytest.mark.parametrize("raw", [b"[1, 2]", b"not json", b'"a string"'])
def test_body_that_is_not_an_object_is_422(client: TestClient, alice: dict[str, str], raw: bytes) -> None:
    response = client.post("/jobs", content=raw, headers={**alice, "Content-Type": "application/json"})
    assert response.status_code == 422 and isinstance(response.json()["detail"], str)


def test_broken_json_says_where(client: TestClient, alice: dict[str, str]) -> None:
    raw = b'{"width": 64,, }'
    response = client.post("/jobs", content=raw, headers={**alice, "Content-Type": "application/json"})
    assert response.status_code == 422
    assert response.json()["detail"].startswith("The body is not valid JSON: ")
    assert response.json()["detail"].endswith(f"at character {raw.index(b',,') + 1}.")


def test_limits_are_settings(make_client: Client) -> None:
    client = make_client(max_pixels=100, max_iter=10, max_body_bytes=200)
    auth = sign_up_and_in(client, "alice")
    too_big = client.post("/jobs", json={"width": 11, "height": 10}, headers=auth)
    assert too_big.status_code == 422 and "limit is 100" in too_big.json()["detail"]
    too_many = client.post("/jobs", json={"width": 10, "height": 10, "max_iter": 11}, headers=auth)
    assert too_many.status_code == 422 and "limit of 10" in too_many.json()["detail"]
    huge = client.post("/jobs", content=json.dumps({"colormap": "x" * 300}), headers=auth)
    assert huge.status_code == 413 and "200 bytes" in huge.json()["detail"]
    chunked = client.post(  # no Content-Length: the limit still holds
        "/jobs",
        content=iter([b'{"colormap": "', b"x" * 300, b'"}']),
        headers={**auth, "Content-Type": "application/json"},
    )
    assert chunked.status_code == 413 and "200 bytes" in chunked.json()["detail"]
    assert client.get("/jobs", headers=auth).json()["count"] == 0


def test_deep_coordinates_are_kept_as_given_and_bounded_by_settings(make_client: Client) -> None:
    # nothing starts: the job is only submitted
    client = make_client(max_zoom=Decimal("1e30"), max_coordinate_digits=40, local_max_concurrent=0)
    auth = sign_up_and_in(client, "alice")
    deep = {**TINY, "center_x": "-1.74995768370609350360221450607069970", "center_y": "0", "zoom": "1e25"}
    response = client.post("/jobs", json=deep, headers=auth)
    assert response.status_code == 202, response.text
    params = client.get(f"/jobs/{response.json()['job_id']}", headers=auth).json()["params"]
    assert (params["center_x"], params["zoom"], params["precision"]) == (deep["center_x"], "1e25", "auto")
    too_deep = client.post("/jobs", json={**deep, "zoom": "1e31"}, headers=auth)
    assert too_deep.status_code == 422 and "limit of 1E+30" in too_deep.json()["detail"]
    too_long = client.post("/jobs", json={**deep, "center_y": "0." + "1" * 40}, headers=auth)
    assert too_long.status_code == 422 and "41 digits; the limit is 40" in too_long.json()["detail"]


def test_active_jobs_per_user_are_capped(make_client: Client) -> None:
    client = make_client(max_active_jobs_per_user=2, local_max_concurrent=0)  # nothing starts
    alice, bob = sign_up_and_in(client, "alice"), sign_up_and_in(client, "bob")
    first, _ = submit(client, alice), submit(client, alice)
    third = client.post("/jobs", json=TINY, headers=alice)
    assert third.status_code == 429 and "unfinished" in third.json()["detail"]
    submit(client, bob)  # a cap per user, not global
    assert client.delete(f"/jobs/{first['job_id']}", headers=alice).status_code == 200
    submit(client, alice)


def test_list_is_newest_first_paginated_and_filtered(make_client: Client) -> None:
    client = make_client(local_max_concurrent=0, max_active_jobs_per_user=10)
    alice = sign_up_and_in(client, "alice")
    ids = [submit(client, alice, max_iter=10 + i)["job_id"] for i in range(5)]
    page = client.get("/jobs", params={"limit": 2}, headers=alice).json()
    assert page["count"] == 5 and [j["job_id"] for j in page["data"]] == ids[::-1][:2]
    rest = client.get("/jobs", params={"limit": 2, "offset": 4}, headers=alice).json()
    assert [j["job_id"] for j in rest["data"]] == [ids[0]]
    client.delete(f"/jobs/{ids[2]}", headers=alice)
    queued = client.get("/jobs", params={"status": "queued"}, headers=alice).json()
    assert queued["count"] == 4 and ids[2] not in [j["job_id"] for j in queued["data"]]
    assert client.get("/jobs", params={"status": "succeeded"}, headers=alice).json()["count"] == 0
    assert client.get("/jobs", params={"status": "bogus"}, headers=alice).status_code == 422
    assert client.get("/jobs", params={"limit": 101}, headers=alice).status_code == 422
    assert client.get("/jobs", params={"offset": -1}, headers=alice).status_code == 422
    assert client.get("/jobs", params={"offset": 10**20}, headers=alice).status_code == 422


def test_queued_job_has_no_result_yet(make_client: Client) -> None:
    client = make_client(local_max_concurrent=0)
    alice = sign_up_and_in(client, "alice")
    job_id = submit(client, alice)["job_id"]
    response = client.get(f"/jobs/{job_id}/result", headers=alice)
    assert response.status_code == 409 and "queued" in response.json()["detail"]
    assert client.get(f"/jobs/{job_id}/logs", headers=alice).status_code == 404
    waited = client.get(f"/jobs/{job_id}", params={"wait": 0.2}, headers=alice)
    assert waited.status_code == 200 and waited.json()["status"] == "queued"
    assert client.get(f"/jobs/{job_id}", params={"wait": 61}, headers=alice).status_code == 422


def test_file_names_are_validated(client: TestClient, alice: dict[str, str]) -> None:
    job_id = submit(client, alice)["job_id"]
    wait_for(client, job_id, alice, ("succeeded",))
    for name in ("../../jwt_secret", "/etc/passwd", ".hidden", "a/b"):
        response = client.get(f"/jobs/{job_id}/result", params={"file": name}, headers=alice)
        assert response.status_code == 422, name
    missing = client.get(f"/jobs/{job_id}/result", params={"file": "nope.txt"}, headers=alice)
    assert missing.status_code == 404 and "result/list" in missing.json()["detail"]


def test_failed_job_shows_the_jobs_own_error(make_client: Client) -> None:
    client = make_client(local_gpus=1)  # the service is told of a GPU the host lacks
    alice = sign_up_and_in(client, "alice")
    job_id = submit(client, alice, device="gpu")["job_id"]  # the job finds none: it exits 3
    doc = wait_for(client, job_id, alice)
    assert doc["status"] == "failed"
    logs = client.get(f"/jobs/{job_id}/logs", headers=alice).text
    assert doc["error"] and doc["error"] == logs.strip().splitlines()[-1]
    response = client.get(f"/jobs/{job_id}/result", headers=alice)
    assert response.status_code == 409 and doc["error"] in response.json()["detail"]


def test_cancel_a_running_job(client: TestClient, alice: dict[str, str]) -> None:
    job_id = submit(client, alice, **LONG)["job_id"]
    wait_for(client, job_id, alice, ("running",))
    deleted = client.delete(f"/jobs/{job_id}", headers=alice)
    assert deleted.status_code == 200 and deleted.json()["status"] == "cancelled"
    assert deleted.json()["finished_at"]
    for path in ("", "/result", "/logs", "/result/list"):
        assert client.get(f"/jobs/{job_id}{path}", headers=alice).status_code == 404
    assert client.delete(f"/jobs/{job_id}", headers=alice).status_code == 404
    storage = client.app.state.service.storage
    assert storage.list(f"alice/{job_id}/") == []


def test_cancel_keeps_the_job_its_logs_and_files(client: TestClient, alice: dict[str, str]) -> None:
    job_id = submit(client, alice, **LONG)["job_id"]
    wait_for(client, job_id, alice, ("running",))
    deadline = time.monotonic() + 60  # until it renders: its log has begun
    while "progress" not in client.get(f"/jobs/{job_id}/logs", headers=alice).text:
        assert time.monotonic() < deadline, "the job printed no progress"
        time.sleep(0.05)
    cancelled = client.post(f"/jobs/{job_id}/cancel", headers=alice)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled" and cancelled.json()["finished_at"]
    assert client.get(f"/jobs/{job_id}", headers=alice).json()["status"] == "cancelled"
    listed = client.get("/jobs?status=cancelled", headers=alice).json()["data"]
    assert [j["job_id"] for j in listed] == [job_id]
    logs = client.get(f"/jobs/{job_id}/logs", headers=alice)  # kept, naming the worker
    assert logs.text.startswith(f"job {job_id} on host {socket.gethostname()}, pid "), logs.text
    # the job's stderr (this line) and stdout (its progress) are two pipes, read as they come: its
    # last progress line may land after it in the log, as with `kubectl logs`
    assert "error: stopped by SIGTERM" in logs.text.splitlines()
    files = client.get(f"/jobs/{job_id}/result/list", headers=alice).json()["files"]
    assert "job.log" in [f["name"] for f in files]
    again = client.post(f"/jobs/{job_id}/cancel", headers=alice)
    assert again.status_code == 409 and "already finished (cancelled)" in again.json()["detail"]
    assert client.delete(f"/jobs/{job_id}", headers=alice).status_code == 200
    assert client.get(f"/jobs/{job_id}", headers=alice).status_code == 404


def test_cancel_a_queued_job(make_client: Client) -> None:
    client = make_client(local_max_concurrent=1)
    alice = sign_up_and_in(client, "alice")
    blocker = submit(client, alice, **LONG)["job_id"]
    queued = submit(client, alice)["job_id"]
    assert client.get(f"/jobs/{queued}", headers=alice).json()["status"] == "queued"
    cancelled = client.post(f"/jobs/{queued}/cancel", headers=alice)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    client.post(f"/jobs/{blocker}/cancel", headers=alice)
    assert wait_for(client, blocker, alice)["status"] == "cancelled"
    assert client.get(f"/jobs/{queued}", headers=alice).json()["status"] == "cancelled"  # never started


def test_cancel_a_finished_job_is_409(client: TestClient, alice: dict[str, str]) -> None:
    job_id = submit(client, alice)["job_id"]
    wait_for(client, job_id, alice, ("succeeded",))
    refused = client.post(f"/jobs/{job_id}/cancel", headers=alice)
    assert refused.status_code == 409 and "already finished (succeeded)" in refused.json()["detail"]
    assert client.get(f"/jobs/{job_id}/result", headers=alice).status_code == 200


def test_delete_finished_job_removes_its_files(client: TestClient, alice: dict[str, str]) -> None:
    job_id = submit(client, alice)["job_id"]
    wait_for(client, job_id, alice, ("succeeded",))
    deleted = client.delete(f"/jobs/{job_id}", headers=alice)
    assert deleted.status_code == 200 and deleted.json()["status"] == "succeeded"
    assert client.app.state.service.storage.list(f"alice/{job_id}/") == []


def test_another_users_job_is_404_on_every_path(
    client: TestClient, alice: dict[str, str], bob: dict[str, str]
) -> None:
    job_id = submit(client, alice)["job_id"]
    wait_for(client, job_id, alice, ("succeeded",))
    missing = "0" * 32
    for path in ("", "/result", "/result/list", "/logs", "?wait=1", "/result?file=result.json", "/events"):
        theirs = client.get(f"/jobs/{job_id}{path}", headers=bob)
        nothing = client.get(f"/jobs/{missing}{path}", headers=bob)
        assert theirs.status_code == nothing.status_code == 404, path
        assert theirs.json()["detail"].replace(job_id, missing) == nothing.json()["detail"]
    assert client.delete(f"/jobs/{job_id}", headers=bob).status_code == 404
    assert client.post(f"/jobs/{job_id}/cancel", headers=bob).status_code == 404
    assert client.get("/jobs", headers=bob).json()["count"] == 0
    assert client.get(f"/jobs/{job_id}", headers=alice).json()["status"] == "succeeded"


def test_wrong_method_is_405(client: TestClient, alice: dict[str, str]) -> None:
    response = client.put("/jobs", headers=alice)
    assert response.status_code == 405 and "Allow" in response.headers
    assert response.json() == {"detail": "/jobs does not take PUT; /docs lists what it takes."}


def test_202_has_a_location_and_results_answer_head(client: TestClient, alice: dict[str, str]) -> None:
    submitted = client.post(
        "/jobs", json={"width": 48, "height": 32, "max_iter": 40, "device": "cpu"}, headers=alice
    )
    job_id = submitted.json()["job_id"]
    assert submitted.status_code == 202 and submitted.headers["location"] == f"/jobs/{job_id}"
    wait_for(client, job_id, alice, ("succeeded",))
    get = client.get(f"/jobs/{job_id}/result", headers=alice)
    head = client.head(f"/jobs/{job_id}/result", headers=alice)
    assert head.status_code == 200 and head.content == b""
    for name in ("content-length", "content-type", "etag", "accept-ranges"):
        assert head.headers[name] == get.headers[name], name
    part = client.head(f"/jobs/{job_id}/result", headers={**alice, "Range": "bytes=0-9"})
    assert part.status_code == 206 and part.headers["content-length"] == "10"


def test_a_failed_jobs_links_do_not_point_at_a_409(make_client: Client) -> None:
    client = make_client(local_gpus=1)  # the service is told of a GPU the host lacks
    alice = sign_up_and_in(client, "alice")
    job_id = submit(client, alice, device="gpu")["job_id"]  # the job finds none: it fails
    doc = wait_for(client, job_id, alice)
    assert doc["status"] == "failed" and doc["links"]["result"] is None
    for link in (doc["links"]["self"], doc["links"]["files"], doc["links"]["logs"]):
        assert client.get(link, headers=alice).status_code == 200, link


def test_a_405_names_every_method_its_path_takes(client: TestClient) -> None:
    """Starlette's own Allow named only the first route's methods (`POST` for /jobs)."""
    paths = {"/jobs": "GET, POST", "/jobs/x": "DELETE, GET", "/jobs/x/result": "GET, HEAD"}
    for path, allowed in paths.items():
        answer = client.request("PUT", path)
        assert answer.status_code == 405 and answer.headers["allow"] == allowed, (path, answer.headers)


def test_a_poller_with_the_documents_etag_gets_304_until_it_changes(make_client: Client) -> None:
    client = make_client(local_max_concurrent=0)  # the job stays queued until it is cancelled
    alice, bob = sign_up_and_in(client, "alice"), sign_up_and_in(client, "bob")
    job_id = submit(client, alice)["job_id"]
    deadline = time.monotonic() + 30
    while client.get(f"/jobs/{job_id}", headers=alice).json()["message"] is None:  # until planned
        assert time.monotonic() < deadline, "the dispatcher never planned the job"
        time.sleep(0.05)
    first = client.get(f"/jobs/{job_id}", headers=alice)
    etag = first.headers["etag"]
    assert first.status_code == 200 and etag.startswith('"') and first.json()["job_id"] == job_id
    same = client.get(f"/jobs/{job_id}", headers={**alice, "If-None-Match": f'"other", {etag}'})
    assert same.status_code == 304 and same.content == b"" and same.headers["etag"] == etag
    assert client.get(f"/jobs/{job_id}", headers={**bob, "If-None-Match": etag}).status_code == 404
    assert client.get(f"/jobs/{job_id}", headers={"If-None-Match": etag}).status_code == 401
    assert client.post(f"/jobs/{job_id}/cancel", headers=alice).status_code == 200
    changed = client.get(f"/jobs/{job_id}", headers={**alice, "If-None-Match": etag})
    assert changed.status_code == 200 and changed.json()["status"] == "cancelled"
    assert changed.headers["etag"] != etag
