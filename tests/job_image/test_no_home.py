"""The job in a restricted container: an unprivileged uid, no writable HOME, perhaps no writable
temp dir. It renders where it can write a kernel cache, and otherwise fails with the first real
cause as its one stderr line (not the pytools AttributeError that followed it).

Running as uid 10001 needs root (setpriv); a read-only /tmp needs a private mount namespace
(unshare --mount). Elsewhere these tests skip with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import REPO

UID = "10001"  # the images' user
needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="another uid needs root and setpriv"
)


@pytest.fixture
def out() -> Iterator[Path]:
    """A directory uid 10001 can write (pytest's tmp_path is private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="no-home-"))
    folder.chmod(0o777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def as_user(*args: str, prefix: tuple[str, ...] = (), **env: str) -> subprocess.CompletedProcess[str]:
    command = [
        *prefix, "setpriv", f"--reuid={UID}", f"--regid={UID}", "--clear-groups",
        sys.executable, "-m", "job_image", "--width", "32", "--height", "24", "--device", "cpu", "--quiet",
        *args,
    ]
    base = {"PATH": os.defpath, "HOME": "/nonexistent", "PYTHONPATH": str(REPO), "LANG": "C.UTF-8"}
    if "OCL_ICD_VENDORS" in os.environ:
        base["OCL_ICD_VENDORS"] = os.environ["OCL_ICD_VENDORS"]
    return subprocess.run(command, cwd="/", env={**base, **env}, capture_output=True, text=True, timeout=120)


@needs_root
def test_renders_with_no_writable_home(out: Path) -> None:
    done = as_user("--out", str(out / "m.png"))
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert (out / "m.png").read_bytes().startswith(b"\x89PNG")


@needs_root
def test_an_unwritable_cache_dir_falls_back_to_the_temp_dir(out: Path) -> None:
    done = as_user("--out", str(out / "m.png"), OPENCL_CACHE_DIR="/nonexistent/cache")
    assert (done.returncode, done.stderr) == (0, ""), done.stderr


@needs_root
def test_with_nowhere_to_write_the_cause_is_the_one_error_line() -> None:
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare for a private mount namespace")
    hidden = ("/tmp/", "/var/tmp/")
    if any(str(p.resolve()).startswith(hidden) for p in (REPO, Path(sys.prefix), Path(sys.executable))):
        pytest.skip("the checkout or its interpreter is under /tmp, which this test hides")
    # a read-only /tmp and /var/tmp, seen by this process only
    ro = "mount -t tmpfs -o ro tmpfs /tmp && mount -t tmpfs -o ro tmpfs /var/tmp && exec \"$@\""
    done = as_user("--out", "/nonexistent/m.png", prefix=("unshare", "--mount", "sh", "-c", ro, "sh"))
    assert done.returncode == 3, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("error: no writable directory for the OpenCL kernel cache")


def test_errors_raised_in_destructors_stay_off_stderr() -> None:
    code = (
        "from job_image import cli\n"
        "cli._noise_to_stdout()\n"
        "class Broken:\n"
        "    def __del__(self):\n"
        "        raise AttributeError('no mutex')\n"
        "Broken()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.stderr == "" and "warning: ignored in" in done.stdout and "no mutex" in done.stdout
