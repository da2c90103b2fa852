"""Where a finished render goes: a local file pair (--out) or storage under RESULT_PREFIX.

image.png is written first and result.json last, so a reader that sees result.json can
rely on the image being there, and a storage outage never leaves a result without its image.
Task i of a render array writes `parts/<i>.png` and `parts/<i>.json` the same way; the JSON
also says where the PNG's compressed stream lies (`idat`), which the API needs to join the
bands into one PNG without decoding them (docs/design.md, "Render arrays").
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from .errors import StorageFailed
from .job import Rendered
from .params import FractalParams
from .png import idat_span, stream_adler
from .storage import Storage, StorageError, content_type_for
from .tasks import Task

IMAGE_NAME = "image.png"
RESULT_NAME = "result.json"
COUNTS_NAME = "counts.npy"


def names(index: int | None) -> tuple[str, str, str]:
    """The image's, the counts' and the result's names: a render array's task `index` writes its part."""
    if index is None:
        return IMAGE_NAME, COUNTS_NAME, RESULT_NAME
    return f"parts/{index}.png", f"parts/{index}.npy", f"parts/{index}.json"


def task_fields(task: Task, png_data: bytes) -> dict[str, Any]:
    """What a part's JSON adds: which task, its rows or zoom, and its compressed stream."""
    offset, length = idat_span(png_data)
    return {
        "task": task.index,
        "rows": list(task.rows) if task.rows else [0, task.params.height],
        "zoom": task.params.zoom,
        "idat": {"offset": offset, "length": length, "adler32": stream_adler(png_data)},
    }


def result_document(job_id: str, p: FractalParams, r: Rendered) -> dict[str, Any]:
    """The result.json content (fields fixed by docs/design.md, plus timing detail)."""
    return {
        "job_id": job_id,
        "params": p.model_dump(mode="json"),
        "width": p.width,
        "height": p.height,
        "kind": p.kind,
        "precision": r.precision,
        "supersample": p.supersample,
        "samples": p.width * p.height * p.supersample**2,
        "device": r.device,
        "platform": r.platform,
        "device_type": r.device_type,
        "vector_width": r.vector_width,
        "in_flight": r.in_flight,
        "total_iterations": r.total_iterations,
        "kernel_seconds": round(r.kernel_seconds, 6),
        "render_seconds": round(r.render_seconds, 6),
        "build_seconds": round(r.build_seconds, 6),
        "colour_seconds": round(r.colour_seconds, 6),
        "encode_seconds": round(r.encode_seconds, 6),
        "image": IMAGE_NAME,
        "png_bytes": len(r.png),
        "sha256": hashlib.sha256(r.png).hexdigest(),
        **({"counts": COUNTS_NAME} if p.counts else {}),
        **r.deep,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _json_bytes(doc: dict[str, Any]) -> bytes:
    return (json.dumps(doc, indent=2) + "\n").encode()


def npy_bytes(counts: np.ndarray) -> bytes:
    """The counts as a .npy file (NumPy's own format: np.load reads it)."""
    buf = io.BytesIO()
    np.save(buf, counts, allow_pickle=False)
    return buf.getvalue()


def write_file(path: Path, data: bytes) -> Path:
    """Write `path` whole or not at all (a temporary name, then a rename)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)  # never leave half a file under the real name
    except OSError as exc:
        raise StorageFailed(f"cannot write {exc.filename or path}: {exc.strerror or exc}") from exc
    return path


def write_local(out: Path, png: bytes, doc: dict[str, Any]) -> tuple[Path, Path]:
    """Write `out` (the PNG) and the result beside it (`out` with suffix .json)."""
    return write_file(out, png), write_file(out.with_suffix(".json"), _json_bytes(doc))


def upload(storage: Storage, prefix: str, png: bytes, doc: dict[str, Any],
           counts: bytes | None = None, index: int | None = None) -> list[str]:
    """Store image.png (and counts.npy), then result.json, under `prefix` (a render array's
    task: its part, see `names`); returns the keys written."""
    keys = []
    image, counts_name, result = names(index)
    extra = [(counts_name, counts)] if counts is not None else []
    try:
        for name, data in ((image, png), *extra, (result, _json_bytes(doc))):
            key = prefix + name
            storage.put_bytes(key, data, content_type_for(name))
            keys.append(key)
    except StorageError as exc:
        raise StorageFailed(f"storage failure: {exc}") from exc
    return keys
