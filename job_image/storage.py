"""Result storage: a local directory or a MinIO/S3 bucket, behind one small interface.

The job writes through it; the API reads, lists, streams and deletes through it. Keys are
`<prefix><name>` with `/` separators, e.g. `alice/<job_id>/image.png`.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Protocol, TypeVar

import urllib3
from minio import Minio
from minio.error import MinioException, S3Error

from .backoff import Backoff

CHUNK = 4 * 1024 * 1024  # large reads: fewer thread hops and socket writes per MB when the API streams
T = TypeVar("T")


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


def _safe_key(key: str) -> str:
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
        return self.root / _safe_key(key)

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
        return _opened(self.open(key, start, length), key)

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


def _opened(download: Download | None, key: str) -> Iterator[bytes]:
    """`iter_bytes`: the object must exist (it was listed or stat'ed just before)."""
    if download is None:
        raise StorageError(f"download {key}: no such object")
    return download.chunks


class _Body(Iterator[bytes]):
    """A GET's body in chunks. Read to its end, its connection goes back to the pool; closed
    before that (started or not), the connection is dropped: bytes are still in flight on it."""

    def __init__(self, resp: urllib3.BaseHTTPResponse) -> None:
        self._resp, self._chunks = resp, resp.stream(CHUNK)

    def __next__(self) -> bytes:
        try:
            return next(self._chunks)
        except StopIteration:
            self._resp.release_conn()
            raise
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self._resp.close()
        self._resp.release_conn()


# S3 error codes that mean "try again later" rather than "you asked for something wrong".
_TRANSIENT_S3 = {"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout"}
_MISSING = {"NoSuchKey", "NoSuchBucket", "NoSuchObject"}


class MinioStorage:
    """A MinIO/S3 bucket through the `minio` client, with short timeouts and bounded retries.

    The client's defaults (300 s read timeout, 5 urllib3 retries) can hold a request for many
    minutes when storage hangs; here a dead endpoint fails within a few seconds.
    """

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        access_key: str,
        secret_key: str,
        secure: bool = False,
        *,
        connect_timeout: float = 3.0,
        read_timeout: float = 20.0,
        attempts: int = 3,
        backoff: float = 0.5,
        create_bucket: bool = True,
    ) -> None:
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
            retries=False,  # retries are ours (_retry), so they are counted and bounded
            maxsize=16,
        )
        self.client = Minio(endpoint, access_key, secret_key, secure=secure, http_client=http)
        self.bucket = bucket
        self.attempts = attempts
        self.backoff = backoff
        self._bucket_ready = not create_bucket

    def _retry(self, what: str, fn: Callable[[], T]) -> T:
        backoff = Backoff(self.backoff, cap=float("inf"))
        for attempt in range(1, self.attempts + 1):
            try:
                return fn()
            except S3Error as exc:
                if exc.code not in _TRANSIENT_S3 or attempt == self.attempts:
                    raise StorageError(f"{what}: {exc.code}: {exc.message}") from exc
            except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
                if attempt == self.attempts:
                    raise StorageError(f"{what}: storage unreachable ({exc})") from exc
            time.sleep(backoff.next())
        raise AssertionError("unreachable")

    def _ensure_bucket(self) -> None:
        if self._bucket_ready:
            return

        def make() -> None:
            if not self.client.bucket_exists(self.bucket):
                try:
                    self.client.make_bucket(self.bucket)
                except S3Error as exc:  # created by a concurrent job in the meantime
                    if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise

        self._retry(f"create bucket {self.bucket}", make)
        self._bucket_ready = True

    def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        _safe_key(key)
        self._ensure_bucket()
        self._retry(
            f"upload {key}",
            lambda: self.client.put_object(
                self.bucket, key, io.BytesIO(data), len(data), content_type=content_type
            ),
        )

    def stat(self, key: str) -> ObjectInfo | None:
        def get() -> ObjectInfo | None:
            try:
                st = self.client.stat_object(self.bucket, key)
            except S3Error as exc:
                if exc.code in _MISSING:
                    return None
                raise
            return ObjectInfo(key.rsplit("/", 1)[-1], st.size or 0, st.content_type or "")

        return self._retry(f"stat {key}", get)

    def open(self, key: str, start: int = 0, length: int | None = None) -> Download | None:
        """The GET itself, opened (and failed) eagerly so that errors surface before a response
        has started; its headers give the size and type, so no HEAD goes first. None when missing."""

        def get() -> urllib3.BaseHTTPResponse | None:
            try:
                return self.client.get_object(self.bucket, key, offset=start, length=length or 0)
            except S3Error as exc:
                if exc.code in _MISSING:
                    return None
                raise

        resp = self._retry(f"download {key}", get)
        if resp is None:
            return None
        # a range's answer says the whole size after the slash: "bytes 0-99/1234"
        whole = resp.headers.get("Content-Range", "").rpartition("/")[2] or resp.headers.get("Content-Length")
        if not whole:
            resp.close()
            resp.release_conn()
            raise StorageError(f"download {key}: the answer does not say the object's size")
        info = ObjectInfo(key.rsplit("/", 1)[-1], int(whole), resp.headers.get("Content-Type", ""))
        return Download(info, _Body(resp))

    def iter_bytes(self, key: str, start: int = 0, length: int | None = None) -> Iterator[bytes]:
        return _opened(self.open(key, start, length), key)

    def list(self, prefix: str) -> list[ObjectInfo]:
        prefix = prefix.rstrip("/") + "/"

        def get() -> list[ObjectInfo]:
            try:
                objects = list(self.client.list_objects(self.bucket, prefix=prefix, recursive=True))
            except S3Error as exc:
                if exc.code == "NoSuchBucket":
                    return []
                raise
            return [
                ObjectInfo(o.object_name[len(prefix):], o.size or 0, content_type_for(o.object_name))
                for o in objects
                if o.object_name
            ]

        return self._retry(f"list {prefix}", get)

    def delete_prefix(self, prefix: str) -> int:
        names = [prefix.rstrip("/") + "/" + o.name for o in self.list(prefix)]
        for name in names:
            self._retry(f"delete {name}", lambda n=name: self.client.remove_object(self.bucket, n))
        return len(names)

    def presigned_url(self, key: str, seconds: int) -> str | None:
        """A URL that GETs the object without credentials for `seconds` (SigV4 query string).
        Signed here; the client only asks the store for the bucket's region, once."""
        _safe_key(key)
        expires = timedelta(seconds=seconds)
        return self._retry(f"presign {key}", lambda: self.client.presigned_get_object(
            self.bucket, key, expires
        ))

    def check(self) -> None:
        self._retry(f"bucket {self.bucket}", lambda: self.client.bucket_exists(self.bucket))


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
