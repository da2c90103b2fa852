"""`fractalctl`: argument parsing and one small function per command.

Exit codes: 0 done; 1 the job failed or was cancelled (or a local file could not be
read or written); 2 bad usage; 3 the server refused the
call (the reason is its sentence); 4 the server could not be reached; 130 interrupted (Ctrl-C).
A failure prints one line on stderr."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from fractalctl import credentials
from fractalctl.api import Api, ApiError, Unreachable
from fractalctl.follow import FINISHED, choose_display, follow
from fractalctl.output import job_details, jobs_table

EXIT_JOB_FAILED, EXIT_USAGE, EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_INTERRUPTED = 1, 2, 3, 4, 130
LOG_POLL_SECONDS = 1.0  # logs -f: how often the log is read again
DEFAULT_SERVER = "http://127.0.0.1:8888"

# the request fields of docs/design.md; the server validates them (tests/fractalctl checks the lists)
KINDS = ("mandelbrot", "julia", "burning_ship")
COLORMAPS = ("classic", "viridis", "magma", "inferno", "twilight", "fire", "ice", "grey")
PRECISIONS = ("auto", "float32", "float64", "perturbation")
DEVICES = ("auto", "gpu", "cpu")
PRIORITIES = ("low", "normal", "high")
STATUSES = ("queued", "pending", "running", "succeeded", "failed", "cancelled")


def decimal_text(text: str) -> str:
    """A centre or zoom exactly as typed: checked to be a number, sent as the string, since a
    float keeps 17 digits and deep views need hundreds (the server keeps strings as given)."""
    try:
        finite = Decimal(text).is_finite()
    except InvalidOperation:
        finite = False
    if not finite:
        raise argparse.ArgumentTypeError(f"{text!r} is not a decimal number")
    return text


# flag -> (type, choices); the request field is the flag with '-' as '_'
RENDER_FLAGS: dict[str, tuple[Callable[[str], Any], tuple[str, ...] | None]] = {
    "kind": (str, KINDS),
    "width": (int, None),
    "height": (int, None),
    "center-x": (decimal_text, None),
    "center-y": (decimal_text, None),
    "zoom": (decimal_text, None),
    "max-iter": (int, None),
    "julia-re": (float, None),
    "julia-im": (float, None),
    "colormap": (str, COLORMAPS),
    "precision": (str, PRECISIONS),
    "device": (str, DEVICES),
    "supersample": (int, None),
    "counts": (bool, None),  # a switch: also store counts.npy
    "priority": (str, PRIORITIES),
    "callback-url": (str, None),
    "split": (int, None),
}
# a zoom video: flag -> (type, choices); sent as `animation` when --frames is given
ANIMATION_FLAGS: dict[str, tuple[Callable[[str], Any], tuple[str, ...] | None]] = {
    "frames": (int, None),
    "zoom-to": (decimal_text, None),
    "fps": (int, None),
    "format": (str, ("mp4", "webm")),
}
# each render flag's help, with the server's default (docs/design.md, "Fractal parameters")
RENDER_HELP: dict[str, str] = {
    "kind": "the iteration (default: mandelbrot)",
    "width": "image width in pixels (default: 800)",
    "height": "image height in pixels (default: 600)",
    "center-x": "real part of the view's centre, every digit kept (default: the kind's whole-set view, "
                "e.g. -0.5)",
    "center-y": "imaginary part of the view's centre, every digit kept (default: the kind's whole-set "
                "view, e.g. 0)",
    "zoom": "the view spans 3/zoom along the real axis; e.g. 1e400 (default: 1)",
    "max-iter": "iteration cap per sample (default: 500)",
    "julia-re": "Julia constant, real part; julia only (default: -0.8)",
    "julia-im": "Julia constant, imaginary part; julia only (default: 0.156)",
    "colormap": "colouring (default: classic)",
    "precision": "the kernel's numbers; auto: the cheapest that resolves the frame (default: auto)",
    "device": "where the kernel runs; auto: whichever class finishes first (default: auto)",
    "supersample": "samples per pixel side, 1 to 4 (default: 1)",
    "counts": "also store counts.npy, the escape counts (default: off)",
    "priority": "order among your own queued jobs, never ahead of others' fair share (default: normal)",
    "callback-url": "POSTed the final job document, signed (default: none)",
    "split": "render the image as this many tasks, each a band of rows (default: 1)",
    "frames": "a zoom video of this many frames, one task each (sends `animation`)",
    "zoom-to": "the video's last frame's zoom (with --frames); e.g. 1e400",
    "fps": "the video's frames per second (default: 30)",
    "format": "the video's container and codec: mp4 (H.264) or webm (VP9) (default: mp4)",
}


class Failure(Exception):
    """Ends the command with one line on stderr and this exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


# --- the commands ---------------------------------------------------------------------------


def emit(args: argparse.Namespace, doc: Any, text: str) -> None:
    print(json.dumps(doc, indent=2) if args.output == "json" else text)


def read_password(args: argparse.Namespace, confirm: bool) -> str:
    if args.password_stdin:
        password = sys.stdin.read().removesuffix("\n").removesuffix("\r")
    elif sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if confirm and getpass.getpass("Repeat password: ") != password:
            raise Failure("The passwords do not match.", EXIT_USAGE)
    else:
        raise Failure("No terminal to ask for the password; pipe it in with --password-stdin.", EXIT_USAGE)
    if not password:
        raise Failure("The password is empty.", EXIT_USAGE)
    return password


def sign_in(args: argparse.Namespace, api: Api, password: str) -> None:
    token = api.sign_in(args.username, password)
    expires_at = time.time() + token["expires_in"]
    credentials.save(args.server, credentials.Credential(args.username, token["access_token"], expires_at))
    emit(args, {"username": args.username, "server": args.server},
         f"Signed in to {args.server} as {args.username}.")


def cmd_signup(args: argparse.Namespace, api: Api) -> int:
    password = read_password(args, confirm=True)
    api.sign_up(args.username, password)
    sign_in(args, api, password)  # an account is for using: keep its token at once
    return 0


def cmd_login(args: argparse.Namespace, api: Api) -> int:
    sign_in(args, api, read_password(args, confirm=False))
    return 0


def cmd_logout(args: argparse.Namespace, _api: Api) -> int:
    had = credentials.forget(args.server)
    emit(args, {"server": args.server, "signed_out": had},
         f"Signed out of {args.server}." if had else f"Not signed in to {args.server}.")
    return 0


def render_body(args: argparse.Namespace) -> dict[str, Any]:
    """The request: only the flags given, so the server's defaults (e.g. each kind's view) apply."""
    fields = {flag.replace("-", "_") for flag in RENDER_FLAGS}
    body = {name: value for name, value in vars(args).items() if name in fields and value is not None}
    video = {f.replace("-", "_"): getattr(args, f.replace("-", "_")) for f in ANIMATION_FLAGS}
    if video["frames"] is not None:
        body["animation"] = {k: v for k, v in video.items() if v is not None}
    elif any(v is not None for v in video.values()):
        raise Failure("--zoom-to, --fps and --format make a video: give --frames too.", EXIT_USAGE)
    return body


def cmd_render(args: argparse.Namespace, api: Api) -> int:
    job = api.submit(render_body(args))
    if not (args.wait or args.out):
        emit(args, job, job_details(job))
        return 0
    return finish(args, api, job, args.out)


def finish(args: argparse.Namespace, api: Api, job: dict[str, Any], out: Path | None) -> int:
    """Follow the job to its end (exit 1 unless it succeeded), then save its PNG to `out`."""
    try:
        job = follow(api, job, choose_display(args.output == "json"))
    except KeyboardInterrupt:
        raise Failure(f"Stopped waiting; job {job['job_id']} keeps running "
                      f"(fractalctl cancel {job['job_id']} stops it).", EXIT_INTERRUPTED) from None
    if job["status"] != "succeeded":
        reason = f": {job['error']}" if job.get("error") else "."
        raise Failure(f"Job {job['job_id']} {job['status']}{reason}", EXIT_JOB_FAILED)
    text = f"Job {job['job_id']} succeeded{' (from an earlier render)' if job.get('cached') else ''}."
    if out:
        size = api.download(job["job_id"], out)
        text += f" Saved {out} ({size} bytes)."
    emit(args, job, text)
    return 0


def cmd_wait(args: argparse.Namespace, api: Api) -> int:
    return finish(args, api, api.job(args.job_id), None)


def cmd_download(args: argparse.Namespace, api: Api) -> int:
    size = api.download(args.job_id, args.out, file=args.file)
    emit(args, {"job_id": args.job_id, "file": args.file, "out": str(args.out), "bytes": size},
         f"Saved {args.out} ({size} bytes).")
    return 0


def cmd_get(args: argparse.Namespace, api: Api) -> int:
    job = api.job(args.job_id)
    emit(args, job, job_details(job))
    return 0


def cmd_ls(args: argparse.Namespace, api: Api) -> int:
    page = api.jobs(status=args.status, limit=args.limit)
    text = jobs_table(page["data"]) if page["data"] else "No jobs."
    if page["count"] > len(page["data"]):
        text += f"\n({len(page['data'])} of {page['count']}; --limit shows more)"
    emit(args, page, text)
    return 0


def cmd_logs(args: argparse.Namespace, api: Api) -> int:
    if not args.follow:
        sys.stdout.write(api.logs(args.job_id))
        return 0
    try:
        for text in follow_logs(api, args.job_id):
            sys.stdout.write(text)
            sys.stdout.flush()
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return 0


def follow_logs(api: Api, job_id: str, every: float = LOG_POLL_SECONDS) -> Iterator[str]:
    """The job's log as it grows, until the job has ended and all of it was shown. The log is
    read whole each time (it is small: progress lines), and what is new is passed on."""
    shown = 0
    while True:
        status = api.job(job_id)["status"]  # before the read: an end seen here has its log complete
        try:
            text = api.logs(job_id)
        except ApiError as exc:
            if exc.status != 404 or status not in ("queued", "pending"):
                raise
            text = ""  # not started yet
        if len(text) > shown:
            yield text[shown:]
            shown = len(text)
        if status in FINISHED:
            return
        time.sleep(every)


def cmd_retry(args: argparse.Namespace, api: Api) -> int:
    job = api.retry(args.job_id)
    emit(args, job, f"Job {job['job_id']} {job['status']}: its failed tasks run again.")
    return 0


def cmd_cancel(args: argparse.Namespace, api: Api) -> int:
    job = api.cancel(args.job_id)
    emit(args, job, f"Job {job['job_id']} {job['status']}.")
    return 0


def cmd_rm(args: argparse.Namespace, api: Api) -> int:
    job = api.delete(args.job_id)
    emit(args, job, f"Job {job['job_id']} deleted.")
    return 0


# --- parsing --------------------------------------------------------------------------------


def common_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """--server and -o, accepted before or after the command (the command's copy only
    overrides what was given, hence SUPPRESS there)."""
    server = os.environ.get("FRACTAL_SERVER") or DEFAULT_SERVER
    parser.add_argument("--server", default=server if defaults else argparse.SUPPRESS,
                        help=f"the API's address (FRACTAL_SERVER; default {DEFAULT_SERVER})")
    parser.add_argument("-o", "--output", choices=("table", "json"),
                        default="table" if defaults else argparse.SUPPRESS,
                        help="table for people (default), json: the API's documents")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fractalctl", description="Render fractals on a fractal-scheduler.")
    common_options(parser, defaults=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Callable[..., int], text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=text, description=text)
        common_options(sub, defaults=False)
        sub.set_defaults(handler=handler)
        return sub

    for name, handler, text in (
        ("signup", cmd_signup, "create an account and sign in"),
        ("login", cmd_login, "sign in and keep the token"),
    ):
        sub = command(name, handler, text)
        sub.add_argument("--username", required=True)
        sub.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    command("logout", cmd_logout, "forget this server's token")

    render = command("render", cmd_render, "submit a render job")
    for flag, (kind, choices) in {**RENDER_FLAGS, **ANIMATION_FLAGS}.items():
        if kind is bool:
            render.add_argument(f"--{flag}", action="store_true", default=None, help=RENDER_HELP[flag])
        else:
            render.add_argument(f"--{flag}", type=kind, choices=choices, help=RENDER_HELP[flag])
    render.add_argument("--wait", action="store_true", help="follow the job until it ends")
    render.add_argument("--out", type=Path, metavar="FILE",
                        help="save the PNG (or a video's file) here (implies --wait)")

    command("get", cmd_get, "show a job").add_argument("job_id", metavar="ID")
    ls = command("ls", cmd_ls, "list your jobs, newest first")
    ls.add_argument("--status", choices=STATUSES)
    ls.add_argument("--limit", type=int, help="how many (the server's page size by default)")
    command("wait", cmd_wait, "follow a job until it ends; exit 0 when it succeeded, 1 when not"
            ).add_argument("job_id", metavar="ID")
    download = command("download", cmd_download, "save a job's image (or another of its files)")
    download.add_argument("job_id", metavar="ID")
    download.add_argument("--out", type=Path, metavar="FILE", required=True, help="where to save it")
    download.add_argument("--file", default="image.png", metavar="NAME",
                          help="a name from the job's stored files (default: image.png)")
    logs = command("logs", cmd_logs, "print a job's output")
    logs.add_argument("job_id", metavar="ID")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing while the job runs")
    for name, handler, text in (
        ("cancel", cmd_cancel, "stop a job; it stays, as cancelled"),
        ("retry", cmd_retry, "run a failed render array's failed tasks again"),
        ("rm", cmd_rm, "delete a job, its logs and its image"),
    ):
        command(name, handler, text).add_argument("job_id", metavar="ID")
    return parser


def session(args: argparse.Namespace) -> Api:
    """An API session, signed in with the kept token unless the command signs in itself."""
    if args.command in ("signup", "login", "logout"):
        return Api(args.server)
    kept = credentials.load(args.server)
    if kept is None or kept.expired():
        with Api(args.server) as anonymous:
            anonymous.reachable()  # a server that cannot be reached is exit 4, signed in or not
        state = "Not signed in" if kept is None else "The token has expired"
        raise Failure(f"{state} for {args.server}; run: fractalctl login --username NAME", EXIT_REFUSED)
    return Api(args.server, kept.access_token)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.server = args.server.rstrip("/")  # one credentials entry per server, however it is typed
    try:
        with session(args) as api:
            return args.handler(args, api)
    except ApiError as exc:
        hint = " (fractalctl login --username NAME)" if exc.status == 401 else ""
        return fail(f"{exc.detail}{hint}", EXIT_REFUSED)
    except Unreachable as exc:
        return fail(str(exc), EXIT_UNREACHABLE)
    except BrokenPipeError:  # e.g. `fractalctl ls | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (Failure, ValueError, OSError) as exc:
        return fail(str(exc), getattr(exc, "code", EXIT_JOB_FAILED))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def fail(message: str, code: int) -> int:
    print(f"fractalctl: {message}", file=sys.stderr)
    return code
