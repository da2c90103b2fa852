"""Fixtures for the render job: one OpenCL kernel cache for the whole session, a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session", autouse=True)
def opencl_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A kernel cache shared by in-process renders and CLI subprocesses: each kernel variant
    is compiled once per test session, and later builds are cache hits."""
    path = tmp_path_factory.mktemp("opencl-cache")
    saved = {k: os.environ.get(k) for k in ("OPENCL_CACHE_DIR", "POCL_CACHE_DIR")}
    os.environ["OPENCL_CACHE_DIR"] = str(path)
    os.environ["POCL_CACHE_DIR"] = str(path / "pocl")
    yield path
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def job_env(**extra: str) -> dict[str, str]:
    """A minimal environment for `python -m job_image`, like the one the scheduler gives."""
    keep = ("PATH", "HOME", "LANG", "OCL_ICD_VENDORS", "OPENCL_CACHE_DIR", "POCL_CACHE_DIR", "TMPDIR")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def run_cli(*args: str, env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the job as the scheduler does: a subprocess with its own environment."""
    return subprocess.run(
        [sys.executable, "-m", "job_image", *args],
        env=env if env is not None else job_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
