"""What `record.py` (docker BuildKit) and `tests/integration/test_buildkit_ref.py` (pybuild) share.

A case is a directory `cases/<name>/`: a `Dockerfile`, its context files, and `case.json`
(`build_args`, `target`, `requires`: cases built first and tagged `ref-<name>`, `archives`: tars generated
into the context, `reference_dockerfile`: the Dockerfile BuildKit built when it differs, `unverified`: notes).
Both sides build the same prepared context on the same base, then reduce the image to one comparable
summary (`summarize`): the config's `config` section, the history entries the Dockerfile added
(`created_by`, `empty_layer`), the number of layers it added, and the filesystem changes against the base
(path, type, mode, uid, gid, size, symlink target, sha256, and the text of small text files so a
difference shows what differs), with times left out. Paths the base has and the image lacks are `removed`.

The base is `busybox:ref`: `tests/bases.make_busybox_rootfs` tarred with fixed modes, owners and times
(`write_base_tar`), so docker and pybuild import the same bytes.
"""

from __future__ import annotations

import difflib
import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.bases import make_busybox_rootfs

HERE = Path(__file__).resolve().parent
CASES = HERE / "cases"
EXPECTED = HERE / "expected"
BASE_NAME = "busybox:ref"
BASE_LAYERS = 1  # docker import and pybuild import both make one layer and one history entry
BASE_HISTORY = 1
CONFIG_KEYS = ("Env", "Cmd", "Entrypoint", "WorkingDir", "User", "ExposedPorts", "Volumes", "Labels",
               "StopSignal", "Healthcheck", "OnBuild", "Shell", "ArgsEscaped")
FIXED_MTIME = 1_600_000_000
TEXT_LIMIT = 1024


@dataclass(frozen=True)
class Case:
    """One reference case: its directory and the build settings from its case.json."""

    name: str
    path: Path
    build_args: dict[str, str] = field(default_factory=dict)
    target: str | None = None
    requires: tuple[str, ...] = ()
    archives: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    reference_dockerfile: str = "Dockerfile"
    unverified: tuple[str, ...] = ()

    @property
    def tag(self) -> str:
        return f"ref-{self.name}"


def load_case(name: str) -> Case:
    path = CASES / name
    spec_file = path / "case.json"
    spec: dict[str, Any] = json.loads(spec_file.read_text()) if spec_file.exists() else {}
    return Case(name, path, dict(spec.get("build_args", {})), spec.get("target"),
                tuple(spec.get("requires", ())), dict(spec.get("archives", {})),
                spec.get("reference_dockerfile", "Dockerfile"), tuple(spec.get("unverified", ())))


def case_names() -> list[str]:
    return sorted(p.name for p in CASES.iterdir() if (p / "Dockerfile").is_file())


# --- inputs -------------------------------------------------------------------------------------------------


def _base_member(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """Fixed owners, times and modes, so the tar does not depend on umask or when it was made."""
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = FIXED_MTIME
    if info.isdir():
        info.mode = 0o1777 if info.name == "tmp" else 0o755
    elif info.isfile():
        info.mode = 0o755 if info.name == "bin/busybox" else 0o644
    return info


def write_base_tar(out: Path) -> Path:
    """The busybox rootfs of tests/bases.py as a reproducible tar at `out`."""
    with tempfile.TemporaryDirectory(prefix="busybox-ref-") as tmp:
        root = make_busybox_rootfs(Path(tmp) / "rootfs")
        with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
            for child in sorted(root.iterdir()):
                tar.add(child, arcname=child.name, filter=_base_member)
    return out


def _archive_bytes(members: list[dict[str, Any]], gz: bool) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for m in members:
            info = tarfile.TarInfo(m["name"])
            info.mtime, info.uid, info.gid = FIXED_MTIME, m.get("uid", 0), m.get("gid", 0)
            info.mode = int(m.get("mode", "644"), 8)
            data = m.get("data", "").encode()
            if m["name"].endswith("/"):
                info.type = tarfile.DIRTYPE
            elif "symlink" in m:
                info.type, info.linkname = tarfile.SYMTYPE, m["symlink"]
            else:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    if not gz:
        return raw.getvalue()
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as f:
        f.write(raw.getvalue())
    return out.getvalue()


def prepare_context(case: Case, dest: Path) -> Path:
    """Copy the case into `dest` with normalised modes (0644 / 0755 for executables, dirs 0755) and times,
    and generate its archives; returns `dest`. Git keeps only the executable bit, and umask varies."""
    shutil.copytree(case.path, dest, symlinks=True, ignore=shutil.ignore_patterns("case.json"))
    for name, members in case.archives.items():
        (dest / name).write_bytes(_archive_bytes(members, name.endswith(".gz")))
    for dirpath, dirnames, filenames in os.walk(dest):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            if path.is_symlink():
                continue
            if path.is_dir():
                path.chmod(0o755)
            else:
                path.chmod(0o755 if os.access(path, os.X_OK) else 0o644)
            os.utime(path, (FIXED_MTIME, FIXED_MTIME))
    return dest


# --- reading images -----------------------------------------------------------------------------------------


def _member(tar: tarfile.TarFile, name: str) -> bytes:
    f = tar.extractfile(name)
    assert f is not None, name
    return f.read()


def read_docker_archive(path: Path) -> tuple[dict[str, Any], list[bytes]]:
    """(config, uncompressed layer tars) of the first image in a `docker save` archive."""
    with tarfile.open(path) as tar:
        manifest = json.loads(_member(tar, "manifest.json"))[0]
        config = json.loads(_member(tar, manifest["Config"]))
        layers = [_decompress(_member(tar, name)) for name in manifest["Layers"]]
    return config, layers


def read_oci_archive(path: Path) -> tuple[dict[str, Any], list[bytes]]:
    """(config, uncompressed layer tars) of the first manifest in an OCI archive (`pybuild save`)."""
    with tarfile.open(path) as tar:
        index = json.loads(_member(tar, "index.json"))

        def blob(digest: str) -> bytes:
            return _member(tar, "blobs/sha256/" + digest.split(":", 1)[1])

        manifest = json.loads(blob(index["manifests"][0]["digest"]))
        if "manifests" in manifest:  # an image index: take the first image
            manifest = json.loads(blob(manifest["manifests"][0]["digest"]))
        config = json.loads(blob(manifest["config"]["digest"]))
        layers = [_decompress(blob(layer["digest"])) for layer in manifest["layers"]]
    return config, layers


def _decompress(data: bytes) -> bytes:
    if data[:2] == b"\x1f\x8b":
        return gzip.decompress(data)
    if data[:4] == b"\x28\xb5\x2f\xfd":
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return data


# --- filesystems --------------------------------------------------------------------------------------------

Entry = dict[str, Any]
_TYPES = {tarfile.REGTYPE: "file", tarfile.AREGTYPE: "file", tarfile.DIRTYPE: "dir",
          tarfile.SYMTYPE: "symlink", tarfile.CHRTYPE: "char", tarfile.BLKTYPE: "block",
          tarfile.FIFOTYPE: "fifo"}


def _norm(name: str) -> str:
    """Tar member name -> absolute path without a trailing slash ("./a/" -> "/a", "." -> "/")."""
    name = name.removeprefix("./").strip("/")
    return "/" + name if name not in ("", ".") else "/"


def _apply_layer(fs: dict[str, Entry], layer: bytes) -> None:
    """Apply one layer tar (with OCI whiteouts) to the flattened `fs`."""
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        for info in tar:
            path = _norm(info.name)
            parent, _, base = path.rpartition("/")
            parent = parent or "/"
            if base == ".wh..wh..opq":
                for p in [p for p in fs if p.startswith(parent.rstrip("/") + "/")]:
                    del fs[p]
                continue
            if base.startswith(".wh."):
                gone = parent.rstrip("/") + "/" + base[4:]
                for p in [p for p in fs if p == gone or p.startswith(gone + "/")]:
                    del fs[p]
                continue
            if info.islnk():
                target = fs.get(_norm(info.linkname))
                fs[path] = dict(target) if target else {"type": "hardlink", "link": _norm(info.linkname)}
                continue
            if path in fs and fs[path]["type"] == "dir" and not info.isdir():
                for p in [p for p in fs if p.startswith(path + "/")]:
                    del fs[p]
            kind = _TYPES.get(info.type, f"other:{info.type!r}")
            # docker's tar writer keeps the file-type bits in the mode field; Python's does not
            mode = f"{info.mode & 0o7777:04o}"
            entry: Entry = {"type": kind, "mode": mode, "uid": info.uid, "gid": info.gid}
            if info.isfile():
                f = tar.extractfile(info)
                data = f.read() if f is not None else b""
                entry["size"], entry["sha256"] = len(data), hashlib.sha256(data).hexdigest()
                if len(data) <= TEXT_LIMIT and _is_text(data):
                    entry["text"] = data.decode()  # small text files: a difference shows what differs
            elif info.issym():
                entry["link"] = info.linkname
            fs[path] = entry


def _is_text(data: bytes) -> bool:
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return False
    return all(c.isprintable() or c in "\n\t" for c in text)


def flatten(layers: Iterable[bytes]) -> dict[str, Entry]:
    fs: dict[str, Entry] = {}
    for layer in layers:
        _apply_layer(fs, layer)
    fs.pop("/", None)
    return fs


def fs_changes(base: dict[str, Entry], final: dict[str, Entry]) -> tuple[list[Entry], list[str]]:
    """(entries new or changed against the base, paths of the base that are gone); times never count."""
    changed = [{"path": p, **e} for p, e in sorted(final.items()) if base.get(p) != e]
    removed = sorted(p for p in base if p not in final)
    return changed, removed


def base_filesystem(base_tar: Path) -> dict[str, Entry]:
    return flatten([base_tar.read_bytes()])


# --- summaries ----------------------------------------------------------------------------------------------


def config_section(config: dict[str, Any]) -> dict[str, Any]:
    """The `config` keys that the Dockerfile decides, without null values (null and absent mean the same)."""
    section = config.get("config") or {}
    return {k: section[k] for k in CONFIG_KEYS if section.get(k) is not None}


def summarize(config: dict[str, Any], layers: list[bytes], base_fs: dict[str, Entry]) -> dict[str, Any]:
    """The comparable summary of an image built on busybox:ref."""
    history = [{"created_by": h.get("created_by", ""), "empty_layer": bool(h.get("empty_layer", False))}
               for h in (config.get("history") or [])[BASE_HISTORY:]]
    changed, removed = fs_changes(base_fs, flatten(layers))
    return {"platform": {"os": config.get("os"), "architecture": config.get("architecture"),
                         **({"variant": config["variant"]} if config.get("variant") else {})},
            "config": config_section(config), "history": history, "layers": len(layers) - BASE_LAYERS,
            "filesystem": changed, "removed": removed}


def iter_differences(expected: dict[str, Any], actual: dict[str, Any]) -> Iterator[str]:
    """Human-readable differences between an expected summary and pybuild's, one per finding."""
    for key in ("platform", "layers", "removed"):
        if expected[key] != actual[key]:
            yield f"{key}: buildkit {expected[key]!r} != pybuild {actual[key]!r}"
    exp_cfg, act_cfg = expected["config"], actual["config"]
    for key in sorted(set(exp_cfg) | set(act_cfg)):
        if exp_cfg.get(key) != act_cfg.get(key):
            yield f"config.{key}: buildkit {exp_cfg.get(key)!r} != pybuild {act_cfg.get(key)!r}"
    yield from _history_differences(expected["history"], actual["history"])
    exp_fs = {e["path"]: e for e in expected["filesystem"]}
    act_fs = {e["path"]: e for e in actual["filesystem"]}
    for path in sorted(set(exp_fs) | set(act_fs)):
        e, a = exp_fs.get(path), act_fs.get(path)
        if e != a:
            yield f"fs {path}: buildkit {_short(e)} != pybuild {_short(a)}"


def _history_differences(expected: list[Entry], actual: list[Entry]) -> Iterator[str]:
    """Entries aligned by `created_by` (difflib), so one missing or extra entry is one finding.

    A recording with `created_by` null (not verified) is compared by position and `empty_layer` only."""
    if any(e["created_by"] is None for e in expected):
        if len(expected) != len(actual):
            yield f"history: {len(expected)} entries in buildkit, {len(actual)} in pybuild"
        for i, (e, a) in enumerate(zip(expected, actual)):
            if e["empty_layer"] != a["empty_layer"]:
                yield (f"history[{i}] {a['created_by']!r}: "
                       f"empty_layer buildkit {e['empty_layer']} != pybuild {a['empty_layer']}")
        return
    keys_e = [(e["created_by"], e["empty_layer"]) for e in expected]
    keys_a = [(a["created_by"], a["empty_layer"]) for a in actual]
    matcher = difflib.SequenceMatcher(a=keys_e, b=keys_a, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        if tag == "replace" and i2 - i1 == j2 - j1:
            for e, a in zip(expected[i1:i2], actual[j1:j2]):
                yield f"history: buildkit {_entry(e)} != pybuild {_entry(a)}"
            continue
        for e in expected[i1:i2]:
            yield f"history: buildkit has {_entry(e)}, pybuild has no such entry there"
        for a in actual[j1:j2]:
            yield f"history: pybuild has {_entry(a)}, buildkit has no such entry there"


def _entry(h: Entry) -> str:
    return repr(h["created_by"]) + (" (empty_layer)" if h["empty_layer"] else " (layer)")


def _short(entry: Entry | None) -> str:
    if entry is None:
        return "(absent)"
    return json.dumps({k: v for k, v in entry.items() if k != "path"}, sort_keys=True)
