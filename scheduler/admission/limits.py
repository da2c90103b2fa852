"""What admission refuses at submit: a class that cannot exist here, and a render too costly."""

from __future__ import annotations

from job_image.params import FractalParams
from scheduler.admission.capacity import Snapshot


class NoSuchDevice(Exception):
    """`device: gpu` where the capacity for GPUs is zero: waiting would never end (422)."""


class TooExpensive(Exception):
    """The estimated iterations exceed MAX_JOB_ITERATIONS (422)."""

    def __init__(self, estimate: float, limit: float) -> None:
        super().__init__(estimate, limit)
        self.estimate, self.limit = estimate, limit


def check_device(params: FractalParams, snapshot: Snapshot) -> None:
    """Refuse `device: gpu` where no GPU exists. (CPU capacity 0 is a paused service: such
    jobs wait, as `auto` jobs do for whichever class exists.)"""
    if params.device == "gpu" and not snapshot.exists("gpu"):
        why = snapshot.missing("gpu")
        raise NoSuchDevice(f"device gpu cannot run here: {why}; ask for device cpu or auto")


def check_cost(estimate: float, limit: float) -> None:
    if estimate > limit:
        raise TooExpensive(estimate, limit)
