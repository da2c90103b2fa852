"""The storage layer against a local directory and a real S3 endpoint (moto server)."""

from __future__ import annotations

import os

import pytest

from job_image.s3 import MinioStorage
from job_image.storage import CHUNK, LocalStorage, ObjectInfo, StorageError, storage_from_env


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path):
    if request.param == "local":
        return LocalStorage(tmp_path / "results")
    return storage_from_env(request.getfixturevalue("minio_env"))


def test_round_trip_list_range_and_delete(storage):
    storage.put_bytes("alice/j1/image.png", b"\x89PNG" + bytes(range(256)) * 10, "image/png")
    storage.put_bytes("alice/j1/result.json", b"{}", "application/json")
    storage.put_bytes("alice/j2/image.png", b"other", "image/png")

    assert {o.name: o.size for o in storage.list("alice/j1/")} == {
        "image.png": 2564,
        "result.json": 2,
    }
    info = storage.stat("alice/j1/result.json")
    assert info is not None and info.size == 2 and info.content_type == "application/json"
    assert storage.stat("alice/j1/missing.png") is None
    assert b"".join(storage.iter_bytes("alice/j1/image.png", 4, 3)) == bytes([0, 1, 2])
    assert storage.delete_prefix("alice/j1/") == 2
    assert storage.list("alice/j1/") == []
    assert [o.name for o in storage.list("alice/j2")] == ["image.png"]


def test_open_says_the_whole_size_and_type_with_the_bytes(storage):
    data = os.urandom(2 * CHUNK + 5)  # several chunks
    storage.put_bytes("alice/j1/blob.bin", data, "application/octet-stream")
    storage.put_bytes("alice/j1/result.json", b"{}", "application/json")
    whole = storage.open("alice/j1/blob.bin")
    assert whole.info == ObjectInfo("blob.bin", len(data), "application/octet-stream")
    assert b"".join(whole.chunks) == data
    tail = storage.open("alice/j1/blob.bin", CHUNK, 10)
    assert tail.info.size == len(data) and b"".join(tail.chunks) == data[CHUNK : CHUNK + 10]
    assert storage.open("alice/j1/result.json").info.content_type == "application/json"
    assert storage.open("alice/j1/missing.png") is None
    assert storage.open("alice/j2/missing.png") is None
    with pytest.raises(StorageError):
        storage.iter_bytes("alice/j1/missing.png")


def test_a_download_cut_short_leaves_the_next_one_whole(storage):
    """A client that goes mid-download closes the chunks: the connection with bytes still in
    flight is dropped, not handed to the next download."""
    data = os.urandom(3 * CHUNK)
    storage.put_bytes("alice/j1/blob.bin", data, "application/octet-stream")
    for _ in range(3):
        chunks = storage.open("alice/j1/blob.bin").chunks
        assert next(chunks) == data[:CHUNK]
        chunks.close()
        assert b"".join(storage.open("alice/j1/blob.bin").chunks) == data
        storage.open("alice/j1/blob.bin").chunks.close()  # opened, never read
        assert b"".join(storage.open("alice/j1/blob.bin").chunks) == data


@pytest.mark.parametrize("key", ["../x", "/etc/passwd", "a/../../b", "a//b", "a/./b"])
def test_unsafe_keys_are_refused(tmp_path, key):
    with pytest.raises(ValueError):
        LocalStorage(tmp_path).put_bytes(key, b"x", "text/plain")


def test_unreachable_endpoint_fails_fast_with_storage_error():
    from tests.conftest import free_port

    dead = MinioStorage(f"127.0.0.1:{free_port()}", "results", "k", "s", attempts=2, backoff=0.01)
    with pytest.raises(StorageError, match="unreachable"):
        dead.put_bytes("a/b.png", b"x", "image/png")
    with pytest.raises(StorageError):
        dead.check()


def test_minio_settings_are_all_required():
    with pytest.raises(StorageError, match="MINIO_BUCKET"):
        storage_from_env({"MINIO_ENDPOINT": "127.0.0.1:9000"})


def test_endpoint_may_be_given_as_url(minio_env):
    env = dict(minio_env, MINIO_ENDPOINT="http://" + minio_env["MINIO_ENDPOINT"])
    store = storage_from_env(env)
    store.put_bytes("u/j/result.json", b"{}", "application/json")
    assert store.stat("u/j/result.json") is not None
