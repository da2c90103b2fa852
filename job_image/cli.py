"""`python -m job_image`: render one fractal and store it (the job contract, docs/design.md).

Parameters come from FRACTAL_PARAMS (JSON) and/or flags (flags win); output goes to --out
FILE (plus FILE's .json) or to storage (STORAGE_DIR or MINIO_*) under RESULT_PREFIX.
Progress goes to stdout; stderr holds nothing but the one-line reason of a failure, because
the scheduler shows its last line as the job's error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, NoReturn, TextIO, get_args, get_origin

from pydantic import ValidationError

from . import sigterm, tasks, worker
from .errors import InvalidParams, JobError, StorageFailed
from .params import FractalParams, Limits, describe_error, parse_params
from .settings import JobSettings, configure_opencl_cache
from .storage import StorageError, storage_from_env

# flag -> parameter field; values stay strings so pydantic reports every bad one the same way
FLAGS = {
    "--kind": "kind", "--width": "width", "--height": "height",
    "--center-x": "center_x", "--center-y": "center_y", "--zoom": "zoom",
    "--max-iter": "max_iter", "--julia-re": "julia_re", "--julia-im": "julia_im",
    "--colormap": "colormap", "--precision": "precision", "--device": "device",
    "--supersample": "supersample",
}
# Part of the API's request (docs/design.md) but handled by the scheduler, not the render.
SCHEDULER_ONLY = ("callback_url",)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line and exit 2, not usage + message
        raise InvalidParams(f"invalid arguments: {message}")


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="python -m job_image", description="Render a fractal with OpenCL and store it.")
    for flag, field in FLAGS.items():
        info = FractalParams.model_fields[field]
        choices = get_args(info.annotation) if get_origin(info.annotation) is Literal else ()
        what = f"one of {', '.join(choices)}" if choices else info.description
        ap.add_argument(flag, dest=field, metavar=field.upper().replace("_", "-"),
                        type=int if info.annotation is int else None,  # the model takes ints only
                        help=f"{what} (default {info.default})")
    ap.add_argument("--params", help="parameters as a JSON object (default: $FRACTAL_PARAMS)")
    ap.add_argument("--job-id", help="job id (default: $JOB_ID, else a random id)")
    ap.add_argument("--result-prefix", help="storage prefix (default: $RESULT_PREFIX, else JOB_ID/)")
    ap.add_argument("--out", type=Path, help="write the PNG here and the result beside it (.json)")
    ap.add_argument("--counts", type=Path, metavar="FILE.npy",
                    help="also write the escape counts here (uint32, height*n x width*n samples)")
    ap.add_argument("--quiet", action="store_true", help="no progress lines")
    return ap


def gather_params(
    args: argparse.Namespace, env: dict[str, str] | os._Environ[str], split: int = 1
) -> FractalParams:
    """FRACTAL_PARAMS / --params, overlaid with explicit flags, validated with the env's limits
    (a split render's task: those of its band)."""
    raw = args.params if args.params is not None else env.get("FRACTAL_PARAMS", "")
    data: dict[str, Any] = {}
    if raw.strip():
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise InvalidParams(f"invalid parameters: FRACTAL_PARAMS is not JSON ({exc.msg})") from exc
        if not isinstance(data, dict):
            raise InvalidParams("invalid parameters: FRACTAL_PARAMS must be a JSON object")
    for name in SCHEDULER_ONLY:
        data.pop(name, None)
    data.update({f: getattr(args, f) for f in FLAGS.values() if getattr(args, f) is not None})
    try:
        limits = Limits.from_env(dict(env))
    except ValueError as exc:
        raise InvalidParams(f"invalid limits in the environment: {exc}") from exc
    try:
        return parse_params(data, limits, split)
    except (ValidationError, ValueError) as exc:
        raise InvalidParams(f"invalid parameters: {describe_error(exc)}") from exc


def _progress(quiet: bool) -> Callable[[int], None]:
    """Prints `progress N%` to stdout when N changes (flushed: the scheduler reads it live)."""
    last = -1

    def report(percent: int) -> None:
        nonlocal last
        if not quiet and percent != last:
            last = percent
            print(f"progress {percent}%", flush=True)

    return report


def _noise_to_stdout() -> None:
    """Keep stderr to the job's one error line: the scheduler shows the last stderr line as the
    job's error, so anything after the real cause would hide it."""
    # pyopencl reports compiler chatter as warnings
    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: TextIO | None = None, line: str | None = None) -> None:
        print(f"warning: {category.__name__}: {_one_line(str(message))}", flush=True)

    # errors in __del__ at exit (pytools' cache, once its directory could not be made)
    def unraisable(info: sys.UnraisableHookArgs) -> None:
        what = f"{type(info.exc_value).__name__}: {_one_line(str(info.exc_value))}"
        print(f"warning: ignored in {info.object!r}: {what}", flush=True)

    warnings.showwarning = show
    sys.unraisablehook = unraisable


def run(argv: Sequence[str] | None = None, env: dict[str, str] | None = None) -> int:
    """Parse, render, store; returns the exit code. Raises JobError for contract failures."""
    env = os.environ if env is None else env
    args = build_parser().parse_args(argv)
    try:
        array, index = tasks.from_env(dict(env))
    except ValueError as exc:
        raise InvalidParams(f"invalid render array: {exc}") from exc
    params = gather_params(args, env, split=array.split if array else 1)
    job_id = args.job_id or env.get("JOB_ID") or uuid.uuid4().hex
    try:
        tasks.task(params, array, index)  # an index outside the array: refused before any render
    except ValueError as exc:
        raise InvalidParams(f"invalid render array: {exc}") from exc
    who = worker.describe(job_id, env, task=index if "JOB_COMPLETION_INDEX" in env else None)
    sigterm.first_line_pending(f"{who}, device not chosen yet")  # what a stop before it prints
    try:
        settings = JobSettings.from_env(dict(env))
    except ValueError as exc:
        raise InvalidParams(f"invalid settings: {exc}") from exc

    storage = prefix = None
    if args.out is None:
        if not (env.get("MINIO_ENDPOINT") or env.get("STORAGE_DIR")):
            raise InvalidParams("nowhere to write: give --out FILE, or set STORAGE_DIR or MINIO_ENDPOINT")
        prefix = args.result_prefix or env.get("RESULT_PREFIX") or f"{job_id}/"
        prefix = prefix if prefix.endswith("/") else prefix + "/"
        try:
            storage = storage_from_env(dict(env))
        except StorageError as exc:
            raise StorageFailed(f"storage failure: {exc}") from exc

    # Imported late: pyopencl's import is the slow part, and bad input should fail fast. Its
    # caches are placed first: pytools opens one at import, under HOME unless told otherwise.
    configure_opencl_cache(settings.opencl_cache_dir)
    from . import job, output

    def first_line(chosen: Any) -> None:  # the log's first line names the worker and the device
        print(f"{who}, device {chosen.name}", flush=True)
        sigterm.first_line_said()

    piece = tasks.task(params, array, index)
    rendered = job.render(piece.params, settings, _progress(args.quiet), env=dict(env),
                          keep_counts=args.counts is not None, rows=piece.rows, on_device=first_line)
    doc = output.result_document(job_id, piece.params, rendered)
    if array is not None:
        doc.update(output.task_fields(piece, rendered.png))
    counts = output.npy_bytes(rendered.counts) if rendered.counts is not None else None
    written = [output.write_file(args.counts, counts)] if args.counts and counts is not None else []
    if storage is None:
        if params.counts and not args.counts and counts is not None:  # counts: true, beside the PNG
            written.append(output.write_file(args.out.with_suffix(".npy"), counts))
        written.extend(output.write_local(args.out, rendered.png, doc))
        where = ", ".join(map(str, written))
    else:
        try:
            keys = output.upload(storage, prefix, rendered.png, doc, counts if params.counts else None,
                                 index if array is not None else None)
        except ValueError as exc:  # an unsafe key, i.e. a bad RESULT_PREFIX
            raise InvalidParams(f"invalid RESULT_PREFIX {prefix!r}: {exc}") from exc
        where = ", ".join([*map(str, written), *keys])
    what = f"task {index} of {array.tasks}: " if array is not None else ""
    print(
        f"done {what}{params.width}x{piece.height} {params.kind} {rendered.precision} on {rendered.device}: "
        f"{rendered.total_iterations} iterations, kernel {rendered.kernel_seconds:.3f} s, "
        f"render {rendered.render_seconds:.3f} s, {len(rendered.png)} bytes -> {where}",
        flush=True,
    )
    return 0


def _one_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[0] if lines else "unknown error"


def main(argv: Sequence[str] | None = None, env: dict[str, str] | None = None) -> int:
    """Entry point: exit codes 0 done, 2 bad parameters, 3 no device, 4 storage, 1 other."""
    _noise_to_stdout()
    try:
        return run(argv, env)
    except JobError as exc:
        print(f"error: {_one_line(str(exc))}", file=sys.stderr, flush=True)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr, flush=True)
        return 130
    except Exception as exc:  # the contract wants one line on stderr, never a traceback
        print(f"error: {type(exc).__name__}: {_one_line(str(exc))}", file=sys.stderr, flush=True)
        return 1


