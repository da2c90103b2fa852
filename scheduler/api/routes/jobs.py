"""Jobs: submit, list, read (with long-poll), delete, logs, result files."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, status
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response

from job_image.storage import Download, ObjectInfo, Storage
from scheduler import crud, db
from scheduler.api import joined
from scheduler.api.deps import (
    CurrentUser,
    EngineDep,
    JobsDep,
    OwnedJob,
    SettingsDep,
    StorageDep,
    TrackerDep,
    VideosDep,
)
from scheduler.api.disconnect import unless_gone
from scheduler.api.errors import (
    OWN_JOB,
    SIGNED_IN,
    STORAGE_DOWN,
    TOO_BIG,
    Answers,
    InvalidRequest,
    conflict,
    headers,
    job_not_found,
    not_found,
    problem,
    unprocessable,
)
from scheduler.api.streaming import close_quietly, etag_matches, sends_whole, stream_bytes, stream_object
from scheduler.callbacks import check_callback_url
from scheduler.core.config import Settings
from scheduler.idempotency import parse_key
from scheduler.models import FileInfo, FilesPublic, Job, JobCreate, JobPublic, JobsPublic
from scheduler.statuses import NOT_STARTED, JobStatus
from scheduler.stored import read_object
from scheduler.tracker import Tracker

router = APIRouter(prefix="/jobs", tags=["jobs"])

# fullmatch: "$" lets a final newline in; a render array's task files are parts/<name>
FILE_NAME = re.compile(r"(parts/)?[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
WaitQuery = Annotated[float, Query(ge=0, description="seconds to wait for the job to finish")]
SUBMIT_ANSWERS: Answers = {
    202: {"description": "queued (or, reusing an equal render, succeeded or following it); with an "
                         "Idempotency-Key used before, the first answer again",
          "headers": headers("Location", sometimes=("Idempotent-Replayed",))},
    **SIGNED_IN,
    409: problem("the first request with this Idempotency-Key is still being handled"),
    413: TOO_BIG,
    422: problem("bad parameters or JSON, a render array over MAX_TASKS, MAX_ARRAY_PIXELS or "
                 "MAX_VIDEO_PIXELS, `device: gpu` where no GPU exists, an estimate over "
                 "MAX_JOB_ITERATIONS, or an Idempotency-Key that came with another body",
                 model=InvalidRequest),
    429: problem("MAX_ACTIVE_JOBS_PER_USER unfinished jobs of yours; or, with Retry-After, a full queue "
                 "(MAX_QUEUED_JOBS, all users together) or too many submits being priced "
                 "(COST_PROBES_PER_USER, COST_PROBES_TOTAL)", sometimes=("Retry-After",)),
}
LIST_ANSWERS: Answers = {**SIGNED_IN, 422: problem("a bad status, limit or offset", model=InvalidRequest)}
GET_ANSWERS: Answers = {
    200: {"description": "the job document", "headers": headers("ETag")},
    304: {"description": "If-None-Match names the document's ETag: it has not changed",
          "headers": headers("ETag")},
    **OWN_JOB,
    422: problem("a bad wait, or one over MAX_WAIT_SECONDS", model=InvalidRequest),
}
CANCEL_ANSWERS: Answers = {
    **OWN_JOB,
    409: problem("the job has already finished"),
    503: problem("the database cannot be used now, or the runner cannot stop the job now"),
}
RETRY_ANSWERS: Answers = {
    **OWN_JOB,
    409: problem("the job is not a failed render array (a single render, or one not failed)"),
    503: problem("the database cannot be used now"),
}
DELETE_ANSWERS: Answers = {
    **OWN_JOB, 503: problem("the database, result storage or the runner cannot be used now")
}
LOGS_ANSWERS: Answers = {
    **OWN_JOB, 404: problem("no job of yours has this id, it has not started, or no logs were kept"),
    503: STORAGE_DOWN,
}
FILES_ANSWERS: Answers = {**OWN_JOB, 503: STORAGE_DOWN}
STORED = {"schema": {"type": "string", "format": "binary"}}
FILE_CONTENT = {  # the PNG, result.json and the job's other files (job.log, pod.json, ...)
    **{media: STORED for media in ("image/png", "video/mp4", "video/webm", "text/plain",
                                   "application/octet-stream")},
    "application/json": {"schema": {"description": "the stored JSON file as it is"}},
}
FILE_HEADERS = headers("Accept-Ranges", "Content-Disposition", "Content-Length", sometimes=("ETag",))
RESULT_ANSWERS: Answers = {
    200: {
        "description": "the PNG (a split render's joined from its bands), an animation's video, or "
                       "the file asked for with ?file=",
        "content": FILE_CONTENT,
        "headers": FILE_HEADERS,
    },
    206: {"description": "the bytes of the Range asked for", "content": FILE_CONTENT,
          "headers": {**FILE_HEADERS, **headers("Content-Range")}},
    304: {"description": "If-None-Match names the PNG's ETag: it has not changed",
          "headers": headers("ETag")},
    307: {"description": "?redirect=true where storage is S3/MinIO: the file's presigned URL, valid "
                         "PRESIGN_SECONDS", "headers": headers("Location")},
    **OWN_JOB,
    404: problem("no job of yours has this id, or it has no such file (or a split render's part)"),
    409: problem("the job has not succeeded (yet): there is no result"),
    416: problem("the Range is outside the file", "Content-Range"),
    422: problem("a bad file name or wait", model=InvalidRequest),
    503: problem("the database or result storage cannot be used now, or an animation's video could not "
                 "be made (VIDEO_ENCODE_TIMEOUT_SECONDS)"),
}


async def finished_or_current(tracker: Tracker, settings: Settings, job: Job, wait: float) -> JobPublic:
    """The job's document, after waiting up to `wait` seconds for it to finish."""
    if wait > settings.max_wait_seconds:
        raise unprocessable(f"wait may be at most {settings.max_wait_seconds:g} seconds.")
    if wait <= 0:
        return JobPublic.of(job)
    doc = await tracker.wait_until_finished(job.id, job.owner, wait)
    if doc is None:  # deleted while we waited
        raise job_not_found(job.id)
    return doc


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=JobPublic, responses=SUBMIT_ANSWERS)
async def submit_job(
    user: CurrentUser,
    jobs: JobsDep,
    settings: SettingsDep,
    request: JobCreate,
    http: Request,
    idempotency_key: Annotated[str | None, Header(
        alias="Idempotency-Key", description="a retry with this key and the same body gets the first answer"
    )] = None,
) -> JSONResponse:
    """Ask for a fractal: validates the parameters, queues a job and returns its id at once."""
    problem = request.request_problem(settings.limits, max_tasks=settings.max_tasks,
                                      max_array_pixels=settings.max_array_pixels,
                                      max_video_pixels=settings.max_video_pixels)
    if problem:
        raise unprocessable(f"Invalid parameters: {problem}.")
    if request.callback_url is not None:
        check_callback_url(request.callback_url, settings.callback_allow_private)
    key = parse_key(idempotency_key) if idempotency_key is not None else None
    submitted = await unless_gone(http, jobs.submit(user.username, request, key))
    location = {"Location": submitted.document["links"]["self"]}
    replayed = {"Idempotent-Replayed": "true"} if submitted.replayed else {}
    return JSONResponse(submitted.document, status.HTTP_202_ACCEPTED, headers={**location, **replayed})


@router.get("", responses=LIST_ANSWERS)
async def list_jobs(
    user: CurrentUser,
    engine: EngineDep,
    settings: SettingsDep,
    status_filter: Annotated[JobStatus | None, Query(alias="status")] = None,
    limit: Annotated[int | None, Query(ge=1, description="page size")] = None,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,  # beyond: a DB integer overflow
) -> JobsPublic:
    """Your jobs, newest first; filter with ?status=, page with ?limit= and ?offset=."""
    if limit is not None and limit > settings.page_size_max:
        raise unprocessable(f"limit may be at most {settings.page_size_max}.")
    limit = limit or settings.page_size_default
    found, count = await db.in_thread(
        engine,
        lambda s: crud.list_jobs(s, owner=user.username, status=status_filter, limit=limit, offset=offset)
    )
    return JobsPublic(data=[JobPublic.of(job) for job in found], count=count, limit=limit, offset=offset)


@router.get("/{job_id}", response_model=JobPublic, responses=GET_ANSWERS)
async def get_job(
    job: OwnedJob,
    tracker: TrackerDep,
    settings: SettingsDep,
    wait: WaitQuery = 0,
    if_none_match: Annotated[str | None, Header(alias="If-None-Match")] = None,
) -> Response:
    """The job document; ?wait=SECONDS blocks until the job has finished or the time is up.
    With If-None-Match naming its ETag, a 304 without a body: pollers skip what they have seen."""
    return job_document(await finished_or_current(tracker, settings, job, wait), if_none_match)


def job_document(doc: JobPublic, if_none_match: str | None) -> Response:
    """The document with its ETag, or a 304 where If-None-Match names that ETag (also the
    status poll's fast path's answer: api/status_reads.py)."""
    # serialised once, here: the model is already validated, so FastAPI's response_model pass is skipped
    body = doc.model_dump_json().encode()
    etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
    if etag_matches(if_none_match, etag):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers={"ETag": etag})
    return Response(body, media_type="application/json", headers={"ETag": etag})


@router.post("/{job_id}/cancel", responses=CANCEL_ANSWERS)
async def cancel_job(job: OwnedJob, jobs: JobsDep) -> JobPublic:
    """Stop an active job; it stays as `cancelled`, with its logs and whatever it stored."""
    return await jobs.cancel(job)  # JobFinished: 409; RunnerUnavailable: 503 (api/errors.py)


@router.post("/{job_id}/retry", responses=RETRY_ANSWERS)
async def retry_job(job: OwnedJob, jobs: JobsDep) -> JobPublic:
    """Run a failed render array's failed tasks again; its succeeded tasks and their parts stay."""
    return await jobs.retry(job)  # NotRetryable: 409 (api/errors.py)


@router.delete("/{job_id}", responses=DELETE_ANSWERS)
async def delete_job(job: OwnedJob, jobs: JobsDep) -> JobPublic:
    """Cancel the job if it is active, remove its process or Kubernetes Job and its stored files."""
    return await jobs.delete(job)


@router.get("/{job_id}/logs", response_class=PlainTextResponse, responses=LOGS_ANSWERS)
async def job_logs(job: OwnedJob, jobs: JobsDep) -> PlainTextResponse:
    """The job's output (progress lines and its error line), while it runs and after."""
    text = await jobs.logs(job)
    if text is None:
        raise not_found("The job has not started yet." if job.status in NOT_STARTED else "No logs were kept.")
    return PlainTextResponse(text)


@router.get("/{job_id}/result/list", responses=FILES_ANSWERS)
async def list_result_files(job: OwnedJob, storage: StorageDep) -> FilesPublic:
    """The job's stored files with their sizes (names for ?file=)."""
    found: list[ObjectInfo] = await asyncio.to_thread(storage.list, job.result_prefix)
    files = [FileInfo(name=o.name, size=o.size, content_type=o.content_type) for o in found]
    return FilesPublic(job_id=job.id, files=files)


@router.head("/{job_id}/result", response_class=Response, responses=RESULT_ANSWERS,
             operation_id="head_result", summary="The result's headers, as GET would send them")
@router.get("/{job_id}/result", response_class=Response, responses=RESULT_ANSWERS)
async def download_result(
    job: OwnedJob,
    storage: StorageDep,
    tracker: TrackerDep,
    settings: SettingsDep,
    videos: VideosDep,
    http: Request,
    wait: WaitQuery = 0,
    file: Annotated[str | None, Query(description="a name from result/list (default: the image, "
                                                   "or an animation's video)")] = None,
    redirect: Annotated[bool, Query(description="answer 307 to the file's presigned URL where storage "
                                                "is S3/MinIO; local storage (and a split render's "
                                                "joined image) streams it")] = False,
    range_header: Annotated[str | None, Header(alias="Range")] = None,
    if_none_match: Annotated[str | None, Header(alias="If-None-Match")] = None,
) -> Response:
    """The rendered PNG (a split render's joined from its bands as it streams) or an animation's
    video, streamed from storage (Range and If-None-Match supported); ?file= for others;
    ?redirect=true for a presigned URL of S3/MinIO storage."""
    file = file or result_name(job)
    if not FILE_NAME.fullmatch(file):
        raise unprocessable("file must be a plain file name from result/list, e.g. result.json.")
    doc = await finished_or_current(tracker, settings, job, wait)
    if file == "image.png" and is_split(job):
        return await joined_image(storage, job, doc, range_header, if_none_match, http.method == "HEAD")
    key, head = job.result_prefix + file, http.method == "HEAD"
    found: ObjectInfo | Download | None
    etag: str | None = None
    if not redirect and sends_whole(head, range_header, if_none_match):
        # The GET itself says the size and type: one round trip to storage, not a stat first.
        found, etag = await open_with_etag(storage, job, file)
    else:
        found = await asyncio.to_thread(storage.stat, key)
    if found is None and file == result_name(job) and doc.status == "succeeded" and is_animation(job):
        found = await videos.ensure(job)  # made as the job succeeded; this waits for it (VideoFailed: 503)
    if found is None:
        if doc.status != "succeeded":
            reason = f": {doc.error}" if doc.error else ""
            raise conflict(f"The job is {doc.status}{reason}; there is no {file}.")
        raise not_found(f"The job has no file {file}; see result/list.")
    if redirect:
        url = await asyncio.to_thread(storage.presigned_url, key, settings.presign_seconds)
        if url is not None:
            return RedirectResponse(url, status.HTTP_307_TEMPORARY_REDIRECT)
    if isinstance(found, ObjectInfo) and file == "image.png":
        etag = await image_etag(storage, job)
    return await stream_object(
        storage,
        key,
        found,
        etag=etag,
        range_header=range_header,
        if_none_match=if_none_match,
        filename=f"{job.id}-{file}",
        head=head,
    )


def result_name(job: Job) -> str:
    """What `result` serves by default: the image, or an animation's video."""
    animation = (job.array or {}).get("animation")
    return f"video.{animation.get('format', 'mp4')}" if animation else "image.png"


def is_split(job: Job) -> bool:
    return job.tasks_total > 1 and "split" in (job.array or {})


def is_animation(job: Job) -> bool:
    return "animation" in (job.array or {})


async def joined_image(storage: Storage, job: Job, doc: JobPublic, range_header: str | None,
                       if_none_match: str | None, head: bool) -> Response:
    """A split render's PNG, joined from its parts as it streams (scheduler/api/joined.py)."""
    if doc.status != "succeeded":
        reason = f": {doc.error}" if doc.error else ""
        raise conflict(f"The job is {doc.status}{reason}; its bands are not all rendered (see result/list).")
    height = int(job.params.get("height", 0))
    try:
        plan = await asyncio.to_thread(joined.read_layout, storage, job.result_prefix, job.tasks_total,
                                       height)
    except joined.PartsIncomplete as exc:
        raise not_found(f"The image cannot be joined: {exc}.") from exc
    return await stream_bytes(
        lambda first, length: joined.iter_range(storage, plan, first, first + length - 1),
        plan.size, "image/png",
        etag=plan.etag, range_header=range_header, if_none_match=if_none_match,
        filename=f"{job.id}-image.png", head=head,
    )


async def open_with_etag(storage: Storage, job: Job, file: str) -> tuple[Download | None, str | None]:
    """The file opened, and meanwhile the PNG's ETag read: the two storage requests overlap."""
    opening = asyncio.ensure_future(asyncio.to_thread(storage.open, job.result_prefix + file))
    try:
        etag = await image_etag(storage, job) if file == "image.png" else None
    except BaseException:
        opening.add_done_callback(close_opened)  # what opened is released, not left to the GC
        raise
    return await opening, etag


def close_opened(opening: asyncio.Future[Download | None]) -> None:
    if not opening.cancelled() and opening.exception() is None and (download := opening.result()):
        close_quietly(download.chunks)


async def image_etag(storage: Storage, job: Job) -> str | None:
    """The PNG's sha256 as recorded by the job in result.json."""
    data = await asyncio.to_thread(read_object, storage, job.result_prefix + "result.json")
    try:
        sha = json.loads(data).get("sha256") if data else None
    except (ValueError, AttributeError):  # not a JSON object: serve without an ETag rather than fail
        return None
    return f'"{sha}"' if sha else None
