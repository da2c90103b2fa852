"""The result cache (docs/design.md, "Reuse"): an equal request of the same user is served from
the stored render at once, or follows the one still active and ends with it (callbacks too);
stored objects are shared by reference, so deleting one job never breaks another's download."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from scheduler.job_status import end_followers
from scheduler.models import Job, utcnow
from tests.scheduler.conftest import TINY, Client, sign_up_and_in, submit, wait_for
from tests.scheduler.receiver import receiving
from tests.scheduler.test_callback_delivery import FAST, callback_settles, verify

CACHE = {"result_cache": True}


def download(client: TestClient, job_id: str, auth: dict[str, str], file: str = "image.png") -> bytes:
    response = client.get(f"/jobs/{job_id}/result", params={"file": file}, headers=auth)
    assert response.status_code == 200, response.text
    return response.content


def ran(client: TestClient, job_id: str) -> bool:
    """Whether a process was started for the job (the local runner keeps a log for each task)."""
    logs = Path(client.app.state.service.settings.data_dir) / "logs"
    return (logs / f"{job_id}.log").exists() or any(logs.glob(f"{job_id}-*.log"))


def reused(client: TestClient, outcome: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(f'fractal_results_reused_total{{outcome="{outcome}"}}'):
            return float(line.split()[-1])
    return 0.0


def start_rendering(client: TestClient) -> None:
    """The operator gives the local runner a slot (the tests start with none, so jobs wait)."""
    client.app.state.service.settings.local_max_concurrent = 1
    client.app.state.service.dispatcher.wake()


def test_an_equal_request_is_served_from_the_stored_render(make_client: Client) -> None:
    client = make_client(**CACHE)
    alice, bob = sign_up_and_in(client, "alice"), sign_up_and_in(client, "bob")
    first = submit(client, alice)["job_id"]
    wait_for(client, first, alice, ("succeeded",))

    hit = submit(client, alice, priority="high")  # the priority does not change the picture
    assert hit["status"] == "succeeded" and hit["cached"] is True and hit["progress"] == 1.0, hit
    assert hit["placement"] is None and not ran(client, hit["job_id"])
    assert download(client, hit["job_id"], alice) == download(client, first, alice)
    assert reused(client, "hit") == 1

    other = submit(client, alice, colormap="magma")  # another picture: rendered
    his = submit(client, bob)  # another user: rendered too (the cache is per user)
    for job in (other, his):
        assert job["cached"] is False
        assert wait_for(client, job["job_id"], job_auth(job, alice, bob))["cached"] is False
    assert reused(client, "hit") == 1


def job_auth(job: dict[str, Any], alice: dict[str, str], bob: dict[str, str]) -> dict[str, str]:
    return alice if job["params"]["colormap"] == "magma" else bob


def test_deleting_one_job_never_breaks_another_download(make_client: Client) -> None:
    client = make_client(**CACHE)
    alice = sign_up_and_in(client, "alice")
    first = submit(client, alice)["job_id"]
    wait_for(client, first, alice, ("succeeded",))
    png = download(client, first, alice)
    hits = [submit(client, alice)["job_id"] for _ in range(2)]
    storage = Path(client.app.state.service.settings.storage_dir) / "alice" / first

    assert client.delete(f"/jobs/{first}", headers=alice).status_code == 200
    assert client.get(f"/jobs/{first}", headers=alice).status_code == 404
    assert download(client, hits[0], alice) == png  # the render it was served from is gone: its bytes stay
    assert client.delete(f"/jobs/{hits[0]}", headers=alice).status_code == 200
    assert download(client, hits[1], alice) == png and storage.is_dir()
    files = client.get(f"/jobs/{hits[1]}/result/list", headers=alice).json()["files"]
    assert {"image.png", "result.json"} <= {f["name"] for f in files}
    assert client.delete(f"/jobs/{hits[1]}", headers=alice).status_code == 200
    assert not storage.exists()  # the last job that used them is gone: so are they

    again = submit(client, alice)  # nothing left to reuse: rendered anew
    assert again["cached"] is False and wait_for(client, again["job_id"], alice)["status"] == "succeeded"


def test_result_cache_off_renders_every_request(make_client: Client) -> None:
    client = make_client(result_cache=False)
    alice = sign_up_and_in(client, "alice")
    for _ in range(2):
        job = submit(client, alice)
        assert job["cached"] is False and wait_for(client, job["job_id"], alice)["cached"] is False
        assert ran(client, job["job_id"])


def test_an_equal_request_follows_the_active_render_and_ends_with_it(make_client: Client) -> None:
    with receiving([204]) as hook:
        client = make_client(**CACHE, **FAST, local_max_concurrent=0)
        alice = sign_up_and_in(client, "alice")
        secret = client.get("/auth/me", headers=alice).json()["webhook_secret"]
        leader = submit(client, alice, callback_url=hook.url)["job_id"]
        follower = submit(client, alice, callback_url=hook.url)
        assert follower["status"] == "queued" and leader in follower["message"], follower
        assert reused(client, "merged") == 1

        start_rendering(client)
        docs = {job_id: wait_for(client, job_id, alice) for job_id in (leader, follower["job_id"])}
        first, second = docs[leader], docs[follower["job_id"]]
        assert first["status"] == second["status"] == "succeeded"
        assert (first["cached"], second["cached"]) == (False, True)
        assert second["finished_at"] == first["finished_at"] and second["started_at"] == first["started_at"]
        assert not ran(client, follower["job_id"])  # one render
        assert download(client, follower["job_id"], alice) == download(client, leader, alice)
        for job_id in docs:  # both notified
            assert callback_settles(client, job_id, alice)["callback"]["state"] == "delivered"
        sent = {verify(secret, request)["job_id"]: verify(secret, request) for request in hook.requests}
        assert set(sent) == set(docs) and all(doc["status"] == "succeeded" for doc in sent.values())


def test_a_cancelled_render_hands_its_followers_on(make_client: Client) -> None:
    client = make_client(**CACHE, local_max_concurrent=0)
    alice = sign_up_and_in(client, "alice")
    leader, second, third = (submit(client, alice)["job_id"] for _ in range(3))
    assert client.post(f"/jobs/{leader}/cancel", headers=alice).json()["status"] == "cancelled"
    promoted = client.get(f"/jobs/{second}", headers=alice).json()
    assert promoted["status"] == "queued" and leader not in promoted["message"]  # queued in its own right
    assert second in client.get(f"/jobs/{third}", headers=alice).json()["message"]

    start_rendering(client)
    assert wait_for(client, third, alice)["cached"] is True
    assert wait_for(client, second, alice)["cached"] is False
    assert ran(client, second) and not ran(client, third)


def test_followers_of_a_failed_render_fail_with_its_error() -> None:
    now = utcnow()
    leader = Job(id="a" * 32, owner="alice", status="failed", params=TINY, runner="local", error="no device",
                 started_at=now, finished_at=now)
    followers = [Job(id=c * 32, owner="alice", status="queued", params=TINY, runner="local", follows="a" * 32,
                     callback_url="https://example.com/hook", callback_state="pending") for c in "bc"]
    end_followers(leader, followers)
    for job in followers:
        assert (job.status, job.error, job.finished_at) == ("failed", "no device", now)
        assert job.follows is None and job.cached is False
        assert job.callback_next_at == now  # its callback is due with its end


def test_a_split_render_is_followed_and_reused_whole(make_client: Client) -> None:
    """A render array's key covers its shape: an equal split follows, then is served from, its
    bands (their tasks end as the render's did); another split of the same frame renders."""
    client = make_client(**CACHE, local_max_concurrent=0)
    alice = sign_up_and_in(client, "alice")
    leader = submit(client, alice, split=2)["job_id"]
    follower = submit(client, alice, split=2)
    assert follower["status"] == "queued" and leader in follower["message"], follower
    start_rendering(client)
    done = wait_for(client, follower["job_id"], alice)
    assert (done["status"], done["cached"], done["failed_tasks"]) == ("succeeded", True, [])
    assert done["tasks"] == {"total": 2, "queued": 0, "running": 0, "succeeded": 2, "failed": 0}
    assert not ran(client, follower["job_id"])

    hit = submit(client, alice, split=2)
    assert (hit["status"], hit["cached"], hit["tasks"]["succeeded"]) == ("succeeded", True, 2), hit
    joined = download(client, leader, alice)
    assert download(client, follower["job_id"], alice) == download(client, hit["job_id"], alice) == joined
    other = submit(client, alice, split=4)  # the same frame in other bands: another request
    assert other["cached"] is False and wait_for(client, other["job_id"], alice)["tasks"]["succeeded"] == 4
