"""Failures that end a job, each carrying the exit code of the job contract (docs/design.md)."""

from __future__ import annotations


class JobError(Exception):
    """A failure with a one-line message for stderr and an exit code for the scheduler."""

    exit_code = 1


class InvalidParams(JobError):
    """The request is not a valid set of fractal parameters."""

    exit_code = 2


class NoDevice(JobError):
    """No OpenCL device can do what was asked (missing GPU, no fp64, no platform at all)."""

    exit_code = 3


class StorageFailed(JobError):
    """The result could not be stored, after the storage layer's retries."""

    exit_code = 4
