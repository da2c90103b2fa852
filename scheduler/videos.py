"""A zoom video from its frames: once every task of an animation has succeeded, its frames
(`parts/<k>.png`) are encoded in order into `video.mp4` (H.264) or `video.webm` (VP9) with
PyAV, which ships FFmpeg in its wheel. Frames are read one at a time, in a worker thread, one
encode at a time per replica, each bounded by VIDEO_ENCODE_TIMEOUT_SECONDS. The frames stay.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from fractions import Fraction
from typing import Any

from PIL import Image

from job_image.storage import ObjectInfo, Storage, content_type_for
from scheduler.models import Job

log = logging.getLogger(__name__)

CODECS = {"mp4": "libx264", "webm": "libvpx-vp9"}  # both play in every current browser
CRF = "23"  # H.264's default quality; VP9 is given the same number (its scale is similar)


class VideoFailed(Exception):
    """The video could not be made (a frame missing or unreadable, the encoder, the time bound)."""


def video_name(animation: dict[str, Any]) -> str:
    return f"video.{animation.get('format', 'mp4')}"


def encode(frames: list[bytes] | Any, *, width: int, height: int, fps: int, fmt: str,
           deadline: float) -> bytes:
    """The video of `frames` (an iterable of PNG bytes, read as needed): one video frame each."""
    import av  # FFmpeg's libraries: loaded only where a video is made

    out = io.BytesIO()
    with av.open(out, mode="w", format=fmt) as container:
        stream = container.add_stream(CODECS[fmt], rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": CRF} if fmt == "mp4" else {"crf": CRF, "b:v": "0"}
        for k, data in enumerate(frames):
            if time.monotonic() > deadline:
                raise VideoFailed(f"encoding took longer than allowed (stopped at frame {k})")
            rgb = Image.open(io.BytesIO(data)).convert("RGB")
            for packet in stream.encode(av.VideoFrame.from_image(rgb)):
                container.mux(packet)
        for packet in stream.encode():  # flush the encoder's delayed frames
            container.mux(packet)
    return out.getvalue()


def make_video(storage: Storage, job: Job, timeout: float) -> None:
    """Encode the job's frames into its video and store it (blocking: a worker thread)."""
    animation = (job.array or {})["animation"]
    prefix, total = job.result_prefix, job.tasks_total
    for k in range(total):
        if storage.stat(f"{prefix}parts/{k}.png") is None:
            raise VideoFailed(f"frame {k} has not been stored")
    frames = (b"".join(storage.iter_bytes(f"{prefix}parts/{k}.png")) for k in range(total))
    started = time.monotonic()
    try:
        data = encode(frames, width=job.params["width"], height=job.params["height"],
                      fps=animation.get("fps", 30), fmt=animation.get("format", "mp4"),
                      deadline=started + timeout)
    except VideoFailed:
        raise
    except Exception as exc:  # PyAV's errors, an unreadable frame: the reason, not a 500
        raise VideoFailed(f"{type(exc).__name__}: {exc}") from exc
    name = video_name(animation)
    storage.put_bytes(prefix + name, data, content_type_for(name))
    log.info("job %s: %s of %d frames, %d bytes, in %.1f s", job.id, name, total, len(data),
             time.monotonic() - started)


class Videos:
    """Makes an animation's video once: in the background when the job succeeds, or when its
    result is asked for first (whichever comes first; the other waits for it)."""

    def __init__(self, storage: Storage, *, timeout: float) -> None:
        self.storage, self.timeout = storage, timeout
        self._making: dict[str, asyncio.Task[ObjectInfo]] = {}
        self._one_at_a_time = asyncio.Semaphore(1)  # encoding takes every core FFmpeg is given

    def start(self, job: Job) -> None:
        """Begin making the video of a job that has just succeeded."""
        task = self._task(job)
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # logged in _make

    async def ensure(self, job: Job) -> ObjectInfo:
        """The stored video, made now if it is not there yet; raises VideoFailed."""
        return await asyncio.shield(self._task(job))

    def _task(self, job: Job) -> asyncio.Task[ObjectInfo]:
        task = self._making.get(job.id)
        if task is None:
            task = self._making[job.id] = asyncio.get_running_loop().create_task(self._make(job))
            task.add_done_callback(lambda _: self._making.pop(job.id, None))
        return task

    async def _make(self, job: Job) -> ObjectInfo:
        key = job.result_prefix + video_name((job.array or {})["animation"])
        info = await asyncio.to_thread(self.storage.stat, key)
        if info is not None:
            return info
        async with self._one_at_a_time:
            try:
                await asyncio.to_thread(make_video, self.storage, job, self.timeout)
            except VideoFailed as exc:
                log.warning("job %s: no video: %s", job.id, exc)
                raise
        info = await asyncio.to_thread(self.storage.stat, key)
        if info is None:
            raise VideoFailed("the video was made but cannot be read back")
        return info

    async def stop(self) -> None:
        for task in list(self._making.values()):
            task.cancel()
