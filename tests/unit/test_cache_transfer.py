"""Unit tests for pybuild.cache.transfer: --cache-from / --cache-to parsing, the cache layout written by
`export_cache`, and `LocalCacheSource.fetch` between two stores (lazy, verified, single-flight)."""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import subprocess
import tarfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pybuild.cache.backends import export_cache
from pybuild.cache.transfer import (
    CONFIG_MEDIA_TYPE,
    CacheSpec,
    LocalCacheSource,
    parse_cache_from,
    parse_cache_to,
)
from pybuild.digest import canonical_json, digest_hex, sha256_digest
from pybuild.errors import ConfigError, StoreError
from pybuild.store.cas import BlobWriter
from pybuild.store.images import import_rootfs, layer_blob
from pybuild.store.store import Store
from tests.bases import need

KEY_A, KEY_B, KEY_C = (sha256_digest(name.encode()) for name in ("key-a", "key-b", "key-c"))

# --- parsing -----------------------------------------------------------------------------------------------


def test_parse_cache_from_and_to() -> None:
    assert parse_cache_from("type=local,src=/tmp/cache") == CacheSpec("local", "/tmp/cache")
    assert parse_cache_from(' type=LOCAL , "src=/a,b" ') == CacheSpec("local", "/a,b")
    assert parse_cache_to("type=local,dest=out") == CacheSpec("local", "out", "min")
    assert parse_cache_to("type=local,dest=out,mode=max") == CacheSpec("local", "out", "max")
    assert parse_cache_to("type=local,dest=out,MODE=MIN") == CacheSpec("local", "out", "min")
    # BuildKit's defaults, said out loud, are what pybuild writes anyway
    assert parse_cache_to("type=local,dest=o,compression=gzip,oci-mediatypes=true,image-manifest=true,"
                          "ignore-error=false") == CacheSpec("local", "o", "min")
    assert parse_cache_from("type=registry,ref=reg.example.com/app:cache") == \
        CacheSpec("registry", "reg.example.com/app:cache")
    assert parse_cache_from("type=registry,ref=localhost:5000/app@sha256:" + "a" * 64).type == "registry"
    assert parse_cache_to("type=Registry,ref=127.0.0.1:5000/app:cache,mode=max") == \
        CacheSpec("registry", "127.0.0.1:5000/app:cache", "max")
    assert parse_cache_to("type=registry,ref=app,image-manifest=true") == CacheSpec("registry", "app", "min")


@pytest.mark.parametrize(("text", "match"), [
    ("", "empty"),
    ("/some/dir", "missing type="),
    ("src=/some/dir", "missing type="),
    ("type=registry", "missing ref="),
    ("type=registry,ref=", "ref is empty"),
    ("type=registry,ref=Bad/Name", "invalid reference format"),
    ("type=registry,ref=r/app,src=x", "unknown key 'src'"),
    ("type=registry,ref=r/app,mode=max", "unknown key 'mode'"),
    ("type=gha", "unknown cache type 'gha'"),
    ("type=inline", "unknown cache type 'inline'"),
    ("type=s3,bucket=x", "unknown cache type 's3'"),
    ("type=local", "missing src="),
    ("type=local,src=", "src is empty"),
    ("type=local,src=a,colour=blue", "unknown key 'colour'"),
    ("type=local,src=a,mode=max", "unknown key 'mode'"),
    ("type=local,dest=a", "unknown key 'dest'"),
    ("type=local,src=a,digest=sha256:" + "0" * 64, "digest= is not available yet"),
    ("type=local,src=a,tag=v1", "tag= is not available yet"),
    ("type=local,src=a,src=b", "src given twice"),
    ("type=local,src", "'src' is not key=value"),
])
def test_parse_cache_from_errors(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as caught:
        parse_cache_from(text)
    assert_one_line(caught.value, "--cache-from")


@pytest.mark.parametrize(("text", "match"), [
    ("", "empty"),
    ("out-dir", "missing type="),
    ("type=registry,dest=x", "unknown key 'dest'"),
    ("type=registry,mode=max", "missing ref="),
    ("type=registry,ref=r/app@sha256:" + "a" * 64, "names a digest"),
    ("type=registry,ref=r/app,compression=zstd", "compression=zstd is not available yet"),
    ("type=azblob,name=x", "unknown cache type 'azblob'"),
    ("type=local", "missing dest="),
    ("type=local,dest=", "dest is empty"),
    ("type=local,src=a", "unknown key 'src'"),
    ("type=local,dest=a,mode=full", "mode=full is not min or max"),
    ("type=local,dest=a,compression=zstd", "compression=zstd is not available yet"),
    ("type=local,dest=a,oci-mediatypes=false", "oci-mediatypes=false is not available yet"),
    ("type=local,dest=a,image-manifest=false", "image-manifest=false is not available yet"),
    ("type=local,dest=a,ignore-error=true", "ignore-error=true is not available yet"),
    ("type=local,dest=a,compression-level=3", "compression-level= is not available yet"),
    ("type=local,dest=a,force-compression=true", "force-compression= is not available yet"),
    ("type=local,dest=a,mode=max,mode=min", "mode given twice"),
])
def test_parse_cache_to_errors(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as caught:
        parse_cache_to(text)
    assert_one_line(caught.value, "--cache-to")


def assert_one_line(error: ConfigError, flag: str) -> None:
    text = str(error)
    assert "\n" not in text and text[:1].islower() and flag in text, text


# --- fixtures ----------------------------------------------------------------------------------------------


def make_tar(path: Path, files: dict[str, bytes]) -> str:
    with tarfile.open(path, "w") as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 1
            tar.addfile(info, io.BytesIO(data))
    return str(path)


@pytest.fixture
def layers(stores: tuple[Store, Store], tmp_path: Path) -> dict[str, str]:
    """key → diffID of three distinct layers in store A (imported with `import_rootfs`)."""
    a, _ = stores
    out = {}
    for number, key in enumerate((KEY_A, KEY_B, KEY_C)):
        tar = make_tar(tmp_path / f"layer{number}.tar", {f"file{number}.txt": f"layer {number}\n".encode() * 50,
                                                         "shared.txt": b"same in every layer\n"})
        out[key] = import_rootfs(a, tar, f"layer:{number}").diff_ids[0]
    return out


def blob_count(store: Store) -> int:
    return sum(1 for _ in store.blobs.iter_digests())


def layout_doc(cache: Path, digest: str) -> Any:
    return json.loads((cache / "blobs" / "sha256" / digest_hex(digest)).read_bytes())


def read_layout(cache: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(index.json, manifest, config) of a cache layout."""
    index = json.loads((cache / "index.json").read_bytes())
    manifest = layout_doc(cache, index["manifests"][0]["digest"])
    return index, manifest, layout_doc(cache, manifest["config"]["digest"])


# --- export ------------------------------------------------------------------------------------------------


def test_export_writes_an_oci_layout_with_sorted_entries_and_each_layer_once(
        stores: tuple[Store, Store], layers: dict[str, str], tmp_path: Path) -> None:
    a, _ = stores
    cache = tmp_path / "cache"
    shared = sha256_digest(b"another step with the same layer")
    entries = [(KEY_C, layers[KEY_C]), (KEY_A, layers[KEY_A]), (shared, layers[KEY_A])]
    assert export_cache(a, CacheSpec("local", str(cache), "max"), entries) == 3
    assert json.loads((cache / "oci-layout").read_bytes()) == {"imageLayoutVersion": "1.0.0"}
    index, manifest, config = read_layout(cache)
    assert index["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert len(index["manifests"]) == 1
    assert index["manifests"][0]["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["config"]["mediaType"] == CONFIG_MEDIA_TYPE
    gz = {key: layer_blob(a, diff_id, "gzip")[0] for key, diff_id in layers.items()}
    size = a.index.layer_size
    assert config == {"version": 1, "entries": sorted([
        {"key": KEY_A, "diff_id": layers[KEY_A], "layer": gz[KEY_A], "size": size(layers[KEY_A])},
        {"key": KEY_C, "diff_id": layers[KEY_C], "layer": gz[KEY_C], "size": size(layers[KEY_C])},
        {"key": shared, "diff_id": layers[KEY_A], "layer": gz[KEY_A], "size": size(layers[KEY_A])},
    ], key=lambda e: e["key"])}
    in_order = list(dict.fromkeys(e["layer"] for e in config["entries"]))  # first use, in key order
    assert [layer["digest"] for layer in manifest["layers"]] == in_order
    assert sorted(in_order) == sorted({gz[KEY_A], gz[KEY_C]})
    assert {layer["mediaType"] for layer in manifest["layers"]} == {"application/vnd.oci.image.layer.v1.tar+gzip"}
    config_bytes = (cache / "blobs" / "sha256" / digest_hex(manifest["config"]["digest"])).read_bytes()
    assert config_bytes == canonical_json(config)
    for path in (cache / "blobs" / "sha256").iterdir():  # every blob is named by its digest
        assert sha256_digest(path.read_bytes()) == "sha256:" + path.name
    # the cache holds the very gzip blob the store exports images with (compressed once, remembered)
    for layer in manifest["layers"]:
        assert (cache / "blobs" / "sha256" / digest_hex(layer["digest"])).read_bytes() == \
            a.blobs.read_bytes(layer["digest"])


def test_export_is_deterministic_and_leaves_no_temp_files(
        stores: tuple[Store, Store], layers: dict[str, str], tmp_path: Path) -> None:
    a, _ = stores
    one, two = tmp_path / "one", tmp_path / "two"
    entries = list(layers.items())
    export_cache(a, CacheSpec("local", str(one)), entries)
    export_cache(a, CacheSpec("local", str(two)), list(reversed(entries)))
    assert (one / "index.json").read_bytes() == (two / "index.json").read_bytes()
    assert sorted(os.listdir(one)) == ["blobs", "index.json", "oci-layout", "tmp"]
    assert os.listdir(one / "tmp") == []


def test_export_of_no_entries_is_an_empty_cache(stores: tuple[Store, Store], tmp_path: Path) -> None:
    a, b = stores
    cache = tmp_path / "cache"
    assert export_cache(a, CacheSpec("local", str(cache)), []) == 0
    _, manifest, config = read_layout(cache)
    assert manifest["layers"] == [] and config == {"version": 1, "entries": []}
    assert source_for(cache).fetch(KEY_A, b) is None


def test_export_to_a_file_is_a_config_error(stores: tuple[Store, Store], layers: dict[str, str],
                                             tmp_path: Path) -> None:
    a, _ = stores
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="not a directory"):
        export_cache(a, CacheSpec("local", str(tmp_path / "file")), list(layers.items()))


def test_reexport_keeps_old_blobs_but_lists_only_the_new_entries(
        stores: tuple[Store, Store], layers: dict[str, str], tmp_path: Path) -> None:
    a, b = stores
    cache = tmp_path / "cache"
    export_cache(a, CacheSpec("local", str(cache)), [(KEY_A, layers[KEY_A])])
    first_blobs = set(os.listdir(cache / "blobs" / "sha256"))
    export_cache(a, CacheSpec("local", str(cache)), [(KEY_B, layers[KEY_B])])
    assert first_blobs < set(os.listdir(cache / "blobs" / "sha256"))
    _, _, config = read_layout(cache)
    assert [e["key"] for e in config["entries"]] == [KEY_B]
    source = LocalCacheSource(parse_cache_from(f"type=local,src={cache}"))
    assert source.keys() == {KEY_B}
    assert source.fetch(KEY_A, b) is None
    assert source.fetch(KEY_B, b) == layers[KEY_B]


# --- import ------------------------------------------------------------------------------------------------


@pytest.fixture
def cache_dir(stores: tuple[Store, Store], layers: dict[str, str], tmp_path: Path) -> Path:
    a, _ = stores
    cache = tmp_path / "cache"
    export_cache(a, parse_cache_to(f"type=local,dest={cache},mode=max"), list(layers.items()))
    return cache


def source_for(cache: Path) -> LocalCacheSource:
    return LocalCacheSource(parse_cache_from(f"type=local,src={cache}"))


def test_fetch_round_trip_into_another_store(stores: tuple[Store, Store], layers: dict[str, str],
                                             cache_dir: Path) -> None:
    from pybuild.worker.snapshots import open_layer

    a, b = stores
    diff_id = layers[KEY_A]
    assert source_for(cache_dir).fetch(KEY_A, b) == diff_id
    assert b.blobs.read_bytes(diff_id) == a.blobs.read_bytes(diff_id)
    assert b.index.layer_size(diff_id) == a.index.layer_size(diff_id)
    with open_layer(b, diff_id) as layer:
        assert sha256_digest(layer.read()) == diff_id
    # the compressed form is the exporter's blob, found without compressing again
    gz_a = layer_blob(a, diff_id, "gzip")
    writers = count_writers(b)
    assert layer_blob(b, diff_id, "gzip") == gz_a
    assert writers() == 0
    assert b.index.diff_id_of(gz_a[0]) == diff_id
    assert b.verify_all() == []


def test_fetch_is_lazy(stores: tuple[Store, Store], layers: dict[str, str], cache_dir: Path) -> None:
    _, b = stores
    source = source_for(cache_dir)
    assert source.keys() == set(layers)
    assert blob_count(b) == 0  # reading the index copies nothing
    source.fetch(KEY_B, b)
    assert set(b.blobs.iter_digests()) == {layers[KEY_B], b.index.find_compressed(
        layers[KEY_B], "gzip", -1).digest}  # type: ignore[union-attr]
    source.fetch(KEY_B, b)  # already there: nothing more
    assert blob_count(b) == 2


def test_unknown_key_is_none_and_stores_nothing(stores: tuple[Store, Store], cache_dir: Path) -> None:
    _, b = stores
    assert source_for(cache_dir).fetch(sha256_digest(b"never built"), b) is None
    assert blob_count(b) == 0


def count_writers(store: Store) -> Callable[[], int]:
    """Count the blob writers `store` opens from now on (a fake around the real writer)."""
    made: list[BlobWriter] = []
    real = store.blobs.writer

    def writer() -> BlobWriter:
        w = real()
        made.append(w)
        return w

    store.blobs.writer = writer  # type: ignore[method-assign]
    return lambda: len(made)


def test_concurrent_fetches_of_one_key_copy_once(stores: tuple[Store, Store], layers: dict[str, str],
                                                 cache_dir: Path) -> None:
    _, b = stores
    source = source_for(cache_dir)
    writers = count_writers(b)
    barrier = threading.Barrier(4)
    results: list[str | None] = []
    errors: list[BaseException] = []

    def fetch() -> None:
        try:
            barrier.wait()
            results.append(source.fetch(KEY_C, b))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=fetch) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert results == [layers[KEY_C]] * 4
    assert writers() == 2  # one copy: the blob as given and its decompressed layer
    assert blob_count(b) == 2


def assert_nothing_stored(store: Store) -> None:
    assert blob_count(store) == 0
    assert store.index.compressed_rows() == [] and store.index.blob_rows() == []
    assert store.index.query("SELECT count(*) FROM layers") == [(0,)]
    assert os.listdir(store.blobs.tmp_dir) == []


def test_corrupt_blob_is_a_store_error_and_stores_nothing(stores: tuple[Store, Store], layers: dict[str, str],
                                                          cache_dir: Path) -> None:
    _, b = stores
    _, manifest, config = read_layout(cache_dir)
    layer = next(e["layer"] for e in config["entries"] if e["key"] == KEY_A)
    path = cache_dir / "blobs" / "sha256" / digest_hex(layer)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="corrupt cache") as caught:
        source_for(cache_dir).fetch(KEY_A, b)
    assert "\n" not in str(caught.value)
    assert_nothing_stored(b)


def test_blob_that_decompresses_fine_but_has_another_digest_stores_nothing(
        stores: tuple[Store, Store], layers: dict[str, str], cache_dir: Path) -> None:
    a, b = stores
    _, _, config = read_layout(cache_dir)
    layer = next(e["layer"] for e in config["entries"] if e["key"] == KEY_A)
    # the same layer, gzipped differently: a valid stream with the right diffID, but not the named blob
    other = gzip.compress(a.blobs.read_bytes(layers[KEY_A]), compresslevel=1, mtime=12345)
    (cache_dir / "blobs" / "sha256" / digest_hex(layer)).write_bytes(other)
    with pytest.raises(StoreError, match=f"corrupt cache .*layer {layer} .* got {sha256_digest(other)}"):
        source_for(cache_dir).fetch(KEY_A, b)
    assert_nothing_stored(b)


def rewrite_config(cache: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Rewrite the layout's config (and so its manifest and index.json) as `change` says."""
    index, manifest, config = read_layout(cache)
    change(config)
    blobs = cache / "blobs" / "sha256"
    data = canonical_json(config)
    (blobs / digest_hex(sha256_digest(data))).write_bytes(data)
    manifest["config"].update(digest=sha256_digest(data), size=len(data))
    data = canonical_json(manifest)
    (blobs / digest_hex(sha256_digest(data))).write_bytes(data)
    index["manifests"][0].update(digest=sha256_digest(data), size=len(data))
    (cache / "index.json").write_bytes(canonical_json(index))


def test_entry_whose_diff_id_lies_stores_nothing(stores: tuple[Store, Store], layers: dict[str, str],
                                                 cache_dir: Path) -> None:
    _, b = stores

    def lie(config: dict[str, Any]) -> None:
        for entry in config["entries"]:
            if entry["key"] == KEY_A:
                entry["diff_id"] = layers[KEY_B]

    rewrite_config(cache_dir, lie)
    with pytest.raises(StoreError, match=f"does not match its diffID {layers[KEY_B]}"):
        source_for(cache_dir).fetch(KEY_A, b)
    assert_nothing_stored(b)


def test_missing_layer_blob_is_a_store_error(stores: tuple[Store, Store], cache_dir: Path) -> None:
    _, b = stores
    _, _, config = read_layout(cache_dir)
    layer = next(e["layer"] for e in config["entries"] if e["key"] == KEY_A)
    (cache_dir / "blobs" / "sha256" / digest_hex(layer)).unlink()
    with pytest.raises(StoreError, match="cannot read layer"):
        source_for(cache_dir).fetch(KEY_A, b)
    assert_nothing_stored(b)


def test_missing_or_foreign_directories_are_config_errors(stores: tuple[Store, Store], tmp_path: Path) -> None:
    _, b = stores
    with pytest.raises(ConfigError, match="no such directory"):
        source_for(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    empty = source_for(tmp_path / "empty")  # read lazily: the error comes with the first fetch
    with pytest.raises(ConfigError, match="not a cache directory"):
        empty.fetch(KEY_A, b)
    foreign = tmp_path / "foreign"  # an OCI layout of something else (here an artifact)
    (foreign / "blobs" / "sha256").mkdir(parents=True)
    config = b"{}"
    manifest = canonical_json({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                               "config": {"mediaType": "application/vnd.oci.empty.v1+json",
                                          "digest": sha256_digest(config), "size": 2}, "layers": []})
    for data in (config, manifest):
        (foreign / "blobs" / "sha256" / digest_hex(sha256_digest(data))).write_bytes(data)
    (foreign / "index.json").write_bytes(canonical_json({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha256_digest(manifest),
        "size": len(manifest)}]}))
    with pytest.raises(ConfigError, match="holds no pybuild build cache"):
        source_for(foreign).fetch(KEY_A, b)


def test_corrupt_index_or_config_is_a_store_error(stores: tuple[Store, Store], cache_dir: Path) -> None:
    _, b = stores
    index_json = (cache_dir / "index.json").read_bytes()
    (cache_dir / "index.json").write_bytes(b"{not json")
    with pytest.raises(StoreError, match="corrupt cache"):
        source_for(cache_dir).fetch(KEY_A, b)
    (cache_dir / "index.json").write_bytes(index_json)
    rewrite_config(cache_dir, lambda config: config.update(version=2))
    with pytest.raises(StoreError, match="unsupported cache config"):
        source_for(cache_dir).fetch(KEY_A, b)
    _, manifest, _ = read_layout(cache_dir)
    (cache_dir / "blobs" / "sha256" / digest_hex(manifest["config"]["digest"])).write_bytes(b"{}")
    with pytest.raises(StoreError, match="does not match its digest"):
        source_for(cache_dir).fetch(KEY_A, b)
    assert_nothing_stored(b)


def test_skopeo_reads_the_layout(stores: tuple[Store, Store], layers: dict[str, str], cache_dir: Path) -> None:
    skopeo = shutil.which("skopeo")
    need(skopeo is not None, "skopeo not installed")
    assert skopeo is not None
    proc = subprocess.run([skopeo, "inspect", "--raw", f"oci:{cache_dir}"], capture_output=True, check=False,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    index, manifest, _ = read_layout(cache_dir)
    assert sha256_digest(proc.stdout) == index["manifests"][0]["digest"]
    assert json.loads(proc.stdout) == manifest
