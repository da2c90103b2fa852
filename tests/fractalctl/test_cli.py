"""fractalctl as a user runs it: a subprocess against the service on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.scheduler.conftest import LONG

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--width", "48", "--height", "32", "--max-iter", "40", "--device", "cpu"]
PASSWORD = "correct-horse"

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def env(live_service: str, tmp_path: Path) -> dict[str, str]:
    """A config dir of its own; FRACTAL_SERVER names the service."""
    return {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config"), "FRACTAL_SERVER": live_service}


@pytest.fixture
def ctl(env: dict[str, str]) -> Run:
    """Runs `python -m fractalctl ARGS`."""

    def run(*args: str, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "fractalctl", *args],
            cwd=ROOT, env=env, input=stdin, capture_output=True, text=True, timeout=timeout,
        )

    return run


@pytest.fixture
def user(ctl: Run) -> str:
    name = f"u{uuid.uuid4().hex[:10]}"
    done = ctl("signup", "--username", name, "--password-stdin", stdin=PASSWORD + "\n")
    assert done.returncode == 0, done.stderr
    return name


def one_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("fractalctl: ")
    return lines[0]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    return struct.unpack(">II", data[16:24])


def test_signup_keeps_the_token_readable_by_the_user_alone(ctl: Run, user: str, tmp_path: Path) -> None:
    kept = tmp_path / "config" / "fractalctl" / "credentials.json"
    assert kept.stat().st_mode & 0o777 == 0o600
    assert kept.parent.stat().st_mode & 0o777 == 0o700
    assert PASSWORD not in kept.read_text()
    login = ctl("login", "--username", user, "--password-stdin", stdin=PASSWORD)
    assert login.returncode == 0 and user in login.stdout


def test_render_out_follows_the_job_and_saves_the_png(ctl: Run, user: str, tmp_path: Path) -> None:
    out = tmp_path / "m.png"
    done = ctl("render", *TINY, "--kind", "julia", "--center-x", "0", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert png_size(out) == (48, 32)
    lines = done.stdout.splitlines()  # not a terminal: plain lines, no bar
    assert lines[-1].startswith("Job ") and f"Saved {out}" in lines[-1]
    job_id = lines[-1].split()[1]
    assert any(line.startswith(f"{job_id} succeeded") for line in lines)
    assert "\x1b[" not in done.stdout


def test_a_split_render_saves_the_whole_png_and_retry_says_why_not(
    ctl: Run, user: str, tmp_path: Path
) -> None:
    out = tmp_path / "split.png"
    done = ctl("render", *TINY, "--split", "3", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert png_size(out) == (48, 32)  # the bands, joined by the server
    job_id = done.stdout.splitlines()[-1].split()[1]
    refused = ctl("retry", job_id)
    assert refused.returncode == 3 and "only a failed job's tasks can run again" in refused.stderr


def test_on_a_terminal_the_progress_is_a_bar(env: dict[str, str], user: str) -> None:
    leader, follower = os.openpty()  # stderr is a terminal, stdout a pipe
    proc = subprocess.Popen(
        [sys.executable, "-m", "fractalctl", "render", *TINY, "--wait"],
        cwd=ROOT, env={**env, "TERM": "xterm-256color"},
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=follower,
    )
    os.close(follower)
    terminal = b""
    with contextlib.suppress(OSError):  # EIO once the process has closed the terminal
        while chunk := os.read(leader, 4096):
            terminal += chunk
    os.close(leader)
    stdout = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 0, terminal
    assert "━" in terminal.decode() and "100%" in terminal.decode()  # rich's bar, full
    assert stdout.startswith("Job ") and "running" not in stdout  # no plain lines beside the bar


def test_json_output_is_the_api_documents(ctl: Run, user: str) -> None:
    submitted = json.loads(ctl("-o", "json", "render", *TINY, "--colormap", "fire", "--zoom", "2").stdout)
    assert submitted["status"] == "queued"
    assert submitted["params"]["colormap"] == "fire" and submitted["params"]["zoom"] == "2"
    job_id = submitted["job_id"]
    got = json.loads(ctl("get", job_id, "-o", "json").stdout)
    assert got["job_id"] == job_id and got["params"] == submitted["params"]
    listed = json.loads(ctl("ls", "-o", "json").stdout)
    assert [j["job_id"] for j in listed["data"]] == [job_id] and listed["count"] == 1


def test_tables_for_people(ctl: Run, user: str) -> None:
    job_id = ctl("-o", "json", "render", *TINY, "--wait").stdout
    job_id = json.loads(job_id)["job_id"]
    table = ctl("ls", "--status", "succeeded").stdout.splitlines()
    assert table[0].split() == ["JOB", "ID", "STATUS", "KIND", "SIZE", "ZOOM", "PROGRESS", "AGE"]
    assert table[1].split()[:6] == [job_id, "succeeded", "mandelbrot", "48x32", "1", "100%"]
    assert ctl("ls", "--status", "failed").stdout.strip() == "No jobs."
    details = ctl("get", job_id).stdout
    assert "Job ID:" in details and "Status:" in details and "Size:" in details and "48x32" in details
    assert "progress 100%" in ctl("logs", job_id).stdout


def wait_running(ctl: Run, job_id: str) -> None:
    deadline = time.monotonic() + 120
    while json.loads(ctl("-o", "json", "get", job_id).stdout)["status"] != "running":
        assert time.monotonic() < deadline, f"job {job_id} did not start in 120 s"
        time.sleep(0.1)


def test_cancel_keeps_the_job_and_its_follower_exits_1(
    ctl: Run, env: dict[str, str], user: str, tmp_path: Path
) -> None:
    long = [f"--{k.replace('_', '-')}={v}" for k, v in LONG.items()]
    job_id = json.loads(ctl("-o", "json", "render", *long).stdout)["job_id"]
    wait_running(ctl, job_id)
    out = tmp_path / "never.png"
    follower = subprocess.Popen(
        [sys.executable, "-m", "fractalctl", "render", "--out", str(out), *long],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        followed = ""
        deadline = time.monotonic() + 60
        while not followed:  # the follower's job, from its first plain line
            assert time.monotonic() < deadline and follower.poll() is None
            followed = follower.stdout.readline().split(" ")[0]
        assert ctl("cancel", job_id).stdout.strip() == f"Job {job_id} cancelled."
        cancelled = ctl("cancel", followed)
        assert cancelled.returncode == 0, cancelled.stderr
        _out, err = follower.communicate(timeout=60)
    finally:
        follower.kill()
    assert follower.returncode == 1
    assert one_line(err) == f"fractalctl: Job {followed} cancelled."
    assert not out.exists()
    again = ctl("cancel", job_id)
    assert again.returncode == 3 and "already" in one_line(again.stderr).lower()
    kept = json.loads(ctl("-o", "json", "get", job_id).stdout)  # a cancelled job stays
    assert kept["status"] == "cancelled"


def test_rm_removes_the_job(ctl: Run, user: str) -> None:
    job_id = json.loads(ctl("-o", "json", "render", *TINY, "--wait").stdout)["job_id"]
    removed = ctl("rm", job_id)
    assert removed.returncode == 0 and removed.stdout.strip() == f"Job {job_id} deleted."
    gone = ctl("get", job_id)
    assert gone.returncode == 3 and f"No job {job_id}" in one_line(gone.stderr)


def test_a_refused_request_is_one_line_with_the_servers_sentence(ctl: Run, user: str) -> None:
    refused = ctl("render", "--width", "0")
    assert refused.returncode == 3 and refused.stdout == ""
    assert "width" in one_line(refused.stderr)


def test_a_wrong_password_is_refused(ctl: Run, user: str) -> None:
    refused = ctl("login", "--username", user, "--password-stdin", stdin="wrong-horse")
    assert refused.returncode == 3
    hint = "(fractalctl login --username NAME)"
    assert one_line(refused.stderr) == f"fractalctl: Wrong username or password. {hint}"


def test_signed_out_commands_say_how_to_sign_in(ctl: Run) -> None:
    refused = ctl("ls")
    assert refused.returncode == 3 and "fractalctl login" in one_line(refused.stderr)


def test_an_unreachable_server_is_exit_4(ctl: Run, user: str) -> None:
    from tests.conftest import free_port

    refused = ctl("--server", f"http://127.0.0.1:{free_port()}", "login", "--username", user,
                  "--password-stdin", stdin=PASSWORD)
    assert refused.returncode == 4 and "Cannot reach" in one_line(refused.stderr)


def test_no_password_without_a_terminal_or_stdin_flag(ctl: Run) -> None:
    refused = ctl("login", "--username", "someone", stdin="")
    assert refused.returncode == 2 and "--password-stdin" in one_line(refused.stderr)


def test_deep_coordinates_and_counts_pass_through_exactly(ctl: Run, user: str) -> None:
    """Centre and zoom are sent as typed (a float would keep 17 digits); --counts asks for counts.npy."""
    deep_x = "-1.7400623825793398670" + "1234567890" * 5
    submitted = ctl("-o", "json", "render", *TINY, "--center-x", deep_x, "--center-y", "0.0281762108500905",
                    "--zoom", "1e30", "--counts")
    assert submitted.returncode == 0, submitted.stderr
    p = json.loads(submitted.stdout)["params"]
    assert (p["center_x"], p["center_y"], p["zoom"]) == (deep_x, "0.0281762108500905", "1e30")
    assert p["counts"] is True
    bad = ctl("render", "--zoom", "lots")
    assert bad.returncode == 2 and "argument --zoom: 'lots' is not a decimal number" in bad.stderr


def test_wait_and_download_finish_a_job_started_elsewhere(ctl: Run, user: str, tmp_path: Path) -> None:
    job_id = json.loads(ctl("-o", "json", "render", *TINY).stdout)["job_id"]
    waited = ctl("wait", job_id)
    assert waited.returncode == 0, waited.stderr
    assert waited.stdout.splitlines()[-1] == f"Job {job_id} succeeded."
    out = tmp_path / "got.png"
    saved = ctl("download", job_id, "--out", str(out))
    assert saved.returncode == 0 and saved.stdout.strip() == f"Saved {out} ({out.stat().st_size} bytes)."
    assert png_size(out) == (48, 32)
    meta = tmp_path / "result.json"
    assert ctl("download", job_id, "--out", str(meta), "--file", "result.json").returncode == 0
    assert json.loads(meta.read_text())["job_id"] == job_id
    missing = ctl("download", job_id, "--out", str(tmp_path / "x"), "--file", "nope.txt")
    assert missing.returncode == 3 and "no file nope.txt" in one_line(missing.stderr)
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.part").exists()


def test_logs_follow_prints_the_log_as_it_grows_until_the_end(ctl: Run, user: str) -> None:
    job_id = json.loads(ctl("-o", "json", "render", *TINY, "--max-iter", "41").stdout)["job_id"]
    followed = ctl("logs", "-f", job_id)  # from before it started to after it ended
    assert followed.returncode == 0, followed.stderr
    assert followed.stdout == ctl("logs", job_id).stdout and "progress 100%" in followed.stdout


def test_ctrl_c_while_waiting_says_the_job_keeps_running_and_a_cancelled_job_is_1(tmp_path: Path) -> None:
    from tests.scheduler.test_http_e2e import serve

    # a service with no slot: the job stays queued, so the wait is still waiting when interrupted
    with serve(tmp_path / "data", tmp_path / "opencl-cache", LOCAL_MAX_CONCURRENT="0") as (http, _proc):
        run, env = ctl_for(str(http.base_url), tmp_path)
        assert run("signup", "--username", "alice", "--password-stdin", stdin=PASSWORD).returncode == 0
        job_id = json.loads(run("-o", "json", "render", *TINY).stdout)["job_id"]
        # SIGINT as a terminal's Ctrl-C sends it, even where this test runs in the background (whose
        # children inherit SIGINT ignored, and Python then installs no KeyboardInterrupt)
        waiting = subprocess.Popen([sys.executable, "-m", "fractalctl", "wait", job_id], cwd=ROOT, env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            assert waiting.stdout.readline().startswith(f"{job_id} queued")  # it follows the job now
            waiting.send_signal(signal.SIGINT)
            _out, err = waiting.communicate(timeout=60)
        finally:
            waiting.kill()
        assert waiting.returncode == 130
        assert one_line(err) == (f"fractalctl: Stopped waiting; job {job_id} keeps running "
                                 f"(fractalctl cancel {job_id} stops it).")
        assert json.loads(run("-o", "json", "get", job_id).stdout)["status"] == "queued"
        assert run("cancel", job_id).returncode == 0
        waited = run("wait", job_id)  # as --wait: a job that did not succeed is exit 1
        assert waited.returncode == 1 and one_line(waited.stderr) == f"fractalctl: Job {job_id} cancelled."


def ctl_for(server: str, tmp_path: Path) -> tuple[Run, dict[str, str]]:
    """`python -m fractalctl` against `server`, with a config dir of its own; and its env."""
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config"), "FRACTAL_SERVER": server}

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "fractalctl", *args], cwd=ROOT, env=env, input=stdin,
                              capture_output=True, text=True, timeout=120)

    return run, env


def test_an_unreachable_server_is_exit_4_signed_in_or_not(ctl: Run) -> None:
    from tests.conftest import free_port

    refused = ctl("--server", f"http://127.0.0.1:{free_port()}", "ls")  # no token kept for it
    assert refused.returncode == 4 and "Cannot reach" in one_line(refused.stderr)


def test_download_takes_the_presigned_redirect_on_s3(tmp_path: Path, minio_env: dict[str, str]) -> None:
    from tests.scheduler.test_http_e2e import serve

    with serve(tmp_path / "data", tmp_path / "opencl-cache", **minio_env) as (http, _proc):
        run, _env = ctl_for(str(http.base_url), tmp_path)
        assert run("signup", "--username", "alice", "--password-stdin", stdin=PASSWORD).returncode == 0
        out = tmp_path / "direct.png"
        done = run("render", *TINY, "--out", str(out))
        assert done.returncode == 0, done.stderr
        assert png_size(out) == (48, 32)
        redirects = [line for line in http.get("/metrics").text.splitlines()
                     if line.startswith("http_request_duration_seconds_count") and 'status="307"' in line]
        assert redirects and float(redirects[0].split()[-1]) == 1  # the bytes came from S3 itself
