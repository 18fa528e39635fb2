"""Unit tests for pybuild.cache.registrycache: `--cache-to` / `--cache-from type=registry`.

Most tests run against `FakeRegistry`, an in-memory stand-in for `RegistryClient` that keeps distribution's
rules (a manifest PUT names only blobs the repository has; blobs are checked against their digest) and logs
every call, so the export order and the laziness of the import can be read off. The last tests push to a
real registry (distribution's `registry` binary, through `tests.registry_support`), three builders at once.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO

import pytest

from pybuild.cache.backends import export_cache, open_cache_source
from pybuild.cache.registrycache import RegistryCacheSource, export_registry_cache
from pybuild.cache.transfer import (
    CONFIG_MEDIA_TYPE,
    CacheSpec,
    encode_cache,
    parse_cache_from,
    parse_cache_to,
)
from pybuild.digest import canonical_json, digest_hex, sha256_digest
from pybuild.errors import ConfigError, RegistryError, StoreError
from pybuild.image.spec import OCI_INDEX, OCI_MANIFEST, Descriptor, Index, Manifest
from pybuild.store.images import import_rootfs, layer_blob
from pybuild.registry.blobsource import FETCHERS
from pybuild.store.store import Store
from tests.unit.test_cache_transfer import KEY_A, KEY_B, KEY_C, blob_count, make_tar

REF = "registry.test/app:cache"
REPO = "app"


class FakeRegistry:
    """An in-memory registry with `RegistryClient`'s interface (the methods the cache uses)."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[str, tuple[bytes, str]] = {}  # digest → (bytes, media type)
        self.tags: dict[str, str] = {}
        self.calls: list[tuple[str, str]] = []  # (method, digest or reference)
        self.fail_upload: str | None = None  # digest whose upload fails
        self._lock = threading.Lock()

    def _log(self, method: str, what: str) -> None:
        with self._lock:
            self.calls.append((method, what))

    def head_manifest(self, repo: str, reference: str) -> tuple[str, str, int] | None:
        self._log("head_manifest", reference)
        digest = self.tags.get(reference, reference)
        if digest not in self.manifests:
            return None
        data, media_type = self.manifests[digest]
        return digest, media_type, len(data)

    def get_manifest(self, repo: str, reference: str) -> tuple[bytes, str, str]:
        self._log("get_manifest", reference)
        digest = self.tags.get(reference, reference)
        if digest not in self.manifests:
            raise RegistryError(f"{repo}:{reference}: manifest unknown")
        data, media_type = self.manifests[digest]
        return data, media_type, digest

    def put_manifest(self, repo: str, reference: str, data: bytes, media_type: str) -> str:
        self._log("put_manifest", reference)
        doc = json.loads(data)
        for desc in [doc["config"], *doc["layers"]] if "config" in doc else []:
            if desc["digest"] not in self.blobs:  # distribution: MANIFEST_BLOB_UNKNOWN
                raise RegistryError(f"manifest blob unknown: {desc['digest']}")
        digest = sha256_digest(data)
        with self._lock:
            self.manifests[digest] = (data, media_type)
            self.tags[reference] = digest
        return digest

    def blob_size(self, repo: str, digest: str) -> int | None:
        self._log("blob_size", digest)
        blob = self.blobs.get(digest)
        return None if blob is None else len(blob)

    def get_blob(self, repo: str, digest: str, out: IO[bytes], *, size: int | None = None,
                 progress: Any = None) -> int:
        self._log("get_blob", digest)
        if digest not in self.blobs:
            raise RegistryError(f"blob unknown: {digest}")
        data = self.blobs[digest]
        if sha256_digest(data) != digest:
            raise RegistryError(f"blob {digest} does not match its digest")
        out.write(data)
        return len(data)

    def upload_blob(self, repo: str, digest: str, size: int, opener: Callable[[], BinaryIO], *,
                    chunk_size: int = 16 << 20, progress: Any = None) -> None:
        self._log("upload_blob", digest)
        if digest == self.fail_upload:
            raise RegistryError(f"upload of {digest} failed")
        with opener() as src:
            data = src.read()
        if sha256_digest(data) != digest or len(data) != size:
            raise RegistryError(f"upload of {digest}: digest mismatch")
        with self._lock:
            self.blobs[digest] = data

    def methods(self) -> list[str]:
        return [method for method, _ in self.calls]

    def called(self, method: str) -> list[str]:
        """The digests or references of the calls of `method`, in order."""
        return [what for name, what in self.calls if name == method]

    def put_raw(self, data: bytes) -> Descriptor:
        """Store a blob as is (to build odd caches by hand)."""
        digest = hashlib.sha256(data).hexdigest()
        self.blobs["sha256:" + digest] = data
        return Descriptor("application/octet-stream", "sha256:" + digest, len(data))


def import_layers(store: Store, tmp_path: Path, names: dict[str, str]) -> dict[str, str]:
    """key → diffID of one distinct layer per (key, text) in `names`, imported into `store`."""
    out = {}
    for key, text in names.items():
        tar = make_tar(tmp_path / f"{digest_hex(key)[:12]}-{id(store)}.tar",
                       {f"{text}.txt": text.encode() * 200, "shared.txt": b"in every layer\n"})
        out[key] = import_rootfs(store, tar, f"layer:{digest_hex(key)[:12]}").diff_ids[0]
    return out


@pytest.fixture
def layers(stores: tuple[Store, Store], tmp_path: Path) -> dict[str, str]:
    a, _ = stores
    return import_layers(a, tmp_path, {KEY_A: "layer a", KEY_B: "layer b", KEY_C: "layer c"})


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> FakeRegistry:
    """The fake, also as the process's client for registry.test: a remote layer a cache hit recorded is
    fetched through `client_for(host)` when it is read (`registry.blobsource`)."""
    from pybuild.registry import client

    fake = FakeRegistry()
    monkeypatch.setitem(client._clients, "registry.test", fake)
    return fake


def export(store: Store, registry: FakeRegistry, entries: list[tuple[str, str]], ref: str = REF) -> int:
    return export_registry_cache(store, parse_cache_to(f"type=registry,ref={ref},mode=max"), entries,
                                 client=registry)  # type: ignore[arg-type]


def source(registry: FakeRegistry, ref: str = REF) -> RegistryCacheSource:
    spec = parse_cache_from(f"type=registry,ref={ref}")
    return RegistryCacheSource(spec, client=registry)  # type: ignore[arg-type]


def gzip_of(store: Store, diff_ids: dict[str, str]) -> dict[str, str]:
    return {key: layer_blob(store, diff_id, "gzip")[0] for key, diff_id in diff_ids.items()}


# --- export ------------------------------------------------------------------------------------------------


def test_export_pushes_blobs_then_config_then_the_manifest(
        stores: tuple[Store, Store], layers: dict[str, str], registry: FakeRegistry) -> None:
    a, _ = stores
    assert export(a, registry, sorted(layers.items())) == 3
    gz = gzip_of(a, layers)
    uploads = registry.called("upload_blob")
    config_digest = uploads[-1]
    assert uploads == [*(gz[key] for key in sorted(layers)), config_digest]  # layers (key order), config
    assert registry.methods()[-1] == "put_manifest"  # the atomic switch comes last
    data, media_type = registry.manifests[registry.tags["cache"]]
    manifest = json.loads(data)
    assert media_type == OCI_MANIFEST and manifest["mediaType"] == OCI_MANIFEST
    assert manifest["config"] == {"mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest,
                                  "size": len(registry.blobs[config_digest])}
    assert json.loads(registry.blobs[config_digest])["entries"] == [
        {"key": key, "diff_id": layers[key], "layer": gz[key], "size": a.index.layer_size(layers[key])}
        for key in sorted(layers)]
    # the registry holds the very gzip blobs the store exports images with
    for layer in manifest["layers"]:
        assert registry.blobs[layer["digest"]] == a.blobs.read_bytes(layer["digest"])


def test_the_pushed_manifest_is_the_one_a_local_cache_lists(
        stores: tuple[Store, Store], layers: dict[str, str], registry: FakeRegistry, tmp_path: Path) -> None:
    a, _ = stores
    entries = sorted(layers.items())
    export(a, registry, entries)
    export_cache(a, CacheSpec("local", str(tmp_path / "dir"), "max"), entries)
    index = json.loads((tmp_path / "dir" / "index.json").read_bytes())
    assert index["manifests"][0]["digest"] == registry.tags["cache"]  # one format, the same bytes


def test_export_skips_blobs_the_registry_has(stores: tuple[Store, Store], layers: dict[str, str],
                                             registry: FakeRegistry) -> None:
    a, _ = stores
    export(a, registry, [(KEY_A, layers[KEY_A]), (KEY_B, layers[KEY_B])])
    registry.calls.clear()
    export(a, registry, sorted(layers.items()))  # a second build adds KEY_C
    assert registry.called("upload_blob")[:1] == [gzip_of(a, layers)[KEY_C]]
    assert registry.methods().count("upload_blob") == 2  # the new layer and the new config


def test_a_failed_upload_leaves_the_tag_as_it_was(stores: tuple[Store, Store], layers: dict[str, str],
                                                   registry: FakeRegistry) -> None:
    a, b = stores
    export(a, registry, [(KEY_A, layers[KEY_A])])
    before = registry.tags["cache"]
    registry.fail_upload = gzip_of(a, layers)[KEY_C]
    registry.calls.clear()
    with pytest.raises(RegistryError, match="upload of"):
        export(a, registry, sorted(layers.items()))
    assert registry.tags["cache"] == before and "put_manifest" not in registry.methods()
    assert source(registry).keys() == {KEY_A}


def test_export_of_no_entries_is_an_empty_cache(stores: tuple[Store, Store], registry: FakeRegistry) -> None:
    a, b = stores
    assert export(a, registry, []) == 0
    assert source(registry).fetch(KEY_A, b) is None


# --- import ------------------------------------------------------------------------------------------------


def test_source_asks_nothing_until_the_first_fetch(registry: FakeRegistry) -> None:
    made = open_cache_source(parse_cache_from(f"type=registry,ref={REF}"))
    assert isinstance(made, RegistryCacheSource) and made.where == REF
    source(registry)
    assert registry.calls == []


def test_fetch_round_trip_is_lazy(stores: tuple[Store, Store], layers: dict[str, str],
                                  registry: FakeRegistry) -> None:
    from pybuild.store.layerread import layer_present
    from pybuild.worker.snapshots import open_layer

    a, b = stores
    export(a, registry, sorted(layers.items()))
    gz = gzip_of(a, layers)
    registry.calls.clear()
    cache = source(registry)
    assert cache.fetch(KEY_B, b) == layers[KEY_B]
    assert len(registry.called("get_blob")) == 1  # the config: a hit moves no layer bytes
    assert blob_count(b) == 0 and layer_present(b, layers[KEY_B])
    # the very blob of the cache is the layer's gzip form in B: not compressed again, not fetched to say so
    assert layer_blob(b, layers[KEY_B], "gzip") == layer_blob(a, layers[KEY_B], "gzip")
    assert b.verify_all() == []  # a remote blob is not a missing one
    with open_layer(b, layers[KEY_B]) as layer:  # reading it fetches it, once
        assert sha256_digest(layer.read()) == layers[KEY_B]
    assert registry.called("get_blob")[1:] == [gz[KEY_B]]
    assert set(b.blobs.iter_digests()) == {gz[KEY_B]}
    registry.calls.clear()
    assert cache.fetch(KEY_B, b) == layers[KEY_B]  # in the store already: no request at all
    assert cache.fetch(sha256_digest(b"never built"), b) is None
    with open_layer(b, layers[KEY_B]) as layer:
        layer.read()
    assert registry.calls == []
    assert b.verify_all() == []


def test_concurrent_fetches_of_one_key_download_once(stores: tuple[Store, Store], layers: dict[str, str],
                                                     registry: FakeRegistry) -> None:
    a, b = stores
    export(a, registry, sorted(layers.items()))
    cache = source(registry)
    registry.calls.clear()
    barrier = threading.Barrier(4)

    def run() -> None:
        barrier.wait()
        assert cache.fetch(KEY_C, b) == layers[KEY_C]

    def read() -> None:
        from pybuild.store.layerread import read_layer

        barrier.wait()
        with read_layer(b, layers[KEY_C]) as layer:
            assert sha256_digest(layer.read()) == layers[KEY_C]

    for target in (run, read):
        threads = [threading.Thread(target=target) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert registry.called("get_blob").count(gzip_of(a, layers)[KEY_C]) == 1
    assert registry.methods().count("head_manifest") == 1


def test_a_tag_holding_an_index_of_the_cache_manifest_is_read(
        stores: tuple[Store, Store], layers: dict[str, str], registry: FakeRegistry) -> None:
    a, b = stores
    export(a, registry, sorted(layers.items()))
    data, _ = registry.manifests[registry.tags["cache"]]
    index = Index((Descriptor(OCI_MANIFEST, sha256_digest(data), len(data)),)).to_bytes()
    registry.put_manifest(REPO, "as-index", index, OCI_INDEX)
    assert source(registry, "registry.test/app:as-index").fetch(KEY_A, b) == layers[KEY_A]


def test_a_missing_tag_is_a_config_error_on_the_first_fetch(stores: tuple[Store, Store],
                                                            registry: FakeRegistry) -> None:
    _, b = stores
    with pytest.raises(ConfigError, match=r"--cache-from ref registry.test/app:cache: not found") as caught:
        source(registry).fetch(KEY_A, b)
    assert "\n" not in str(caught.value)
    assert blob_count(b) == 0


def test_a_tag_that_is_not_a_cache_is_a_config_error(stores: tuple[Store, Store],
                                                     registry: FakeRegistry) -> None:
    _, b = stores
    config = registry.put_raw(canonical_json({"architecture": "amd64", "os": "linux",
                                              "rootfs": {"type": "layers", "diff_ids": []}}))
    image = Manifest(Descriptor("application/vnd.oci.image.config.v1+json", config.digest, config.size), ())
    registry.put_manifest(REPO, "cache", image.to_bytes(), OCI_MANIFEST)
    with pytest.raises(ConfigError, match="holds no pybuild build cache"):
        source(registry).fetch(KEY_A, b)


def lying_cache(registry: FakeRegistry, a: Store, layers: dict[str, str], diff_id: str) -> None:
    """A cache whose one entry (KEY_A) names layer A's blob with `diff_id`."""
    gz, size = layer_blob(a, layers[KEY_A], "gzip")
    registry.blobs[gz] = a.blobs.read_bytes(gz)
    config = registry.put_raw(canonical_json(
        {"version": 1, "entries": [{"key": KEY_A, "diff_id": diff_id, "layer": gz}]}))
    manifest = Manifest(Descriptor(CONFIG_MEDIA_TYPE, config.digest, config.size),
                        (Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", gz, size),))
    registry.put_manifest(REPO, "cache", manifest.to_bytes(), OCI_MANIFEST)


def test_an_entry_whose_diff_id_lies_fails_when_read_and_is_dropped(
        stores: tuple[Store, Store], layers: dict[str, str], registry: FakeRegistry) -> None:
    from pybuild.store.layerread import layer_present, read_layer

    a, b = stores
    lying_cache(registry, a, layers, layers[KEY_B])
    assert source(registry).fetch(KEY_A, b) == layers[KEY_B]  # believed until read, as a pull is
    with pytest.raises(StoreError, match="does not match its diffID"), read_layer(b, layers[KEY_B]) as layer:
        layer.read()
    assert not layer_present(b, layers[KEY_B])  # the next build runs the step instead
    assert list(Path(b.blobs.tmp_dir).iterdir()) == []


def test_a_corrupt_config_is_refused(stores: tuple[Store, Store], layers: dict[str, str],
                                           registry: FakeRegistry) -> None:
    a, b = stores
    export(a, registry, sorted(layers.items()))
    config = json.loads(registry.manifests[registry.tags["cache"]][0])["config"]["digest"]
    registry.blobs[config] = b"{not json"
    with pytest.raises(RegistryError, match="does not match its digest"):  # the client's check comes first
        source(registry).fetch(KEY_A, b)


def test_a_registry_failure_during_a_layer_download_is_raised_and_stores_nothing(
        stores: tuple[Store, Store], layers: dict[str, str], registry: FakeRegistry) -> None:
    from pybuild.store.layerread import read_layer

    a, b = stores
    export(a, registry, sorted(layers.items()))
    del registry.blobs[gzip_of(a, layers)[KEY_A]]
    assert source(registry).fetch(KEY_A, b) == layers[KEY_A]
    with pytest.raises(RegistryError, match="blob unknown"):
        read_layer(b, layers[KEY_A])
    assert blob_count(b) == 0 and list(Path(b.blobs.tmp_dir).iterdir()) == []


def test_a_registry_failure_in_a_build_is_a_warning(stores: tuple[Store, Store], layers: dict[str, str],
                                                    registry: FakeRegistry) -> None:
    """solve.runner.StepRunner drops a source that fails with a warning and goes on (BuildKit does the same)."""
    from pybuild.cache.index import CacheIndex
    from pybuild.cache.keys import CacheKeyInput
    from pybuild.solve.runner import StepRunner

    _, b = stores
    warnings: list[str] = []
    never: Any = None  # no step runs: no worker is made
    runner = StepRunner(b, lambda: never, CacheIndex(b), None, sources=[source(registry)],
                        warn=warnings.append)
    assert runner._fetch(KEY_A, CacheKeyInput("exec", {})) is None
    assert runner.sources == [] and warnings == [
        "WARNING: ignoring the imported cache: --cache-from ref registry.test/app:cache: not found"]


# --- a real registry ---------------------------------------------------------------------------------------


@pytest.fixture
def real_registry(tmp_path: Path) -> Iterator[str]:
    """The host (127.0.0.1:PORT) of a fresh distribution registry."""
    support = pytest.importorskip("tests.registry_support")
    with support.start_registry(tmp_path / "registry") as running:
        yield running.host


def test_round_trip_through_a_real_registry(stores: tuple[Store, Store], layers: dict[str, str],
                                            real_registry: str) -> None:
    a, b = stores
    ref = f"{real_registry}/team/app:cache"
    # distribution takes an OCI manifest whose config has pybuild's media type
    assert export_cache(a, parse_cache_to(f"type=registry,ref={ref},mode=max"), sorted(layers.items())) == 3
    cache = open_cache_source(parse_cache_from(f"type=registry,ref={ref}"))
    assert cache.keys() == set(layers)
    assert cache.fetch(KEY_C, b) == layers[KEY_C]
    assert layer_blob(b, layers[KEY_C], "gzip") == layer_blob(a, layers[KEY_C], "gzip")
    missing = open_cache_source(parse_cache_from(f"type=registry,ref={real_registry}/team/app:nope"))
    with pytest.raises(ConfigError, match="not found"):
        missing.fetch(KEY_A, b)


def test_three_concurrent_exporters_leave_the_tag_whole(tmp_path: Path, real_registry: str) -> None:
    """Three builders (three stores) export to one tag at once, again and again, while a reader keeps
    reading it: every manifest the tag ever names lists only uploaded blobs and one builder's whole
    cache, and the last one is importable."""
    from pybuild.registry.client import client_for

    ref = f"{real_registry}/app:cache"
    shared = sha256_digest(b"a step every builder ran")
    builders: list[tuple[Store, list[tuple[str, str]]]] = []
    for number in range(3):
        store = Store.open(str(tmp_path / f"builder{number}"))
        steps = [f"builder {number} step {i}" for i in range(3)]
        own = {sha256_digest(step.encode()): step for step in steps}
        diff_ids = import_layers(store, tmp_path, {**own, shared: "shared step"})
        builders.append((store, sorted(diff_ids.items())))
    expected = {frozenset(key for key, _ in entries) for _, entries in builders}
    manifests = {sha256_digest(encode_cache(store, entries).manifest.to_bytes()) for store, entries in builders}
    client = client_for(real_registry)
    start = threading.Barrier(4)
    errors: list[BaseException] = []
    seen: set[str] = set()

    def exporter(store: Store, entries: list[tuple[str, str]]) -> None:
        try:
            start.wait()
            for _ in range(4):
                export_cache(store, parse_cache_to(f"type=registry,ref={ref},mode=max"), entries)
        except BaseException as exc:  # reported below
            errors.append(exc)

    def check_tag() -> None:
        found = client.head_manifest("app", "cache")
        if found is None or found[0] in seen:
            return
        seen.add(found[0])
        assert found[0] in manifests  # one builder's whole export, never a mix
        data, _, _ = client.get_manifest("app", found[0])
        manifest = json.loads(data)
        for desc in (manifest["config"], *manifest["layers"]):
            assert client.blob_size("app", desc["digest"]) == desc["size"]
        out = io.BytesIO()
        client.get_blob("app", manifest["config"]["digest"], out)
        assert frozenset(e["key"] for e in json.loads(out.getvalue())["entries"]) in expected

    threads = [threading.Thread(target=exporter, args=builder) for builder in builders]
    for thread in threads:
        thread.start()
    start.wait()
    while any(thread.is_alive() for thread in threads):
        check_tag()
    for thread in threads:
        thread.join()
    check_tag()
    assert errors == []
    assert seen and seen <= manifests
    reader = Store.open(str(tmp_path / "reader"), FETCHERS)
    cache = open_cache_source(parse_cache_from(f"type=registry,ref={ref}"))
    keys = cache.keys()
    assert keys in expected
    for key in keys:
        assert cache.fetch(key, reader) is not None
    assert reader.verify_all() == []
    for store, _ in builders:
        store.close()
    reader.close()
