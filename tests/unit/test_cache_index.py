"""Unit tests for pybuild.cache.index (entries, last-used, LRU prune, roots, processes) and
pybuild.cache.explain (a reason for each kind of change)."""

from __future__ import annotations

import hashlib
import multiprocessing
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pybuild.cache.explain import MAX_FILES, explain_miss
from pybuild.cache.index import ROOT_KIND, CacheIndex, CacheResult
from pybuild.cache.keys import CacheKeyInput, cache_key, describe
from pybuild.store.store import Store


def sha(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store.open(str(tmp_path / "store"))
    yield s
    s.close()


@pytest.fixture
def cache(store: Store) -> CacheIndex:
    return CacheIndex(store)


def desc(step: str = "s0/1", **definition: Any) -> dict[str, Any]:
    return describe(CacheKeyInput("exec", {"command": step, **definition}, step_id=step))


# index


def test_round_trip(cache: CacheIndex, store: Store) -> None:
    key, layer = sha("k"), sha("layer")
    assert cache.lookup(key) is None
    result = CacheResult.make(diff_id=layer, config={"Env": ["A=1"]}, size=10)
    stored = cache.record(key, result, desc())
    assert stored == result
    hit = cache.lookup(key)
    assert hit == result and hit is not None and hit.config_delta() == {"Env": ["A=1"]}
    entry = cache.entry(key)
    assert entry is not None and entry.step_id == "s0/1" and entry.kind == "exec"
    assert entry.described() == desc()
    assert [(r.key, r.digest) for r in store.index.roots(ROOT_KIND)] == [(key, layer)]
    assert layer in store.referenced()


def test_snapshot_only_result_has_no_root(cache: CacheIndex, store: Store) -> None:
    cache.record(sha("k"), CacheResult.make(snapshot="snap-1"), desc())
    assert cache.lookup(sha("k")) == CacheResult(None, "snap-1", "{}", 0)
    assert store.index.roots(ROOT_KIND) == []


def test_size_from_store_layer_row(cache: CacheIndex, store: Store) -> None:
    store.index.record_layer(sha("layer"), 1234)
    assert cache.record(sha("k"), CacheResult.make(diff_id=sha("layer")), desc()).size == 1234


def test_record_is_idempotent_first_result_wins(cache: CacheIndex, store: Store) -> None:
    key = sha("k")
    first = cache.record(key, CacheResult.make(diff_id=sha("a"), size=1), desc())
    again = cache.record(key, CacheResult.make(diff_id=sha("b"), size=2), desc())
    assert again == first and cache.lookup(key) == first
    assert len(cache.entries()) == 1
    assert [r.digest for r in store.index.roots(ROOT_KIND)] == [sha("a")]


def test_lookup_touches_last_used(cache: CacheIndex) -> None:
    key = sha("k")
    cache.record(key, CacheResult.make(diff_id=sha("a")), desc())
    entry = cache.entry(key)
    assert entry is not None
    time.sleep(0.01)
    cache.lookup(key, touch=False)
    untouched = cache.entry(key)
    assert untouched is not None and untouched.last_used == entry.last_used
    cache.lookup(key)
    touched = cache.entry(key)
    assert touched is not None and touched.last_used > entry.last_used and touched.created == entry.created


def test_remove_drops_root(cache: CacheIndex, store: Store) -> None:
    cache.record(sha("k"), CacheResult.make(diff_id=sha("a")), desc())
    assert cache.remove(sha("k")) is True
    assert cache.remove(sha("k")) is False
    assert cache.lookup(sha("k")) is None and store.index.roots(ROOT_KIND) == []


def test_prune_lru_order_roots_and_shared_layers(cache: CacheIndex, store: Store) -> None:
    keys = [sha(f"k{i}") for i in range(4)]
    layers = [sha("l0"), sha("l1"), sha("l1"), sha("l3")]  # k1 and k2 share a layer
    for key, layer in zip(keys, layers):
        cache.record(key, CacheResult.make(diff_id=layer, size=100), desc())
        time.sleep(0.005)
    cache.lookup(keys[0])  # k0 becomes the most recently used: order k1, k2, k3, k0
    assert cache.total_bytes() == 300
    assert cache.prune_lru(300) == []
    # Removing k1 frees nothing (k2 still uses l1), so k2 goes too; then 200 bytes remain.
    assert cache.prune_lru(250) == [keys[1], keys[2]]
    assert [e.key for e in cache.entries()] == [keys[3], keys[0]]
    assert sorted(r.key for r in store.index.roots(ROOT_KIND)) == sorted([keys[0], keys[3]])
    assert cache.prune_lru(0) == [keys[3], keys[0]]
    assert cache.entries() == [] and store.index.roots(ROOT_KIND) == []


def test_prune_lru_lets_store_prune_free_blobs(cache: CacheIndex, store: Store) -> None:
    layer, size = store.put_bytes(b"layer bytes")
    cache.record(sha("k"), CacheResult.make(diff_id=layer, size=size), desc())
    assert store.prune().removed == ()
    cache.prune_lru(0)
    assert store.prune().removed == (layer,)


def _hammer(root: str, worker: int, count: int) -> None:
    with Store.open(root) as store:
        cache = CacheIndex(store)
        for i in range(count):
            # Both workers record the same keys, each with its own layer: the first one must win.
            cache.record(sha(f"k{i}"), CacheResult.make(diff_id=sha(f"w{worker}-{i}"), size=1),
                         desc(f"s/{i}"))
            assert cache.lookup(sha(f"k{i}")) is not None


def test_concurrent_record_from_two_processes(tmp_path: Path) -> None:
    root = str(tmp_path / "store")
    Store.open(root).close()
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_hammer, args=(root, n, 60)) for n in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    with Store.open(root) as store:
        cache = CacheIndex(store)
        entries = {e.key: e for e in cache.entries()}
        assert len(entries) == 60
        roots = {r.key: r.digest for r in store.index.roots(ROOT_KIND)}
        assert roots == {k: e.result.diff_id for k, e in entries.items()}


# explain


def exec_input(step: str = "stage0/2", command: str = "make", args: dict[str, str] | None = None,
               env: dict[str, str] | None = None, parent: str = "p") -> CacheKeyInput:
    definition = {"command": ["/bin/sh", "-c", command], "env": env or {"PATH": "/bin"},
                  "build_args": args or {"VERSION": "1"}}
    return CacheKeyInput("exec", definition, (sha(parent),), step_id=step)


def copy_input(files: dict[str, str], step: str = "stage0/3") -> CacheKeyInput:
    return CacheKeyInput("file", {"action": "copy", "dest": "/app/"}, (sha("p"),),
                         tuple(files.items()), step)


def remember(cache: CacheIndex, item: CacheKeyInput) -> None:
    cache.record(cache_key(item), CacheResult.make(snapshot="s"), describe(item))


def test_explain_no_earlier_entry(cache: CacheIndex) -> None:
    assert explain_miss(describe(exec_input()), cache) == [
        "no earlier build of this step (stage0/2) is in the cache"]
    remember(cache, exec_input(step="stage1/2"))  # another step does not count
    assert "no earlier build" in explain_miss(describe(exec_input()), cache)[0]


def test_explain_file_changes(cache: CacheIndex) -> None:
    remember(cache, copy_input({"a.txt": "xxh3:1", "b.txt": "xxh3:2", "gone.txt": "xxh3:3"}))
    new = copy_input({"a.txt": "xxh3:1", "b.txt": "xxh3:9", "new.txt": "xxh3:4"})
    assert explain_miss(describe(new), cache) == [
        "file changed: b.txt", "file added: new.txt", "file removed: gone.txt"]


def test_explain_caps_file_list(cache: CacheIndex) -> None:
    remember(cache, copy_input({f"f{i}": "xxh3:1" for i in range(30)}))
    reasons = explain_miss(describe(copy_input({f"f{i}": "xxh3:2" for i in range(30)})), cache)
    assert len(reasons) == MAX_FILES + 1 and reasons[-1] == "… and 10 more files"


def test_explain_build_arg_changes(cache: CacheIndex) -> None:
    remember(cache, exec_input(args={"VERSION": "1", "API_TOKEN": "old-secret", "GONE": "x"}))
    new = exec_input(args={"VERSION": "2", "API_TOKEN": "new-secret", "ADDED": "y"})
    reasons = explain_miss(describe(new), cache)
    assert reasons == ["build arg ADDED is now used", "build arg API_TOKEN changed",
                       "build arg GONE is no longer used", "build arg VERSION changed from '1' to '2'"]
    assert not any("secret" in r for r in reasons)


def test_explain_instruction_and_env_changes(cache: CacheIndex) -> None:
    remember(cache, exec_input(command="make", env={"PATH": "/bin", "OLD": "1"}))
    new = exec_input(command="make test", env={"PATH": "/usr/bin", "NEW": "1"})
    assert explain_miss(describe(new), cache) == [
        "the instruction changed (command)", "environment variable NEW was added",
        "environment variable OLD was removed", "environment variable PATH changed"]


def test_explain_parent_changed(cache: CacheIndex) -> None:
    remember(cache, exec_input(parent="old"))
    assert explain_miss(describe(exec_input(parent="new")), cache) == ["a previous step changed"]


def test_explain_picks_most_similar_entry(cache: CacheIndex) -> None:
    remember(cache, exec_input(command="other", args={"VERSION": "9"}, parent="x"))
    time.sleep(0.005)
    remember(cache, exec_input(args={"VERSION": "1"}, parent="old"))  # differs only by its parent
    time.sleep(0.005)
    remember(cache, exec_input(command="third", parent="y"))
    assert explain_miss(describe(exec_input(parent="new")), cache) == ["a previous step changed"]


def test_explain_other_fields(cache: CacheIndex) -> None:
    old = CacheKeyInput("exec", {"command": "x", "network": "default"}, step_id="s/1")
    remember(cache, old)
    new = CacheKeyInput("exec", {"command": "x", "network": "none"}, step_id="s/1")
    assert explain_miss(describe(new), cache) == ["the step's network changed"]
