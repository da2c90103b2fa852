"""MinIO/S3 storage (the `Storage` protocol of storage.py) through the `minio` client.

Its own module so that `minio` and `urllib3` (a fifth of a job's imports) are imported only
where S3 is used: storage_from_env imports it when MINIO_ENDPOINT is set.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import TypeVar

import urllib3
from minio import Minio
from minio.error import MinioException, S3Error

from .backoff import Backoff
from .storage import CHUNK, Download, ObjectInfo, StorageError, content_type_for, opened, safe_key

T = TypeVar("T")


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
        safe_key(key)
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
        return opened(self.open(key, start, length), key)

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
        safe_key(key)
        expires = timedelta(seconds=seconds)
        return self._retry(f"presign {key}", lambda: self.client.presigned_get_object(
            self.bucket, key, expires
        ))

    def check(self) -> None:
        self._retry(f"bucket {self.bucket}", lambda: self.client.bucket_exists(self.bucket))
