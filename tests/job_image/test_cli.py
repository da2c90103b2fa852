"""`python -m job_image`: parameters, exit codes, outputs (local, directory, S3), progress."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from job_image import cli, output
from job_image.errors import StorageFailed
from job_image.params import FractalParams
from job_image.storage import StorageError, storage_from_env
from tests.conftest import free_port

from .conftest import REPO, job_env, run_cli
from .reference import escape

JOB_ID = "0123456789abcdef0123456789abcdef"
SMALL = ["--width", "64", "--height", "48", "--max-iter", "60"]


def run_in_process(capsys: pytest.CaptureFixture[str], *argv: str, env: dict[str, str] | None = None):
    code = cli.main(list(argv), env=env if env is not None else job_env())
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    "args,field",
    [
        (["--width", "0"], "width"),
        (["--width", "wide"], "width"),
        (["--height", "-3"], "height"),
        (["--width", "5000", "--height", "5000"], "limit"),
        (["--zoom", "0"], "zoom"),
        (["--zoom", "nan"], "zoom"),
        (["--center-x", "left"], "center_x"),
        (["--center-y", "inf"], "center_y"),
        (["--max-iter", "0"], "max_iter"),
        (["--max-iter", "100001"], "max_iter"),
        (["--julia-re", "x"], "julia_re"),
        (["--julia-im", ""], "julia_im"),
        (["--kind", "newton"], "kind"),
        (["--colormap", "rainbow"], "colormap"),
        (["--precision", "float16"], "precision"),
        (["--device", "tpu"], "device"),
        (["--supersample", "5"], "supersample"),
        (["--supersample", "0"], "supersample"),
        (["--params", '{"width": 10, "bogus": 1}'], "bogus"),
        (["--params", "[1, 2]"], "JSON object"),
        (["--params", "{not json"], "not JSON"),
        (["--frobnicate"], "unrecognized arguments"),
    ],
)
def test_bad_parameters_exit_2_with_one_line(capsys, tmp_path: Path, args: list[str], field: str) -> None:
    code, out, err = run_in_process(capsys, *args, "--out", str(tmp_path / "x.png"))
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: invalid ")
    assert field in err
    assert not list(tmp_path.iterdir())


def test_bad_fractal_params_env_exits_2(capsys, tmp_path: Path) -> None:
    env = job_env(FRACTAL_PARAMS='{"kind": "julia", "width": -1}', STORAGE_DIR=str(tmp_path))
    code, _, err = run_in_process(capsys, env=env)
    assert code == 2 and "width" in err and "greater than or equal to 1" in err


def test_limits_come_from_the_environment(capsys, tmp_path: Path) -> None:
    env = job_env(MAX_PIXELS="1000", MAX_ITER="50")
    code, _, err = run_in_process(capsys, *SMALL, "--out", str(tmp_path / "x.png"), env=env)
    assert code == 2 and "3072 samples; the limit is 1000" in err
    code, _, err = run_in_process(capsys, "--width", "10", "--height", "10", "--max-iter", "51",
                                  "--out", str(tmp_path / "x.png"), env=env)
    assert code == 2 and "max_iter 51 is above the limit of 50" in err


def test_a_split_renders_task_is_held_to_the_pixel_limit_of_its_band(capsys, tmp_path: Path) -> None:
    """MAX_PIXELS bounds what one process renders: a band of a split image, as the API checks."""
    frame = ["--width", "40", "--height", "40", "--max-iter", "20"]  # 1600 samples, 400 a band
    env = job_env(MAX_PIXELS="500", RENDER_ARRAY=json.dumps({"split": 4}), JOB_COMPLETION_INDEX="2")
    code, _, err = run_in_process(capsys, *frame, "--out", str(tmp_path / "band.png"), env=env)
    assert code == 0, err
    code, _, err = run_in_process(capsys, *frame, "--out", str(tmp_path / "x.png"),
                                  env={**env, "RENDER_ARRAY": json.dumps({"split": 2})})
    assert code == 2 and "40x20 is 800 samples; the limit is 500" in err


def test_no_output_target_exits_2(capsys) -> None:
    code, _, err = run_in_process(capsys, *SMALL)
    assert code == 2 and "nowhere to write" in err


def test_gpu_requested_without_gpu_exits_3_naming_devices() -> None:
    import pyopencl as cl

    if any(d.type & cl.device_type.GPU for p in cl.get_platforms() for d in p.get_devices()):
        pytest.skip("this machine has a GPU")
    res = run_cli(*SMALL, "--device", "gpu", "--out", "unused.png")
    assert res.returncode == 3
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "no GPU OpenCL device" in lines[0] and "Portable Computing Language" in lines[0]
    assert "(CPU)" in lines[0]


def test_end_to_end_with_out(tmp_path: Path) -> None:
    out = tmp_path / "out" / "m.png"
    res = run_cli("--kind", "mandelbrot", "--width", "160", "--height", "120", "--center-x", "-0.5",
                  "--center-y", "0", "--zoom", "1", "--max-iter", "200", "--precision", "float64",
                  "--device", "cpu", "--colormap", "magma", "--job-id", JOB_ID, "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    data = out.read_bytes()
    doc = json.loads((tmp_path / "out" / "m.json").read_text())
    img = Image.open(io.BytesIO(data))
    assert img.size == (160, 120) and img.mode == "P"
    assert doc["job_id"] == JOB_ID and doc["width"] == 160 and doc["height"] == 120
    assert doc["params"]["colormap"] == "magma" and doc["precision"] == "float64"
    assert doc["png_bytes"] == len(data) and doc["sha256"] == hashlib.sha256(data).hexdigest()
    assert doc["device"] and doc["platform"] and doc["device_type"] == "cpu"
    assert doc["total_iterations"] > 160 * 120
    assert 0 < doc["kernel_seconds"] <= doc["render_seconds"]
    assert res.stdout.strip().splitlines()[-1].startswith("done 160x120 mandelbrot float64")


def test_env_mode_writes_under_storage_dir(tmp_path: Path) -> None:
    params = {"kind": "julia", "width": 40, "height": 30, "supersample": 2, "colormap": "ice",
              "callback_url": "http://example.invalid/hook"}  # the scheduler's field is ignored
    env = job_env(JOB_ID=JOB_ID, FRACTAL_PARAMS=json.dumps(params), RESULT_PREFIX=f"alice/{JOB_ID}/",
                  STORAGE_DIR=str(tmp_path))
    res = run_cli(env=env)
    assert res.returncode == 0, res.stderr
    base = tmp_path / "alice" / JOB_ID
    assert sorted(p.name for p in base.iterdir()) == ["image.png", "result.json"]
    doc = json.loads((base / "result.json").read_text())
    assert doc["params"]["kind"] == "julia" and doc["params"]["supersample"] == 2
    img = Image.open(base / "image.png")
    assert img.size == (40, 30) and img.mode == "RGB"  # supersampled colours are averaged


def test_upload_to_s3(minio_env: dict[str, str]) -> None:
    env = job_env(JOB_ID=JOB_ID, FRACTAL_PARAMS=json.dumps({"width": 50, "height": 40}),
                  RESULT_PREFIX=f"bob/{JOB_ID}/", **minio_env)
    res = run_cli(env=env)
    assert res.returncode == 0, res.stderr
    storage = storage_from_env(minio_env)  # the bucket was created by the job
    listing = {o.name: o for o in storage.list(f"bob/{JOB_ID}/")}
    assert set(listing) == {"image.png", "result.json"}
    assert storage.stat(f"bob/{JOB_ID}/image.png").content_type == "image/png"
    assert storage.stat(f"bob/{JOB_ID}/result.json").content_type == "application/json"
    png = b"".join(storage.iter_bytes(f"bob/{JOB_ID}/image.png"))
    doc = json.loads(b"".join(storage.iter_bytes(f"bob/{JOB_ID}/result.json")))
    assert doc["sha256"] == hashlib.sha256(png).hexdigest() and doc["job_id"] == JOB_ID


def test_storage_outage_exits_4_without_result(tmp_path: Path) -> None:
    env = job_env(JOB_ID=JOB_ID, FRACTAL_PARAMS=json.dumps({"width": 20, "height": 20}),
                  MINIO_ENDPOINT=f"127.0.0.1:{free_port()}", MINIO_BUCKET="results",  # nothing listens
                  MINIO_ACCESS_KEY="k", MINIO_SECRET_KEY="s")
    res = run_cli(env=env)
    assert res.returncode == 4
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "storage" in lines[0] and "unreachable" in lines[0]


class _FlakyStorage:
    """Accepts nothing for the image: result.json must then never be written."""

    def __init__(self) -> None:
        self.keys: list[str] = []

    def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        self.keys.append(key)
        if key.endswith("image.png"):
            raise StorageError("upload image.png: storage unreachable")


def test_image_is_stored_before_result() -> None:
    storage = _FlakyStorage()
    with pytest.raises(StorageFailed):
        output.upload(storage, "p/", b"png", {"job_id": "x"})  # type: ignore[arg-type]
    assert storage.keys == ["p/image.png"]


def test_progress_lines_on_stdout_for_banded_render(tmp_path: Path) -> None:
    env = job_env(FRACTAL_BAND_SAMPLES="8192")  # 32 rows of 256 samples per band
    res = run_cli("--width", "256", "--height", "256", "--out", str(tmp_path / "p.png"), env=env)
    assert res.returncode == 0 and res.stderr == ""
    progress = [ln for ln in res.stdout.splitlines() if ln.startswith("progress ")]
    assert progress[-1] == "progress 100%"
    percents = [int(ln.split()[1].rstrip("%")) for ln in progress]
    assert len(percents) == 8 and percents == sorted(percents)


def test_quiet_has_no_progress(capsys, tmp_path: Path) -> None:
    code, out, err = run_in_process(capsys, *SMALL, "--quiet", "--out", str(tmp_path / "q.png"))
    assert code == 0 and err == "" and "progress " not in out
    assert (tmp_path / "q.json").exists()


@pytest.mark.parametrize("pid1", [False, True], ids=["process", "pid-1"])
def test_sigterm_ends_the_job_with_143_writing_nothing(tmp_path: Path, pid1: bool) -> None:
    """As a pod's container the job is PID 1 of its PID namespace, where a signal without a
    handler is ignored: a cancelled job must still stop (not hold its quota until SIGKILL)."""
    if pid1 and (os.geteuid() != 0 or shutil.which("unshare") is None):
        pytest.skip("a PID namespace needs root and unshare")
    argv = [sys.executable, "-m", "job_image", "--width", "1024", "--height", "1024", "--max-iter", "100000",
            "--supersample", "4", "--device", "cpu", "--out", str(tmp_path / "m.png")]
    if pid1:
        argv = ["unshare", "--pid", "--fork", "--kill-child", *argv]
    env = job_env(FRACTAL_BAND_SAMPLES="65536")
    proc = subprocess.Popen(argv, env=env, cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().startswith("job ")  # the worker line
        assert proc.stdout.readline().startswith("progress")  # rendering
        target = proc.pid
        if pid1:  # unshare's child is the namespace's PID 1
            target = int(Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()[0])
        os.kill(target, signal.SIGTERM)
        assert proc.wait(timeout=30) == 143
    finally:
        proc.kill()
        proc.wait()
    assert not (tmp_path / "m.png").exists() and not (tmp_path / "m.json").exists()


def test_counts_are_stored_beside_the_image_and_written_with_the_flag(capsys, tmp_path: Path) -> None:
    params = {"width": 30, "height": 20, "supersample": 2, "max_iter": 80, "counts": True,
              "center_x": "-0.75", "zoom": "1.5"}  # strings: kept as given
    env = job_env(JOB_ID=JOB_ID, FRACTAL_PARAMS=json.dumps(params), RESULT_PREFIX=f"alice/{JOB_ID}/",
                  STORAGE_DIR=str(tmp_path))
    flag = tmp_path / "flag.npy"
    code, _, err = run_in_process(capsys, "--counts", str(flag), env=env)
    assert code == 0, err
    base = tmp_path / "alice" / JOB_ID
    assert sorted(p.name for p in base.iterdir()) == ["counts.npy", "image.png", "result.json"]
    counts = np.load(base / "counts.npy")
    doc = json.loads((base / "result.json").read_text())
    assert counts.dtype == np.uint32 and counts.shape == (40, 60)
    assert np.array_equal(counts, np.load(flag))
    want, _ = escape(FractalParams.model_validate(params))
    assert np.array_equal(counts, want)
    assert int(counts.sum()) == doc["total_iterations"]
    assert doc["params"]["center_x"] == "-0.75" and doc["params"]["precision"] == "auto"
    assert doc["precision"] == "float32" and doc["counts"] == "counts.npy"
