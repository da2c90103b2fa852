"""The job image cannot be built here; check what the Dockerfile promises instead."""

from __future__ import annotations

import re

from .conftest import REPO

DOCKERFILE = (REPO / "job_image" / "Dockerfile").read_text()


def test_installs_the_pinned_job_requirements() -> None:
    assert "COPY job_image/requirements.txt" in DOCKERFILE
    assert re.search(r"pip install .*-r job_image/requirements.txt", DOCKERFILE)
    for line in (REPO / "job_image" / "requirements.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            assert "==" in line, f"unpinned requirement {line!r}"


def test_opencl_for_cpu_and_nvidia() -> None:
    assert "pocl-opencl-icd" in DOCKERFILE and "ocl-icd-libopencl1" in DOCKERFILE
    assert re.search(r"libnvidia-opencl\.so\.1.*> /etc/OpenCL/vendors/nvidia\.icd", DOCKERFILE)
    assert "NVIDIA_DRIVER_CAPABILITIES=compute,utility" in DOCKERFILE
    # The device plugin sets NVIDIA_VISIBLE_DEVICES for pods that request a GPU; the image must not.
    assert not re.search(r"NVIDIA_VISIBLE_DEVICES\s*=", DOCKERFILE)


def test_runs_the_job_as_a_numeric_non_root_user() -> None:
    assert DOCKERFILE.startswith("#") and "FROM python:3.11-slim" in DOCKERFILE
    users = re.findall(r"^USER\s+(\S+)", DOCKERFILE, re.M)
    assert users and users[-1].isdigit() and int(users[-1]) != 0
    assert 'ENTRYPOINT ["python", "-m", "job_image"]' in DOCKERFILE
    assert "OPENCL_CACHE_DIR=/tmp/" in DOCKERFILE  # writable for that user
