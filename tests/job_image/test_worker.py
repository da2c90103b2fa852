"""The log's first line: which worker runs the job (docs/design.md, /logs)."""

from __future__ import annotations

import os
import socket

import pytest

from job_image.worker import describe

JOB = "3f2a" * 8
HOST = socket.gethostname()


@pytest.mark.parametrize(("env", "task", "expected"), [
    ({}, None, f"job {JOB} on host {HOST}, pid {os.getpid()}"),
    ({"JOB_COMPLETION_INDEX": "3"}, 3, f"job {JOB} task 3 on host {HOST}, pid {os.getpid()}"),
    ({"POD_NAME": "fractal-x-0-abcde", "NODE_NAME": "n1", "JOB_COMPLETION_INDEX": "0"}, 0,
     f"job {JOB} task 0 on pod fractal-x-0-abcde (node n1)"),
    ({"NODE_NAME": "n1", "HOSTNAME": "fractal-x-0"}, None, f"job {JOB} on pod fractal-x-0 (node n1)"),
    ({"POD_NAME": "fractal-x-0-a", "NODE_NAME": ""}, None, f"job {JOB} on pod fractal-x-0-a (node unknown)"),
])
def test_the_worker_is_named_by_pod_and_node_or_host_and_pid(
    env: dict[str, str], task: int | None, expected: str
) -> None:
    assert describe(JOB, env, task) == expected
