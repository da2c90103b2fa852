"""Who runs the job: the start of the log's first line (docs/design.md, `GET /jobs/{id}/logs`),
e.g. `job 3f2a… task 0 on pod fractal-3f2a…-0-x7k2p (node n1)` or `job 3f2a… on host h, pid 42`."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping


def describe(job_id: str, env: Mapping[str, str], task: int | None = None) -> str:
    """`task`: the task of an Indexed Job (every Job on Kubernetes) or of a local render array;
    None names none. In a pod, POD_NAME and NODE_NAME come from the downward API."""
    who = f"job {job_id}" + (f" task {task}" if task is not None else "")
    if "NODE_NAME" in env or "POD_NAME" in env:
        pod = env.get("POD_NAME") or env.get("HOSTNAME") or socket.gethostname()
        return f"{who} on pod {pod} (node {env.get('NODE_NAME') or 'unknown'})"
    return f"{who} on host {socket.gethostname()}, pid {os.getpid()}"
