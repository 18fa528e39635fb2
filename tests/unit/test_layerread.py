"""store.layerread: a layer kept only compressed (a pull) is read decompressed with its diffID checked, and
a lying one is dropped; store.layerstage.stage_download keeps the bytes as they came."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from pybuild.errors import StoreError
from pybuild.image.spec import Descriptor, layer_media_type
from pybuild.store.images import LOADED_LEVEL, layer_blob
from pybuild.store.layerread import layer_present, read_layer
from pybuild.store.layerstage import commit_downloads, layer_known, stage_download
from pybuild.store.store import Store


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_tar(name: str = "hello", size: int = 300_000) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        data = os.urandom(size)
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(str(tmp_path / "store")) as s:
        yield s


def pulled(store: Store, plain: bytes, diff_id: str | None = None) -> tuple[str, str]:
    """Stage and commit `plain` gzipped as a pull does; returns (blob digest, the diffID it claims)."""
    packed = gzip.compress(plain, mtime=0)
    desc = Descriptor(layer_media_type("gzip"), sha(packed), len(packed))
    claimed = diff_id or sha(plain)
    with ExitStack() as stack:
        commit_downloads(store, [stage_download(store, desc, claimed, stack, lambda out: out.write(packed),
                                                where="cannot pull x", name=desc.digest)])
    return desc.digest, claimed


def test_a_pulled_layer_is_kept_compressed_and_checked_when_first_read(store: Store) -> None:
    plain = layer_tar()
    digest, diff_id = pulled(store, plain)
    assert store.blobs.exists(digest) and not store.blobs.exists(diff_id)
    assert layer_present(store, diff_id) and store.index.layer_size(diff_id) is None
    assert [(r.compression, r.level) for r in store.index.compressed_forms(diff_id)] == [("gzip", LOADED_LEVEL)]
    with read_layer(store, diff_id) as reader:
        assert reader.read() == plain
    assert store.index.layer_size(diff_id) == len(plain)  # the check passed and is recorded
    # an export asking for the uncompressed layer gets its tar written out, named by its diffID
    assert layer_blob(store, diff_id, "uncompressed") == (diff_id, len(plain))
    assert store.blobs.read_bytes(diff_id) == plain


def test_a_reader_stopped_early_still_checks_the_whole_layer(store: Store) -> None:
    plain = layer_tar()
    other = layer_tar("other")
    _, lie = pulled(store, plain, diff_id=sha(other))
    with pytest.raises(StoreError, match=f"layer {lie} does not match its diffID"), read_layer(store, lie) as reader:
        assert reader.read(512)  # a tar reader stops at the end-of-archive blocks
    assert not layer_present(store, lie)  # dropped: the next pull downloads it again
    with pytest.raises(StoreError, match="layer not found in the store"):
        read_layer(store, lie)


def test_a_lying_layer_fails_compression_for_an_export(store: Store) -> None:
    digest, lie = pulled(store, layer_tar(), diff_id=sha(b"something else"))
    with pytest.raises(StoreError, match="does not match its diffID"):
        layer_blob(store, lie, "zstd")
    assert store.index.compressed_forms(lie) == [] and not layer_known(
        store, Descriptor(layer_media_type("gzip"), digest, 1), lie)
    assert os.listdir(store.blobs.tmp_dir) == []


def test_an_error_inside_the_block_is_not_masked_by_the_check(store: Store) -> None:
    _, lie = pulled(store, layer_tar(), diff_id=sha(b"x"))
    with pytest.raises(KeyError), read_layer(store, lie):
        raise KeyError("the caller's own error")
    assert layer_present(store, lie)  # nothing was read to the end, so nothing was judged


def test_stage_download_checks_magic_and_stores_nothing_on_failure(store: Store) -> None:
    plain = layer_tar()
    desc = Descriptor(layer_media_type("gzip"), sha(plain), len(plain))
    with ExitStack() as stack, pytest.raises(StoreError, match="layer L is uncompressed, but its media type"):
        stage_download(store, desc, sha(plain), stack, lambda out: out.write(plain), where="cannot pull x",
                       name="L")
    assert not store.blobs.exists(desc.digest) and os.listdir(store.blobs.tmp_dir) == []


def test_stage_download_of_an_uncompressed_layer_needs_its_diff_id(store: Store) -> None:
    plain = layer_tar()
    desc = Descriptor(layer_media_type("uncompressed"), sha(plain), len(plain))
    with ExitStack() as stack, pytest.raises(StoreError, match="does not match its diffID"):
        stage_download(store, desc, sha(b"other"), stack, lambda out: out.write(plain), where="w", name="L")
    with ExitStack() as stack:
        commit_downloads(store, [stage_download(store, desc, sha(plain), stack, lambda out: out.write(plain),
                                                where="w", name="L")])
    assert store.blobs.read_bytes(sha(plain)) == plain and store.index.layer_size(sha(plain)) == len(plain)


def test_a_writer_that_does_not_hash_names_the_blob_as_told(store: Store) -> None:
    with store.blobs.writer(hashed=False) as writer:
        writer.write(b"abc")
        with pytest.raises(StoreError, match="does not hash"):
            writer.digest()
        assert writer.commit(sha(b"abc")) == (sha(b"abc"), 3)
    with store.blobs.writer(hashed=False) as writer, pytest.raises(StoreError, match="needs the digest"):
        writer.commit()
