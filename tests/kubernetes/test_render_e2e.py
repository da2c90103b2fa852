"""End to end through the Kubernetes path: the real `python -m job_image` runs as the double's
pod, renders on the CPU (PoCL) and uploads to the moto S3 server; the runner reports success."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid

from job_image.s3 import MinioStorage
from scheduler.core.config import Settings
from tests.kubernetes.apiserver import FakeApiServer
from tests.kubernetes.conftest import MakeRunner, Recorder, make_spec


def test_real_job_renders_through_the_kubernetes_path(
    make_runner: MakeRunner,
    settings: Settings,
    recorder: Recorder,
    storage: MinioStorage,
    apiserver: FakeApiServer,
) -> None:
    apiserver.default_command = None  # the container's own command: python -m job_image
    job_id = uuid.uuid4().hex
    spec = make_spec(job_id, width=96, height=64, max_iter=64, device="cpu")

    async def scenario() -> None:
        runner = make_runner(settings, recorder)
        await runner.start([])
        await runner.submit(spec)
        done = await recorder.wait(job_id, "succeeded", timeout=90)
        assert done.error is None, done
        await runner.stop()

    asyncio.run(asyncio.wait_for(scenario(), 120))
    files = {o.name: o.size for o in storage.list(spec.result_prefix)}
    assert {"image.png", "result.json", "job.log", "pod.json", "events.json"} <= set(files)
    png = b"".join(storage.iter_bytes(f"{spec.result_prefix}image.png"))
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    result = json.loads(b"".join(storage.iter_bytes(f"{spec.result_prefix}result.json")))
    assert result["job_id"] == job_id and (result["width"], result["height"]) == (96, 64)
    assert result["sha256"] == hashlib.sha256(png).hexdigest()
    assert apiserver.denials == []
