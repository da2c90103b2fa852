"""schemathesis against the whole API of `python -m scheduler` on 127.0.0.1, as a signed-in user:
every operation answers only what /openapi.json declares (statuses, bodies, headers, the events
of the streams against their declared item schema) and never a 5xx. Bounded (a few examples per
operation, a fixed seed) so the suite stays fast and repeatable; settings in schemathesis.toml."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.scheduler.test_http_e2e import serve, sign_in

CONFIG = Path(__file__).with_name("schemathesis.toml")
ROOMY = {  # the fuzzer signs up, signs in and submits far more than a person would
    "SIGNUPS_PER_MINUTE": "100000",
    "SIGNIN_ATTEMPTS_PER_MINUTE": "100000",
    "SIGNIN_ATTEMPTS_PER_CLIENT_PER_MINUTE": "100000",
    "MAX_ACTIVE_JOBS_PER_USER": "100000",
    "LOCAL_MAX_CONCURRENT": "0",  # submitted jobs stay queued: no renders
}


def test_the_whole_api_keeps_its_openapi_contract(tmp_path: Path, opencl_cache: Path) -> None:
    with serve(tmp_path / "data", opencl_cache, **ROOMY) as (client, _proc):
        token = sign_in(client)["Authorization"]
        run = subprocess.run(
            [
                sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG),
                "run", str(client.base_url).rstrip("/") + "/openapi.json",
                "--header", f"Authorization: {token}",
                "--checks", "all",
                "--phases", "examples,coverage,fuzzing",
                "--max-examples", "5",
                "--seed", "1",
                "--request-timeout", "2",  # a stream is read this long, then judged on what came
                "--workers", "2",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,  # where it keeps its own files (.schemathesis/)
        )
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]
    selected = re.search(r"Operations:\s+(\d+) selected / (\d+) total", run.stdout)
    assert selected and selected[1] == selected[2], run.stdout[-4000:]  # every operation was tested
