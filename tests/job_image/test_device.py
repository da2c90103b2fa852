"""Device choice: auto/cpu/gpu, PYOPENCL_CTX, and fp64 refusal."""

from __future__ import annotations

from types import SimpleNamespace

import pyopencl as cl
import pytest

from job_image import device
from job_image.errors import NoDevice


def test_auto_falls_back_to_the_cpu() -> None:
    chosen = device.choose("auto", env={})
    assert not chosen.is_gpu and chosen.device.type & cl.device_type.CPU
    assert chosen.name and chosen.platform_name


def test_gpu_without_one_names_what_was_found() -> None:
    if any(d.type & cl.device_type.GPU for _, devs in device.inventory() for d in devs):
        pytest.skip("this machine has a GPU")
    with pytest.raises(NoDevice) as exc:
        device.choose("gpu", env={})
    cpu = device.choose("cpu", env={})
    assert "no GPU OpenCL device" in str(exc.value)
    assert cpu.name in str(exc.value) and cpu.platform_name in str(exc.value)


def test_pyopencl_ctx_narrows_the_choice() -> None:
    assert device.choose("cpu", env={"PYOPENCL_CTX": "0:0"}).name == device.choose("cpu", env={}).name
    with pytest.raises(NoDevice, match="PYOPENCL_CTX='9' matches no OpenCL device"):
        device.choose("auto", env={"PYOPENCL_CTX": "9"})


def test_float64_refused_without_fp64() -> None:
    fake = SimpleNamespace(double_fp_config=0, extensions="cl_khr_icd", name="Tiny GPU")
    chosen = device.Chosen(device=fake, platform=SimpleNamespace(name="Fake"), is_gpu=True)
    with pytest.raises(NoDevice, match="Tiny GPU .* does not support float64"):
        device.require_fp64(chosen)
