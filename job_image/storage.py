"""Result storage: a local directory or a MinIO/S3 bucket, behind one small interface.

The job writes through it; the API reads, lists, streams and deletes through it. Keys are
`<prefix><name>` with `/` separators, e.g. `alice/<job_id>/image.png`. The S3 side is in s3.py.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

CHUNK = 4 * 1024 * 1024  # large reads: fewer thread hops and socket writes per MB when the API streams


class StorageError(Exception):
    """Storage could not be reached or refused the operation (after retries)."""


@dataclass(frozen=True)
class ObjectInfo:
    name: str  # the key relative to the prefix it was listed under
    size: int
    content_type: str


@dataclass(frozen=True)
class Download:
    """An object opened for reading: its info (`size` is the whole object's) and its bytes from
    `start`, in chunks. Closing `chunks` before its end releases what it holds (a file, a connection)."""

    info: ObjectInfo
    chunks: Iterator[bytes]


class Storage(Protocol):
    def put_bytes(self, key: str, data: bytes, content_type: str) -> None: ...
    def stat(self, key: str) -> ObjectInfo | None: ...
    def open(self, key: str, start: int = 0, length: int | None = None) -> Download | None: ...
    def iter_bytes(self, key: str, start: int = 0, length: int | None = None) -> Iterator[bytes]: ...
    def list(self, prefix: str) -> list[ObjectInfo]: ...
    def delete_prefix(self, prefix: str) -> int: ...
    def check(self) -> None: ...
    def presigned_url(self, key: str, seconds: int) -> str | None: ...


def safe_key(key: str) -> str:
    parts = key.split("/")
    if key.startswith("/") or any(p in ("", ".", "..") for p in parts[:-1]) or parts[-1] in (".", ".."):
        raise ValueError(f"unsafe storage key {key!r}")
    return key


def content_type_for(name: str) -> str:
    return {
        ".png": "image/png",
        ".json": "application/json",
        ".txt": "text/plain; charset=utf-8",
        ".log": "text/plain; charset=utf-8",
        ".mp4": "video/mp4",
        ".webm": "video/webm",
    }.get(os.path.splitext(name)[1], "application/octet-stream")


class LocalStorage:
    """A directory tree. Writes go to a temporary file and are renamed, so a reader never
    sees half an object."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / safe_key(key)

    def put_bytes(self, key: str, data: bytes, content_type: str = "") -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except OSError as exc:
            raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from exc

    def stat(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        if not path.is_file():
            return None
        return ObjectInfo(path.name, path.stat().st_size, content_type_for(path.name))

    def open(self, key: str, start: int = 0, length: int | None = None) -> Download | None:
        """None when there is no such file."""
        path = self._path(key)
        try:
            f = path.open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        except OSError as exc:
            raise StorageError(f"cannot read {key}: {exc.strerror or exc}") from exc
        info = ObjectInfo(path.name, os.fstat(f.fileno()).st_size, content_type_for(path.name))
        return Download(info, self._chunks(f, start, length))

    def iter_bytes(self, key: str, start: int = 0, length: int | None = None) -> Iterator[bytes]:
        return opened(self.open(key, start, length), key)

    @staticmethod
    def _chunks(f: io.BufferedReader, start: int, length: int | None) -> Iterator[bytes]:
        with f:
            f.seek(start)
            left = length
            while left is None or left > 0:
                chunk = f.read(CHUNK if left is None else min(CHUNK, left))
                if not chunk:
                    return
                if left is not None:
                    left -= len(chunk)
                yield chunk

    def list(self, prefix: str) -> list[ObjectInfo]:
        base = self._path(prefix.rstrip("/") + "/x").parent
        if not base.is_dir():
            return []
        return [
            ObjectInfo(str(p.relative_to(base)), p.stat().st_size, content_type_for(p.name))
            for p in sorted(base.rglob("*"))
            if p.is_file() and not p.name.startswith(".")
        ]

    def delete_prefix(self, prefix: str) -> int:
        base = self._path(prefix.rstrip("/") + "/x").parent
        count = len(self.list(prefix))
        shutil.rmtree(base, ignore_errors=True)
        return count

    def presigned_url(self, key: str, seconds: int) -> str | None:
        """None: a directory has no URL of its own (the API streams it)."""
        return None

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"storage directory {self.root} is not writable: {exc}") from exc
        # a real write: os.access says yes on a full disk (and to root, always)
        try:
            with tempfile.NamedTemporaryFile(dir=self.root, prefix=".check-") as probe:
                probe.write(b"ok")
                probe.flush()
        except OSError as exc:
            why = exc.strerror or exc
            raise StorageError(f"storage directory {self.root} is not writable: {why}") from exc


def opened(download: Download | None, key: str) -> Iterator[bytes]:
    """`iter_bytes`: the object must exist (it was listed or stat'ed just before)."""
    if download is None:
        raise StorageError(f"download {key}: no such object")
    return download.chunks


def storage_from_env(
    env: dict[str, str] | None = None,
    default_dir: str = "data/results",
    *,
    connect_timeout: float = 3.0,
    read_timeout: float = 20.0,
    attempts: int = 3,
) -> Storage:
    """MinIO when MINIO_ENDPOINT is set, else the STORAGE_DIR directory (the job contract)."""
    env = os.environ if env is None else env
    if env.get("MINIO_ENDPOINT"):
        missing = [k for k in ("MINIO_BUCKET", "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY") if not env.get(k)]
        if missing:
            raise StorageError(f"MINIO_ENDPOINT is set but {', '.join(missing)} is not")
        endpoint, secure = env["MINIO_ENDPOINT"], env.get("MINIO_SECURE", "false").lower()
        secure_flag = secure in ("1", "true", "yes")
        if "://" in endpoint:  # the minio client wants host:port; accept a URL too
            scheme, endpoint = endpoint.split("://", 1)
            secure_flag = scheme == "https"
        from .s3 import MinioStorage  # imported only here: a job on local storage starts faster

        return MinioStorage(
            endpoint.rstrip("/"),
            env["MINIO_BUCKET"],
            env["MINIO_ACCESS_KEY"],
            env["MINIO_SECRET_KEY"],
            secure=secure_flag,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            attempts=attempts,
        )
    return LocalStorage(env.get("STORAGE_DIR") or default_dir)
