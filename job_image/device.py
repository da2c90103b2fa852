"""Choosing the OpenCL device: `auto` prefers a GPU and falls back to the CPU.

PYOPENCL_CTX (pyopencl's convention, "PLATFORM[:DEVICE]" as indexes or name parts) narrows
the choice to one platform or device; the requested type must still match.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pyopencl as cl

from .errors import NoDevice

Found = list[tuple[cl.Platform, list[cl.Device]]]  # each platform with its devices


@dataclass(frozen=True)
class Chosen:
    device: cl.Device
    platform: cl.Platform
    is_gpu: bool

    @property
    def name(self) -> str:
        return self.device.name.strip()

    @property
    def platform_name(self) -> str:
        return self.platform.name.strip()

    @property
    def fp64(self) -> bool:
        return bool(self.device.double_fp_config) or "cl_khr_fp64" in self.device.extensions

    def native_vector_width(self, precision: str) -> int:
        """Lanes of one SIMD register for the precision, as the driver reports them."""
        d = self.device
        return d.native_vector_width_double if precision == "float64" else d.native_vector_width_float


def _kind(dev: cl.Device) -> str:
    t = dev.type
    if t & cl.device_type.GPU:
        return "GPU"
    if t & cl.device_type.CPU:
        return "CPU"
    if t & cl.device_type.ACCELERATOR:
        return "accelerator"
    return "other"


def inventory() -> Found:
    """Every platform with its devices; an empty list when no OpenCL ICD is installed."""
    try:
        platforms = cl.get_platforms()
    except cl.Error:  # PLATFORM_NOT_FOUND_KHR: the ICD loader found no vendor
        return []
    found = []
    for p in platforms:
        try:
            found.append((p, p.get_devices()))
        except cl.Error:  # a platform without devices raises DEVICE_NOT_FOUND
            found.append((p, []))
    return found


def describe(found: Found) -> str:
    """'Platform: device (CPU), ...' for error messages."""
    if not found:
        return "no OpenCL platforms (is an ICD such as pocl-opencl-icd installed?)"
    parts = []
    for p, devs in found:
        names = ", ".join(f"{d.name.strip()} ({_kind(d)})" for d in devs) or "no devices"
        parts.append(f"{p.name.strip()}: {names}")
    return "; ".join(parts)


def _matches(index: int, obj_name: str, spec: str) -> bool:
    spec = spec.strip()
    if spec.isdigit():
        return int(spec) == index
    return spec.lower() in obj_name.lower()


def _narrow(found: Found, ctx: str) -> list[tuple[cl.Platform, cl.Device]]:
    plat_spec, _, dev_spec = ctx.partition(":")
    out = []
    for pi, (p, devs) in enumerate(found):
        if plat_spec and not _matches(pi, p.name, plat_spec):
            continue
        for di, d in enumerate(devs):
            if not dev_spec or _matches(di, d.name, dev_spec):
                out.append((p, d))
    return out


def choose(want: str, env: dict[str, str] | None = None) -> Chosen:
    """The device for `want` (auto | gpu | cpu); raises NoDevice naming what exists."""
    env = os.environ if env is None else env
    found = inventory()
    pairs = [(p, d) for p, devs in found for d in devs]
    ctx = env.get("PYOPENCL_CTX", "").strip()
    if ctx:
        pairs = _narrow(found, ctx)
        if not pairs:
            raise NoDevice(f"PYOPENCL_CTX={ctx!r} matches no OpenCL device; found {describe(found)}")
    gpus = [(p, d) for p, d in pairs if d.type & cl.device_type.GPU]
    cpus = [(p, d) for p, d in pairs if d.type & cl.device_type.CPU]
    if want == "gpu":
        pool = gpus
    elif want == "cpu":
        pool = cpus
    else:
        pool = gpus or cpus or pairs
    if not pool:
        which = {"gpu": "GPU", "cpu": "CPU"}.get(want, "usable")
        narrowed = f" among PYOPENCL_CTX={ctx!r}" if ctx else ""
        raise NoDevice(f"no {which} OpenCL device{narrowed}; found {describe(found)}")
    p, d = pool[0]
    return Chosen(device=d, platform=p, is_gpu=bool(d.type & cl.device_type.GPU))


def require_fp64(chosen: Chosen) -> None:
    """float64 needs cl_khr_fp64; say so plainly instead of failing in the compiler."""
    if not chosen.fp64:
        raise NoDevice(
            f"device {chosen.name} ({chosen.platform_name}) does not support float64; "
            "use precision float32 or another device"
        )
