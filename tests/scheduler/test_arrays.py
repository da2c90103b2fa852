"""Render arrays through the API and the local runner (docs/design.md, "Render arrays"): one
request, one job of several tasks, one process per task, the job's status from its tasks',
a failed task retried alone, and the request limits."""

from __future__ import annotations

import io
import stat
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlmodel import Session

from scheduler import job_status
from scheduler.dispatcher import admissible
from scheduler.job_status import derived_status, summarize
from scheduler.models import Job, Task
from scheduler.runners.base import StatusReport
from tests.scheduler.conftest import TINY, Client, sign_up_and_in, submit, wait_for

SPLIT = {**TINY, "width": 40, "height": 30, "max_iter": 60}


def pixels(client: TestClient, auth: dict[str, str], job_id: str, name: str) -> np.ndarray:
    response = client.get(f"/jobs/{job_id}/result", params={"file": name}, headers=auth)
    assert response.status_code == 200, response.text
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))


def files(client: TestClient, auth: dict[str, str], job_id: str) -> set[str]:
    return {f["name"] for f in client.get(f"/jobs/{job_id}/result/list", headers=auth).json()["files"]}


@pytest.mark.parametrize(
    "request_, says",
    [
        ({"split": 5}, "more tasks than the limit of 4"),
        ({"split": 4, "height": 3}, "more bands than the image's 3 rows"),
        ({"split": 2, "width": 100, "height": 100}, "10000 samples; the limit for a split image is 5000"),
        ({"split": 2, "width": 60, "height": 60}, "one band of 2: 60x30 is 1800 samples; the limit is 1000"),
        ({"animation": {"frames": 5, "zoom_to": 10}}, "5 frames is more tasks than the limit of 4"),
        ({"animation": {"frames": 4, "zoom_to": 10}, "width": 30, "height": 30},
         "4 frames of 30x30 are 3600 samples; the limit for a video is 3000"),
        ({"animation": {"frames": 2, "zoom_to": 10}, "width": 21, "height": 20}, "must be even"),
        ({"animation": {"frames": 2, "zoom_to": 10}, "split": 2}, "cannot be combined"),
        ({"animation": {"frames": 2, "zoom_to": "1e1001"}}, "the last frame: zoom 1e1001 is above the limit"),
        ({"animation": {"frames": 2, "zoom_to": "1e20"}, "precision": "float64"},
         "the last frame: float64 cannot resolve this frame"),
        ({"animation": {"frames": 2, "zoom_to": "2e0"}, "zoom": "1e1001"}, "zoom 1e1001 is above the limit"),
        ({"animation": {"frames": 2, "zoom_to": "ten"}}, "must be a decimal number"),
        ({"animation": {"frames": 2, "zoom_to": "-1e400"}}, "must be greater than 0"),
    ],
)
def test_arrays_past_the_limits_are_refused_with_the_figures(
    make_client: Client, request_: dict[str, Any], says: str
) -> None:
    client = make_client(max_tasks=4, max_pixels=1000, max_array_pixels=5000, max_video_pixels=3000)
    alice = sign_up_and_in(client, "alice")
    response = client.post("/jobs", json={**TINY, "width": 20, "height": 20, **request_}, headers=alice)
    assert response.status_code == 422 and says in response.json()["detail"], response.text
    assert client.get("/jobs", headers=alice).json()["count"] == 0  # nothing half-written


def test_a_split_render_is_the_single_render_in_bands(make_client: Client) -> None:
    client = make_client()
    alice = sign_up_and_in(client, "alice")
    single = submit(client, alice, **SPLIT)
    array = submit(client, alice, **SPLIT, split=3)
    assert array["split"] == 3 and array["animation"] is None and "split" not in array["params"]
    assert array["tasks"] == {"total": 3, "queued": 3, "running": 0, "succeeded": 0, "failed": 0}
    done = wait_for(client, array["job_id"], alice)
    assert done["status"] == "succeeded", done
    assert done["tasks"] == {"total": 3, "queued": 0, "running": 0, "succeeded": 3, "failed": 0}
    assert done["progress"] == 1.0 and done["failed_tasks"] == []
    parts = {f"parts/{i}.{ext}" for i in range(3) for ext in ("png", "json", "log")}
    assert parts <= files(client, alice, array["job_id"])
    assert wait_for(client, single["job_id"], alice)["status"] == "succeeded"
    whole = pixels(client, alice, single["job_id"], "image.png")
    bands = [pixels(client, alice, array["job_id"], f"parts/{i}.png") for i in range(3)]
    assert [b.shape[0] for b in bands] == [10, 10, 10]
    assert np.array_equal(np.concatenate(bands), whole)  # the very same samples, pixel for pixel
    log = client.get(f"/jobs/{array['job_id']}/logs", headers=alice).text
    assert all(f"task {i} of 3" in log for i in range(3))

    # the result is the bands joined into one PNG, not decoded on the way: the same pixels
    assert np.array_equal(pixels(client, alice, array["job_id"], "image.png"), whole)
    result = f"/jobs/{array['job_id']}/result"
    full = client.get(result, headers=alice)
    assert full.headers["content-type"] == "image/png"
    assert int(full.headers["content-length"]) == len(full.content)
    size, etag = len(full.content), full.headers["etag"]
    assert client.head(result, headers=alice).headers["content-length"] == str(size)
    assert client.get(result, headers={**alice, "If-None-Match": etag}).status_code == 304
    cuts = [0, 1, 40, size // 2, size - 20, size - 3, size]  # across the head, the chunks and their CRCs
    pieces = [client.get(result, headers={**alice, "Range": f"bytes={a}-{b - 1}"})
              for a, b in zip(cuts, cuts[1:], strict=False)]
    assert all(p.status_code == 206 for p in pieces)
    assert b"".join(p.content for p in pieces) == full.content


def failing_python(tmp_path: Path, task: int, tries: int) -> Path:
    """An interpreter for the jobs whose task `task` fails its first `tries` runs (counted in a
    file), as a job that crashes would; every other run is the real job."""
    count = tmp_path / "runs"
    script = tmp_path / "python"
    script.write_text(
        "#!/bin/sh\n"
        f'if [ "$JOB_COMPLETION_INDEX" = "{task}" ]; then\n'
        f'  echo x >> "{count}"\n'
        f'  if [ "$(wc -l < "{count}")" -le {tries} ]; then echo "error: made to fail" >&2; exit 1; fi\n'
        "fi\n"
        f'exec "{sys.executable}" "$@"\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


def test_a_failed_task_is_tried_again_in_its_slot(make_client: Client, tmp_path: Path) -> None:
    client = make_client(job_python=str(failing_python(tmp_path, task=1, tries=1)), job_backoff_limit=1)
    alice = sign_up_and_in(client, "alice")
    done = wait_for(client, submit(client, alice, **SPLIT, split=2)["job_id"], alice)
    assert done["status"] == "succeeded" and done["tasks"]["succeeded"] == 2, done
    assert (tmp_path / "runs").read_text().count("x") == 2


def test_a_task_failing_past_its_retries_fails_the_job_and_retry_runs_it_alone(
    make_client: Client, tmp_path: Path
) -> None:
    client = make_client(job_python=str(failing_python(tmp_path, task=1, tries=2)), job_backoff_limit=1)
    alice = sign_up_and_in(client, "alice")
    job_id = submit(client, alice, **SPLIT, split=3)["job_id"]
    failed = wait_for(client, job_id, alice)
    assert failed["status"] == "failed" and failed["failed_tasks"] == [1], failed
    assert failed["tasks"] == {"total": 3, "queued": 0, "running": 0, "succeeded": 2, "failed": 1}
    assert failed["error"] == "1 of 3 tasks failed; task 1: error: made to fail"
    kept = files(client, alice, job_id)
    assert {"parts/0.png", "parts/2.png"} <= kept and "parts/1.png" not in kept
    first = {i: client.get(f"/jobs/{job_id}/result", params={"file": f"parts/{i}.json"}, headers=alice).json()
             for i in (0, 2)}

    again = client.post(f"/jobs/{job_id}/retry", headers=alice)
    assert again.status_code == 200 and again.json()["status"] in ("queued", "pending", "running")
    assert again.json()["tasks"]["queued"] + again.json()["tasks"]["running"] == 1
    done = wait_for(client, job_id, alice)
    assert done["status"] == "succeeded" and done["failed_tasks"] == [] and done["error"] is None, done
    assert "parts/1.png" in files(client, alice, job_id)
    for i in (0, 2):  # the tasks that had succeeded did not run again
        doc = client.get(f"/jobs/{job_id}/result", params={"file": f"parts/{i}.json"}, headers=alice).json()
        assert doc["finished_at"] == first[i]["finished_at"]
    assert client.post(f"/jobs/{job_id}/retry", headers=alice).status_code == 409  # it succeeded


def test_cancel_stops_every_task_and_delete_removes_every_part(make_client: Client) -> None:
    client = make_client()
    alice = sign_up_and_in(client, "alice")
    job_id = submit(client, alice, **{**TINY, "width": 2048, "height": 2048, "max_iter": 100_000,
                                      "precision": "float64"}, split=4)["job_id"]
    wait_for(client, job_id, alice, statuses=("running",))
    cancelled = client.post(f"/jobs/{job_id}/cancel", headers=alice).json()
    assert cancelled["status"] == "cancelled"
    assert not client.app.state.service.runner.live()  # no task's process is left
    assert client.delete(f"/jobs/{job_id}", headers=alice).status_code == 200
    assert client.app.state.service.storage.list(f"alice/{job_id}/") == []


def tasks(*statuses: str) -> list[Task]:
    return [Task(job_id="a" * 32, index=i, status=s, progress=0.5 if s == "running" else None,
                 error="boom" if s == "failed" else None) for i, s in enumerate(statuses)]


@pytest.mark.parametrize(
    "statuses, status",
    [
        (("queued", "queued"), "queued"),
        (("pending", "queued"), "pending"),
        (("running", "queued"), "running"),
        (("succeeded", "queued"), "running"),  # between two tasks: still running
        (("failed", "running"), "running"),  # the others go on; retry runs what failed
        (("succeeded", "succeeded"), "succeeded"),
        (("succeeded", "failed"), "failed"),
        (("cancelled", "succeeded"), "cancelled"),
    ],
)
def test_a_jobs_status_follows_its_tasks(statuses: tuple[str, ...], status: str) -> None:
    assert derived_status(summarize(tasks(*statuses), len(statuses)).counts) == status


def test_progress_covers_every_task() -> None:
    s = summarize(tasks("succeeded", "running", "queued", "failed"), 4)
    assert s.progress == pytest.approx(1.5 / 4) and s.failed == [3] and s.first_error == "boom"
    assert summarize(tasks("queued", "pending"), 2).progress is None


@pytest.mark.parametrize("fmt, media", [("mp4", "video/mp4"), ("webm", "video/webm")])
def test_an_animation_is_a_video_of_its_frames(make_client: Client, fmt: str, media: str) -> None:
    import av

    client = make_client()
    alice = sign_up_and_in(client, "alice")
    animation = {"frames": 4, "zoom_to": 50.0, "fps": 12, "format": fmt}
    job = submit(client, alice, **{**SPLIT, "width": 48, "height": 32, "center_x": -0.745, "center_y": 0.1},
                 animation=animation)
    assert job["animation"] == animation and job["tasks"]["total"] == 4
    done = wait_for(client, job["job_id"], alice)
    assert done["status"] == "succeeded", done
    response = client.get(f"/jobs/{job['job_id']}/result", headers=alice)
    assert response.status_code == 200 and response.headers["content-type"] == media
    with av.open(io.BytesIO(response.content)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 4 and frames[0].shape == (32, 48, 3)
    assert not np.array_equal(frames[0], frames[-1])  # it zooms
    listed = files(client, alice, job["job_id"])
    assert {f"parts/{k}.png" for k in range(4)} | {f"video.{fmt}"} <= listed  # the frames stay listed
    zooms = [client.get(f"/jobs/{job['job_id']}/result", params={"file": f"parts/{k}.json"},
                        headers=alice).json()["zoom"] for k in range(4)]
    assert zooms[0] == 1.0 and zooms[-1] == 50.0 and zooms == sorted(zooms)


def test_a_zoom_video_goes_past_float64s_range(make_client: Client) -> None:
    """zoom_to as a decimal string, as zoom: the last frame is the 1e400 render itself, exactly.
    The view closes in on c = i, a Misiurewicz point: structure at every scale."""
    client = make_client()
    alice = sign_up_and_in(client, "alice")
    deep = {**TINY, "width": 32, "height": 18, "center_x": "0", "center_y": "1." + "0" * 400 + "7",
            "max_iter": 1200}
    video = submit(client, alice, **deep, animation={"frames": 2, "zoom_to": "1e400"})
    single = submit(client, alice, **{**deep, "zoom": "1e400"})
    assert video["animation"]["zoom_to"] == "1e400"  # every digit kept, never a float (inf)
    for job in (video, single):
        assert wait_for(client, job["job_id"], alice)["status"] == "succeeded"
    result = f"/jobs/{video['job_id']}/result"
    last = client.get(result, params={"file": "parts/1.json"}, headers=alice).json()
    assert (last["zoom"], last["precision"]) == ("1e400", "perturbation")
    frame = pixels(client, alice, video["job_id"], "parts/1.png")
    assert np.array_equal(frame, pixels(client, alice, single["job_id"], "image.png"))
    assert len(np.unique(frame.reshape(-1, 3), axis=0)) > 1  # not one colour: the set's edge is in view


def test_an_array_waiting_between_tasks_is_not_taken_for_lost(make_client: Client) -> None:
    """The reconciler ends records no runner follows: an array whose next tasks wait for a slot
    has none handed to a runner, and is left alone."""
    client = make_client(local_max_concurrent=0, reconcile_interval_seconds=0.1, job_lost_after_seconds=0.3)
    alice = sign_up_and_in(client, "alice")
    job_id = submit(client, alice, **SPLIT, split=2)["job_id"]
    with Session(client.app.state.service.engine) as session:  # task 0 ran elsewhere and ended
        job_status.record(session, StatusReport(job_id, "succeeded", task=0), max_attempts=3)
    assert client.get(f"/jobs/{job_id}", headers=alice).json()["status"] == "running"
    # a long-poll that outlasts the grace three times over: the reconciler looked meanwhile
    doc = client.get(f"/jobs/{job_id}", params={"wait": 1}, headers=alice).json()
    assert doc["status"] == "running" and doc["tasks"]["queued"] == 1, doc


def test_a_replica_admits_no_task_of_an_array_another_replica_runs() -> None:
    """Local processes are their replica's: an array's tasks run where its first ones do, and
    once none runs anywhere (its replica gone, the job re-queued) any replica may take it."""
    def pair(job_id: str, status: str, replica: str | None) -> tuple[Task, Job]:
        job = Job(id=job_id, owner="alice", status="running", params=TINY, runner="local", replica=replica)
        return Task(job_id=job_id, index=0 if status == "running" else 1, status=status), job

    ours = pair("b", "running", "r1")
    queued = [pair("a", "queued", "r2"), pair("b", "queued", "r1"), pair("c", "queued", None)]
    active = [pair("a", "running", "r2"), ours]
    assert [job.id for _, job in admissible(queued, active, "r1")] == ["b", "c"]
    assert [job.id for _, job in admissible(queued, active, None)] == ["a", "b", "c"]  # Kubernetes: any
    assert [job.id for _, job in admissible(queued, [ours], "r1")] == ["a", "b", "c"]  # r2's tasks all ended
