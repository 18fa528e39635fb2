"""store.layerread: a layer kept only compressed (a pull) is read decompressed with its diffID checked, and
a lying one is dropped; store.layerstage.stage_download keeps the bytes as they came."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from pybuild.errors import StoreError
from pybuild.image.spec import OCI_CONFIG, OCI_MANIFEST, Descriptor, layer_media_type
from pybuild.store.images import LOADED_LEVEL, layer_blob, normalize_name
from pybuild.store.layerread import layer_present, read_layer
from pybuild.store.layerstage import commit_downloads, layer_known, stage_download, stage_layer
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
    with ExitStack() as stack, pytest.raises(StoreError, match="layer L is not a gzip stream: it starts with "
                                                               "(.. ){3}.. \\(its media type says .*gzip\\)"):
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


# --- what is wrong with a layer is said, and an image that lost one does not stay tagged --------------------


def tag_image(store: Store, name: str, layers: list[tuple[str, str]]) -> str:
    """Store and tag an image of `layers` ((blob digest, diffID), gzip); returns its manifest digest."""
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [d for _, d in layers]}}).encode()
    config_digest, _ = store.put_bytes(config, OCI_CONFIG)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": layer_media_type("gzip"), "digest": blob, "size": 1} for blob, _ in layers],
    }).encode()
    digest, _ = store.put_bytes(manifest, OCI_MANIFEST)
    store.index.record_image(digest, config_digest, "linux/amd64", 1)
    store.index.set_tag(normalize_name(name), digest)
    return digest


def test_random_bytes_under_a_gzip_digest_are_named_for_what_they_are(store: Store) -> None:
    noise = b"\x3f\xa0\x11\x02" + os.urandom(1000)
    desc = Descriptor(layer_media_type("gzip"), sha(noise), len(noise))
    with ExitStack() as stack, pytest.raises(StoreError) as info:
        stage_download(store, desc, sha(b"x"), stack, lambda out: out.write(noise), where="cannot pull x",
                       name=desc.digest)
    assert str(info.value) == (f"cannot pull x: layer {desc.digest} is not a gzip stream: it starts with "
                               f"3f a0 11 02 (its media type says {desc.media_type})")
    zstd = b"\x28\xb5\x2f\xfd" + os.urandom(100)
    with ExitStack() as stack, pytest.raises(StoreError, match="is a zstd stream, not gzip"):
        stage_download(store, Descriptor(desc.media_type, sha(zstd), len(zstd)), sha(b"x"), stack,
                       lambda out: out.write(zstd), where="w", name="L")
    packed = gzip.compress(layer_tar())
    plain_desc = Descriptor(layer_media_type("uncompressed"), sha(packed), len(packed))
    with ExitStack() as stack, pytest.raises(StoreError, match="layer L is a gzip stream, not an uncompressed tar"):
        stage_layer(store, io.BytesIO(packed), plain_desc, sha(b"x"), stack, where="w", name="L")
    assert os.listdir(store.blobs.tmp_dir) == [] and list(store.blobs.iter_digests()) == []


def test_a_compressed_form_that_is_not_gzip_is_dropped_and_its_images_untagged(store: Store) -> None:
    """A form no download looked at (a remote blob fetched on first use): its first bytes are checked."""
    noise = b"\x00\x01\x02\x03" + os.urandom(500)
    blob, _ = store.put_bytes(noise)
    diff_id = sha(b"the layer it claims to be")
    store.index.record_compressed(diff_id, "gzip", LOADED_LEVEL, blob, len(noise))
    tag_image(store, "app:1", [(blob, diff_id)])
    with pytest.raises(StoreError) as info:
        read_layer(store, diff_id)
    assert str(info.value) == (f"layer {diff_id} blob {blob} is not a gzip stream: it starts with 00 01 02 03 "
                               "(the layer is dropped; untagged app:1)")
    assert info.value.hint == "pull the image again"
    assert not layer_present(store, diff_id) and store.index.list_tags() == []


def test_a_diff_id_mismatch_untags_every_image_using_the_layer(store: Store) -> None:
    good, good_id = pulled(store, layer_tar("base"))
    blob, lie = pulled(store, layer_tar(), diff_id=sha(b"something else"))
    tag_image(store, "app:1", [(good, good_id), (blob, lie)])
    tag_image(store, "app:2", [(blob, lie)])
    kept = tag_image(store, "base:1", [(good, good_id)])
    with pytest.raises(StoreError) as info, read_layer(store, lie):
        pass
    assert str(info.value).startswith(f"layer {lie} does not match its diffID: blob {blob} decompresses to ")
    assert str(info.value).endswith("(the layer is dropped; untagged app:1, app:2)")
    assert info.value.hint == "pull the images again"
    assert [(t.name, t.digest) for t in store.index.list_tags()] == [("docker.io/library/base:1", kept)]
    assert store.verify_all() == []  # what is still tagged is whole


def test_a_corrupt_gzip_stream_drops_the_layer(store: Store) -> None:
    packed = bytearray(gzip.compress(layer_tar(), mtime=0))
    packed[len(packed) // 2:len(packed) // 2 + 64] = bytes(64)
    blob, _ = store.put_bytes(bytes(packed))
    diff_id = sha(b"whatever")
    store.index.record_compressed(diff_id, "gzip", LOADED_LEVEL, blob, len(packed))
    tag_image(store, "app:1", [(blob, diff_id)])
    with pytest.raises(StoreError, match=f"layer {diff_id} cannot be read: blob {blob} is a corrupt gzip "
                                         r"stream: .*\(the layer is dropped; untagged app:1\)"):
        with read_layer(store, diff_id) as reader:
            reader.read()
    assert not layer_present(store, diff_id) and store.index.list_tags() == []


def test_du_verify_reports_a_tagged_image_whose_layer_cannot_be_had(store: Store) -> None:
    blob, diff_id = pulled(store, layer_tar())
    digest = tag_image(store, "app:1", [(blob, diff_id)])
    assert store.verify_all() == []
    store.blobs.delete(blob)
    store.index.forget_compressed(blob)  # as a failed check does; the tag stays (a store of an older pybuild)
    problems = [p for p in store.verify_all() if p.kind == "broken"]
    assert [(p.digest, p.message) for p in problems] == [
        (diff_id, f"image app:1 ({digest}) is not whole: the store has no form of its layer {diff_id} "
                  "(pull or build it again)")]
    from pybuild.store.remote import RemoteBlob, record_remote

    store.index.record_compressed(diff_id, "gzip", LOADED_LEVEL, blob, 1)
    record_remote(store, [RemoteBlob(blob, 1, layer_media_type("gzip"), "registry:example.com/app")])
    assert [p for p in store.verify_all() if p.kind == "broken"] == []  # a remote form will do
