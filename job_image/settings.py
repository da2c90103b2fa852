"""Job-side settings read from the environment (the render's own knobs, not the parameters).

The fractal limits (MAX_PIXELS, MAX_ITER) live in `params.Limits`, shared with the API.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path


def _int(env: dict[str, str] | os._Environ[str], name: str, default: int) -> int:
    raw = env.get(name, "")
    try:
        return int(raw) if raw.strip() else default
    except ValueError:
        raise ValueError(f"{name} must be an integer, not {raw!r}") from None


@dataclass(frozen=True)
class JobSettings:
    """Render settings; every field has a default that works on a laptop and in a pod."""

    # Where compiled OpenCL kernels are kept (PoCL's and pyopencl's caches). A warm cache turns
    # a ~0.5 s kernel build into ~0.03 s; the scheduler points every job at one shared place.
    opencl_cache_dir: Path
    # Samples rendered per band: bounds host memory (8 bytes per sample per buffer) and sets
    # how often progress is reported. 2^20 samples is ~8 MiB of buffers and, on a CPU, tens of
    # milliseconds of kernel time, so the per-band sync costs little.
    band_samples: int = 1 << 20
    # Kernel shape overrides (0 = chosen per device type); for benchmarks and tuning.
    vector_width: int = 0
    in_flight: int = 0
    # PNG zlib level: 1 keeps encoding well below kernel time; higher levels save ~10 % size.
    png_compress_level: int = 1
    # Threads compressing PNG bands (0 = one per CPU); see png.py.
    png_threads: int = 0

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> JobSettings:
        env = os.environ if env is None else env
        return cls(
            opencl_cache_dir=Path(env.get("OPENCL_CACHE_DIR") or default_cache_dir()),
            band_samples=max(1, _int(env, "FRACTAL_BAND_SAMPLES", cls.band_samples)),
            vector_width=_int(env, "FRACTAL_VECTOR_WIDTH", 0),
            in_flight=_int(env, "FRACTAL_IN_FLIGHT", 0),
            png_compress_level=min(9, max(0, _int(env, "PNG_COMPRESS_LEVEL", cls.png_compress_level))),
            png_threads=max(0, _int(env, "PNG_THREADS", cls.png_threads)),
        )


def default_cache_dir() -> Path:
    """~/.cache/fractal-job, or a temp-dir path where HOME is missing or read-only (restricted pods)."""
    try:
        home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    except (RuntimeError, KeyError):  # no HOME and no passwd entry (an arbitrary uid in a pod)
        home = None
    if home is not None and os.access(home if home.exists() else home.parent, os.W_OK):
        return home / "fractal-job"
    return _temp_cache_dir() or Path("/tmp/fractal-job-cache")  # tried, and found unwritable, later


def _temp_cache_dir() -> Path | None:
    try:
        return Path(tempfile.gettempdir()) / f"fractal-job-cache-{os.getuid()}"
    except FileNotFoundError:  # no writable temp dir at all (a read-only root without /tmp)
        return None


def configure_opencl_cache(cache_dir: Path) -> Path | None:
    """Point every cache the render writes into `cache_dir`, or a temp dir where it cannot be
    written; with neither, turn pyopencl's caches off. Nothing is written under HOME.

    Must run before pyopencl is imported: pytools opens pyopencl's invoker cache at import (in
    XDG_CACHE_HOME, else ~/.cache), and PoCL reads POCL_CACHE_DIR when it initialises. Variables
    the caller set are kept. Returns the pyopencl binary cache dir to pass to `Program.build`,
    or None when builds are not cached.
    """
    for folder in (cache_dir, _temp_cache_dir()):
        if folder is not None and _writable(folder, ("pocl", "pyopencl", "xdg")):
            os.environ.setdefault("POCL_CACHE_DIR", str(folder / "pocl"))
            os.environ.setdefault("XDG_CACHE_HOME", str(folder / "xdg"))
            return folder / "pyopencl"
    os.environ.setdefault("PYOPENCL_NO_CACHE", "1")
    return None


def _writable(folder: Path, parts: tuple[str, ...]) -> bool:
    try:
        for part in parts:
            (folder / part).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):  # a real write: os.access says yes to root
            pass
    except OSError:
        return False
    return True
