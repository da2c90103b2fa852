"""fractalctl's pure parts: event-stream parsing, following a job, tables, the request it
builds, the kept token. The HTTP cases use httpx's MockTransport: real responses, real bytes."""

from __future__ import annotations

import io
import json
import tomllib
import typing
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from fractalctl import cli, credentials
from fractalctl.api import Api, ApiError, Unreachable
from fractalctl.follow import LineDisplay, NoDisplay, describe, follow
from fractalctl.output import age, job_details, jobs_table, progress_text
from fractalctl.sse import Event, parse_events, split_lines
from job_image import params

ROOT = Path(__file__).resolve().parents[2]


def job(status: str = "running", **fields: object) -> dict:
    return {
        "job_id": "a" * 32,
        "status": status,
        "params": {"kind": "julia", "width": 64, "height": 48, "zoom": 4.0, "center_x": 0.25, "center_y": 0},
        "created_at": "2026-12-01T10:00:00Z",
        **fields,
    }


def sse(*docs: dict, start: int = 1) -> bytes:
    frames = [": keep-alive\n\n"]
    frames += [f"id: {start + i}\ndata: {json.dumps(d)}\n\n" for i, d in enumerate(docs)]
    return "".join(frames).encode()


# --- Server-Sent Events -------------------------------------------------------------------------


def test_sse_parsing_follows_the_standard() -> None:
    lines = [": ping", "id: 7", "event: job", 'data: {"a":', "data: 1}", "", "", "data:x", "", "data", ""]
    assert list(parse_events(lines)) == [
        Event(data='{"a":\n1}', event="job", id="7"),  # data lines joined; blank lines alone are nothing
        Event(data="x", id="7"),  # the last id carries on; the space after ':' is optional
        Event(data="", id="7"),  # a field name alone is an empty value
    ]


# CR, LF and CRLF line ends; the first chunk ends between the CR and LF after `event: deleted`
SPLIT_STREAM = [
    "id: 1\r\nevent: deleted\r", '\ndata: {"job_id": "x"}\r\n\r', "\n", "id: 2\rdata: a\r\rdata: b\n\n",
    ": ping\r\n\r\n", "data: c\u2028d\x1cf\n", "\n",
]
SPLIT_EVENTS = [
    Event(data='{"job_id": "x"}', event="deleted", id="1"),
    Event(data="a", id="2"),
    Event(data="b", id="2"),
    Event(data="c\u2028d\x1cf", id="2"),  # only CR and LF end a line (not str.splitlines' others)
]


def test_sse_lines_end_at_cr_lf_or_crlf_wherever_the_chunks_split() -> None:
    assert list(parse_events(split_lines(SPLIT_STREAM))) == SPLIT_EVENTS
    whole = "".join(SPLIT_STREAM)
    for cut in range(len(whole) + 1):  # every split into two chunks
        assert list(parse_events(split_lines([whole[:cut], whole[cut:]]))) == SPLIT_EVENTS, cut
    assert list(parse_events(split_lines(whole))) == SPLIT_EVENTS  # one character at a time


def test_the_event_stream_is_parsed_from_the_response_as_it_arrives() -> None:
    def server(request: httpx.Request) -> httpx.Response:
        chunks = [chunk.encode() for chunk in SPLIT_STREAM]
        return httpx.Response(200, headers={"Content-Type": "text/event-stream"}, content=iter(chunks))

    with Api("http://fractal.test", "t", transport=httpx.MockTransport(server)) as api, \
            api.events("a" * 32) as events:
        assert list(events) == SPLIT_EVENTS


def test_an_event_without_a_blank_line_after_it_is_not_delivered() -> None:
    assert list(parse_events(["data: half"])) == []


def test_follow_resumes_a_lost_stream_with_last_event_id() -> None:
    asked: list[str | None] = []

    def server(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            asked.append(request.headers.get("Last-Event-ID"))
            if len(asked) == 1:  # the connection ends after two events
                return httpx.Response(200, content=sse(job(progress=0.2), job(progress=0.5)))
            return httpx.Response(200, content=sse(job("succeeded", progress=1.0), start=3))
        return httpx.Response(200, json=job(progress=0.5))

    with Api("http://fractal.test", "t", transport=httpx.MockTransport(server)) as api:
        out = io.StringIO()
        final = follow(api, job("queued"), LineDisplay(out))
    assert final["status"] == "succeeded"
    assert asked == [None, "2"]
    assert out.getvalue().splitlines() == [
        f"{'a' * 32} queued", f"{'a' * 32} running 20%", f"{'a' * 32} running 50%", f"{'a' * 32} succeeded",
    ]


def test_follow_gives_up_on_a_stream_that_keeps_ending(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("fractalctl.follow.time.sleep", lambda _s: None)
    opened = []

    def server(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            opened.append(1)
            return httpx.Response(200, content=b": ping\n\n")
        return httpx.Response(200, json=job("running"))

    with Api("http://fractal.test", "t", transport=httpx.MockTransport(server)) as api, \
            pytest.raises(Unreachable, match="keeps ending"):
        follow(api, job("queued"), NoDisplay())
    assert len(opened) == 6


def test_follow_long_polls_a_server_without_an_event_stream() -> None:
    polls = iter([job("running", progress=0.5), job("failed", error="error: no GPU")])

    def server(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            return httpx.Response(404, json={"detail": "Not Found"})
        if request.url.params.get("wait"):
            return httpx.Response(200, json=next(polls))
        return httpx.Response(200, json=job("running"))

    with Api("http://fractal.test", "t", transport=httpx.MockTransport(server)) as api:
        assert follow(api, job("queued"), NoDisplay())["error"] == "error: no GPU"


def test_follow_of_a_missing_job_is_the_servers_404() -> None:
    def server(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"detail": f"No job {'a' * 32} here."})

    with Api("http://fractal.test", "t", transport=httpx.MockTransport(server)) as api, \
            pytest.raises(ApiError, match="No job"):
        follow(api, job("queued"), NoDisplay())


def test_a_job_deleted_while_followed_is_the_servers_404() -> None:
    def server(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            gone = f"id: 9\nevent: deleted\ndata: {json.dumps({'job_id': 'a' * 32})}\n\n"
            return httpx.Response(200, content=sse(job(progress=0.1)) + gone.encode())
        return httpx.Response(404, json={"detail": f"No job {'a' * 32} here."})

    with Api("http://fractal.test", "t", transport=httpx.MockTransport(server)) as api, \
            pytest.raises(ApiError, match="No job"):
        follow(api, job("queued"), NoDisplay())


# --- what people read ---------------------------------------------------------------------------


def test_tables_and_ages() -> None:
    now = datetime(2026, 12, 1, 10, 2, 5, tzinfo=UTC)
    assert age("2026-12-01T10:02:00Z", now) == "5s" and age("2026-12-01T10:00:00Z", now) == "2m"
    assert age("2026-11-28T10:00:00Z", now) == "3d" and age(None, now) == "-"
    lines = jobs_table([job(progress=0.37), job("queued", queue_position=2)], now).splitlines()
    assert lines[0].split() == ["JOB", "ID", "STATUS", "KIND", "SIZE", "ZOOM", "PROGRESS", "AGE"]
    assert lines[1].split() == ["a" * 32, "running", "julia", "64x48", "4", "37%", "2m"]
    assert lines[2].split()[5:] == ["#2", "in", "queue", "2m"]
    assert lines[1].index("running") == lines[0].index("STATUS")  # aligned columns


def test_scheduling_fields_are_shown_when_the_server_sends_them() -> None:
    plain = job_details(job("queued"))
    assert "Queue position" not in plain and "Placement" not in plain
    scheduled = job("queued", queue_position=3, estimated_start_at="2026-12-01T10:05:00Z", priority="high",
                    estimated_iterations=1234567)
    text = job_details(scheduled)
    assert "Estimated iterations: 1,234,567" in text
    assert "Queue position:       3" in text and "Priority:             high" in text
    assert describe(scheduled).startswith("queued: #3 in queue, starts ~")
    assert progress_text(job("succeeded", progress=1.0)) == "100%" and progress_text(job("failed")) == "-"


def test_failed_job_details_lead_with_the_error() -> None:
    lines = job_details(job("failed", error="error: no GPU OpenCL device")).splitlines()
    assert lines[1].split() == ["Status:", "failed"] and lines[2].startswith("Error:")


# --- the request and the command line -----------------------------------------------------------


def test_render_sends_only_the_flags_given() -> None:
    parse = cli.build_parser().parse_args
    args = parse(["render", "--kind", "burning_ship", "--center-x", "-1.75", "--zoom", "2"])
    assert cli.render_body(args) == {"kind": "burning_ship", "center_x": "-1.75", "zoom": "2"}
    args = parse(["render", "--callback-url", "https://example.org/hook", "--priority", "high", "--wait"])
    assert cli.render_body(args) == {"callback_url": "https://example.org/hook", "priority": "high"}


@pytest.mark.parametrize(
    ("choices", "literal"),
    [(cli.KINDS, params.Kind), (cli.COLORMAPS, params.Colormap), (cli.PRECISIONS, params.Precision),
     (cli.DEVICES, params.DeviceChoice)],
)
def test_flag_choices_are_the_jobs(choices: tuple[str, ...], literal: object) -> None:
    assert choices == typing.get_args(literal)


def test_every_fractal_field_has_a_flag() -> None:
    fields = set(params.FractalParams.model_fields)
    assert fields <= {flag.replace("-", "_") for flag in cli.RENDER_FLAGS}


def test_render_arrays_are_request_fields() -> None:
    parser = cli.build_parser()
    split = parser.parse_args(["render", "--width", "64", "--split", "4"])
    assert cli.render_body(split) == {"width": 64, "split": 4}
    video = parser.parse_args(["render", "--frames", "120", "--zoom-to", "1e400", "--format", "webm"])
    # as typed, a string: a float would be inf past 1.8e308
    assert cli.render_body(video) == {"animation": {"frames": 120, "zoom_to": "1e400", "format": "webm"}}
    with pytest.raises(cli.Failure, match="--frames"):
        cli.render_body(parser.parse_args(["render", "--zoom-to", "10"]))


def test_an_arrays_details_show_its_tasks() -> None:
    job = {"job_id": "a" * 32, "status": "failed", "params": {},
           "tasks": {"total": 4, "queued": 0, "running": 0, "succeeded": 3, "failed": 1}, "failed_tasks": [2],
           "animation": {"frames": 4, "zoom_to": 100.0, "fps": 30, "format": "mp4"}}
    text = job_details(job)
    assert "Tasks:" in text and "3 of 4 succeeded, 1 failed" in text and "Failed tasks: 2" in text
    assert "4 frames to zoom 100, 30 fps, mp4" in text
    deep = job_details({**job, "animation": {**job["animation"], "zoom_to": "1e400"}})
    assert "4 frames to zoom 1e+400, 30 fps, mp4" in deep


def test_options_go_before_or_after_the_command() -> None:
    parser = cli.build_parser()
    assert parser.parse_args(["-o", "json", "ls"]).output == "json"
    assert parser.parse_args(["ls", "-o", "json", "--server", "http://x:1"]).server == "http://x:1"
    assert parser.parse_args(["ls"]).output == "table"


def test_the_console_script_is_declared() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"] == {"fractalctl": "fractalctl.cli:main"}
    assert {d.split(">")[0] for d in project["dependencies"]} == {"httpx", "rich"}


def test_fractalctl_never_imports_the_service() -> None:
    for source in (ROOT / "fractalctl").glob("*.py"):
        text = source.read_text()
        assert "import scheduler" not in text and "from scheduler" not in text, source
        assert "job_image" not in text, source


# --- the kept token -----------------------------------------------------------------------------


def test_credentials_are_kept_per_server_with_mode_0600(tmp_path: Path) -> None:
    assert credentials.config_dir({"XDG_CONFIG_HOME": str(tmp_path)}) == tmp_path / "fractalctl"
    assert credentials.config_dir({}) == Path.home() / ".config" / "fractalctl"
    kept = credentials.Credential("alice", "tok", expires_at=2e9)
    path = credentials.save("http://a:1", kept, tmp_path)
    credentials.save("http://b:2", credentials.Credential("bob", "tok2", 2e9), tmp_path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert credentials.load("http://a:1", tmp_path) == kept
    assert credentials.forget("http://a:1", tmp_path) and not credentials.forget("http://a:1", tmp_path)
    assert credentials.load("http://a:1", tmp_path) is None
    assert credentials.load("http://b:2", tmp_path).username == "bob"
    assert credentials.Credential("x", "t", 100).expired(now=100)


def test_every_render_flag_says_what_it_does_and_its_default() -> None:
    render = cli.build_parser()._subparsers._group_actions[0].choices["render"]  # type: ignore[union-attr]
    helps = {action.dest.replace("_", "-"): action.help or "" for action in render._actions}
    fields = params.FractalParams.model_fields
    for flag in cli.RENDER_FLAGS:
        assert "(default: " in helps[flag], flag
        field = fields.get(flag.replace("-", "_"))
        if field is not None and flag not in ("center-x", "center-y"):  # those depend on the kind
            default = {False: "off"}.get(field.default, field.default)
            default = f"{default:g}" if isinstance(default, float) else str(default)
            assert helps[flag].endswith(f"(default: {default})"), flag
