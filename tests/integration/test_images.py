"""Images in the store through the CLI: import, load, save, images, inspect, history, tag, rmi, du, prune.

The base image is a busybox rootfs made from Debian's `busybox-static` (/bin/busybox), imported with
`pybuild import`. Every test gets a fresh store (tests/conftest.py points PYBUILD_ROOT into a new HOME).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from pybuild.cli.main import main
from tests.bases import need

BUSYBOX = "/bin/busybox"
EPOCH = "1700000000"


def _add(tar: tarfile.TarFile, name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", mode: int = 0o644,
         link: str = "", mtime: int = 1600000000) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname, info.mtime = kind, mode, link, mtime
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def rootfs_members(busybox: bytes) -> list[tuple[str, bytes, bytes, int, str]]:
    """(name, type, data, mode, link) of the busybox rootfs, in a deliberately unsorted order."""
    members = [("etc/passwd", tarfile.REGTYPE, b"root:x:0:0:root:/root:/bin/sh\n", 0o644, ""),
               ("bin/busybox", tarfile.REGTYPE, busybox, 0o755, ""),
               ("etc", tarfile.DIRTYPE, b"", 0o755, ""), ("bin", tarfile.DIRTYPE, b"", 0o755, ""),
               ("tmp", tarfile.DIRTYPE, b"", 0o1777, ""), ("root", tarfile.DIRTYPE, b"", 0o700, "")]
    members += [(f"bin/{tool}", tarfile.SYMTYPE, b"", 0o777, "busybox")
                for tool in ("sh", "ls", "echo", "cat", "true")]
    return members


def write_rootfs(path: Path, busybox: bytes, *, reverse: bool = False, prefix: str = "") -> Path:
    members = rootfs_members(busybox)
    members.sort(key=lambda m: m[0], reverse=reverse)
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for name, kind, data, mode, link in members:
            _add(tar, prefix + name, kind, data, mode, link)
    return path


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A busybox rootfs tar (bin/busybox, sh/ls/echo/cat links, etc/passwd) from Debian's busybox-static."""
    need(os.path.isfile(BUSYBOX), f"{BUSYBOX} missing (apt-get install busybox-static)")
    with open(BUSYBOX, "rb") as f:
        busybox = f.read()
    return write_rootfs(tmp_path_factory.mktemp("rootfs") / "busybox.tar", busybox, prefix="./")


class CLI:
    """Runs `pybuild` in-process and returns (exit code, stdout, stderr)."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = main(list(argv))
        out, err = self.capsys.readouterr()
        return code, out, err

    def ok(self, *argv: str) -> str:
        code, out, err = self(*argv)
        assert code == 0, f"pybuild {' '.join(argv)} failed ({code}): {err}"
        return out

    def fails(self, *argv: str) -> str:
        """Run a command that must fail as a user error: exit 1, one `error:` line (plus an optional hint)."""
        code, _, err = self(*argv)
        assert code == 1, f"pybuild {' '.join(argv)}: exit {code}, stderr {err!r}"
        lines = err.strip().splitlines()
        assert lines and lines[0].startswith("error: "), err
        assert all(line.startswith("hint: ") for line in lines[1:]), err
        assert "Traceback" not in err
        return lines[0]

    def inspect(self, name: str) -> dict[str, object]:
        doc: dict[str, object] = json.loads(self.ok("inspect", name))
        return doc


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> CLI:
    return CLI(capsys)


@pytest.fixture
def busybox(cli: CLI, busybox_rootfs: Path) -> str:
    """The busybox image imported into this test's store as `busybox:test`."""
    cli.ok("import", str(busybox_rootfs), "busybox:test")
    return "busybox:test"


def store_root() -> Path:
    return Path(os.environ["PYBUILD_ROOT"])


def blob_names() -> set[str]:
    blobs = store_root() / "blobs" / "sha256"
    return set(os.listdir(blobs)) if blobs.is_dir() else set()


def read_member(archive: Path, name: str) -> bytes:
    with tarfile.open(archive) as tar:
        member = tar.extractfile(name)
        assert member is not None
        return member.read()


# --- import -----------------------------------------------------------------------------------------------


def test_import_makes_a_one_layer_image(cli: CLI, busybox: str) -> None:
    doc = cli.inspect(busybox)
    config = doc["config"]
    assert isinstance(config, dict)
    assert doc["id"] == json.loads(cli.ok("images", "--json"))[0]["id"]
    assert str(doc["digest"]).startswith("sha256:") and str(doc["id"]).startswith("sha256:")
    assert len(config["rootfs"]["diff_ids"]) == 1
    assert config["history"][0]["created_by"] == "pybuild import busybox.tar"
    assert config["os"] == "linux" and config["architecture"]
    manifest = doc["manifest"]
    assert isinstance(manifest, dict)
    assert manifest["layers"][0]["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    assert doc["repoTags"] == ["busybox:test"]
    out = cli.ok("images")
    assert "busybox" in out and "test" in out and str(doc["id"])[7:19] in out
    assert "pybuild import busybox.tar" in cli.ok("history", busybox)


def test_import_is_deterministic_across_stores(cli: CLI, busybox_rootfs: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)
    digests = []
    for name in ("one", "two"):
        monkeypatch.setenv("PYBUILD_ROOT", str(tmp_path / name))
        cli.ok("import", str(busybox_rootfs), "bb:1")
        doc = cli.inspect("bb:1")
        digests.append((doc["digest"], doc["id"]))
        assert doc["created"] == "2023-11-14T22:13:20Z"
    assert digests[0] == digests[1]


def test_import_normalises_order_and_compression(cli: CLI, busybox_rootfs: Path, tmp_path: Path) -> None:
    """Unsorted, gzip and zstd inputs with the same files give the same layer (diffID)."""
    import zstandard

    data = Path(BUSYBOX).read_bytes()
    unsorted = write_rootfs(tmp_path / "unsorted.tar", data, reverse=True)
    gz = tmp_path / "rootfs.tar.gz"
    gz.write_bytes(gzip.compress(busybox_rootfs.read_bytes()))
    zst = tmp_path / "rootfs.tar.zst"
    zst.write_bytes(zstandard.ZstdCompressor().compress(busybox_rootfs.read_bytes()))
    diff_ids = set()
    for i, path in enumerate((busybox_rootfs, unsorted, gz, zst)):
        cli.ok("import", str(path), f"x:{i}")
        config = cli.inspect(f"x:{i}")["config"]
        assert isinstance(config, dict)
        diff_ids.add(config["rootfs"]["diff_ids"][0])
    assert len(diff_ids) == 1


def test_import_keeps_hardlinks_when_reordered(cli: CLI, tmp_path: Path) -> None:
    path = tmp_path / "links.tar"
    with tarfile.open(path, "w") as tar:
        _add(tar, "z/file", data=b"same")
        _add(tar, "a/link", tarfile.LNKTYPE, link="z/file")
        _add(tar, "a", tarfile.DIRTYPE, mode=0o755)
        _add(tar, "z", tarfile.DIRTYPE, mode=0o755)
    cli.ok("import", str(path), "links:1")
    out = tmp_path / "flat.tar"
    _export("links:1", f"type=tar,dest={out}")
    with tarfile.open(out) as tar:
        names = {m.name: m for m in tar.getmembers()}
        assert names["a/link"].isfile() or names["a/link"].islnk()
        assert set(names) >= {"a", "a/link", "z", "z/file"}


@pytest.mark.parametrize("content", [b"", b"not a tar at all" * 100, b"\x1f\x8b\x08\x00broken gzip"])
def test_import_rejects_bad_input(cli: CLI, tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.tar"
    path.write_bytes(content)
    before = blob_names()
    message = cli.fails("import", str(path), "bad:1")
    assert "bad.tar" in message
    assert blob_names() == before
    cli.fails("inspect", "bad:1")


def test_import_rejects_truncated_tar(cli: CLI, busybox_rootfs: Path, tmp_path: Path) -> None:
    path = tmp_path / "short.tar"
    path.write_bytes(busybox_rootfs.read_bytes()[:300_000])
    assert "truncated" in cli.fails("import", str(path), "short:1")
    assert blob_names() == set()


def test_import_rejects_dotdot(cli: CLI, tmp_path: Path) -> None:
    path = tmp_path / "evil.tar"
    with tarfile.open(path, "w") as tar:
        _add(tar, "../evil", data=b"x")
    assert "unsafe path" in cli.fails("import", str(path), "evil:1")


def test_import_bad_name_and_missing_file(cli: CLI, busybox_rootfs: Path) -> None:
    assert "invalid reference" in cli.fails("import", str(busybox_rootfs), "Bad Name")
    assert "no such file" in cli.fails("import", "/nonexistent.tar", "x:1")


# --- save / export ------------------------------------------------------------------------------------------


def _export(name: str, output: str) -> None:
    from pybuild.export.exporters import export_image
    from pybuild.export.outputs import parse_output
    from pybuild.store.images import resolve_image
    from pybuild.store.store import Store

    with Store.open() as store:
        export_image(store, resolve_image(store, name), parse_output(output))


def test_save_oci_layout(cli: CLI, busybox: str, tmp_path: Path) -> None:
    out = tmp_path / "bb.tar"
    cli.ok("save", busybox, "-o", str(out))
    with tarfile.open(out) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names)
    assert {"oci-layout", "index.json", "blobs", "blobs/sha256"} <= set(names)
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and not m.uname for m in members)
    index = json.loads(read_member(out, "index.json"))
    entry = index["manifests"][0]
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == "test"
    assert entry["annotations"]["io.containerd.image.name"] == "docker.io/library/busybox:test"
    assert entry["digest"] == cli.inspect(busybox)["digest"]
    for m in members:
        if m.name.startswith("blobs/sha256/") and m.isfile():
            assert "sha256:" + hashlib.sha256(read_member(out, m.name)).hexdigest() == "sha256:" + m.name[13:]


def test_save_twice_gives_identical_bytes(cli: CLI, busybox: str, tmp_path: Path) -> None:
    for fmt in ("oci", "docker"):
        a, b = tmp_path / f"a-{fmt}.tar", tmp_path / f"b-{fmt}.tar"
        cli.ok("save", "--format", fmt, busybox, "-o", str(a))
        cli.ok("save", "--format", fmt, busybox, "-o", str(b))
        assert a.read_bytes() == b.read_bytes()


def test_save_docker_archive(cli: CLI, busybox: str, tmp_path: Path) -> None:
    out = tmp_path / "bb.tar"
    cli.ok("save", "--format", "docker", busybox, "-o", str(out))
    manifest = json.loads(read_member(out, "manifest.json"))
    assert manifest[0]["RepoTags"] == ["busybox:test"]
    config = read_member(out, manifest[0]["Config"])
    assert "sha256:" + hashlib.sha256(config).hexdigest() == cli.inspect(busybox)["id"]
    layer = read_member(out, manifest[0]["Layers"][0])
    assert layer[:2] == b"\x1f\x8b"
    index = json.loads(read_member(out, "index.json"))
    inner = json.loads(read_member(out, "blobs/sha256/" + index["manifests"][0]["digest"][7:]))
    assert inner["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert inner["layers"][0]["mediaType"] == "application/vnd.docker.image.rootfs.diff.tar.gzip"
    assert json.loads(read_member(out, "repositories")) == {"busybox": {"test": cli.inspect(busybox)["id"][7:]}}


def test_export_compresses_once(cli: CLI, busybox: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cli.ok("save", "--compression", "zstd", busybox, "-o", str(tmp_path / "one.tar"))
    import pybuild.store.compress as compress_module

    def refuse(*args: object, **kwargs: object) -> object:
        raise AssertionError("compressed a second time")

    monkeypatch.setattr(compress_module, "compress", refuse)
    cli.ok("save", "--compression", "zstd", busybox, "-o", str(tmp_path / "two.tar"))
    cli.ok("save", busybox, "-o", str(tmp_path / "gzip.tar"))  # the import made the gzip blob already
    assert (tmp_path / "one.tar").read_bytes() == (tmp_path / "two.tar").read_bytes()
    index = json.loads(read_member(tmp_path / "one.tar", "index.json"))
    manifest = json.loads(read_member(tmp_path / "one.tar", "blobs/sha256/" + index["manifests"][0]["digest"][7:]))
    assert manifest["layers"][0]["mediaType"] == "application/vnd.oci.image.layer.v1.tar+zstd"


def test_save_uncompressed_and_levels(cli: CLI, busybox: str, tmp_path: Path) -> None:
    out = tmp_path / "plain.tar"
    cli.ok("save", "--compression", "uncompressed", busybox, "-o", str(out))
    config = cli.inspect(busybox)["config"]
    assert isinstance(config, dict)
    assert "blobs/sha256/" + config["rootfs"]["diff_ids"][0][7:] in tarfile.open(out).getnames()
    cli.ok("save", "--compression", "gzip", "--compression-level", "1", busybox, "-o", str(tmp_path / "l1.tar"))
    assert "0..9" in cli.fails("save", "--compression-level", "12", busybox, "-o", str(tmp_path / "x.tar"))
    assert "OCI media types" in cli.fails("save", "--format", "docker", "--compression", "zstd", busybox,
                                          "-o", str(tmp_path / "x.tar"))
    assert not (tmp_path / "x.tar").exists()


def test_export_types(cli: CLI, busybox: str, tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    _export(busybox, f"type=oci,dest={layout},tar=false")
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    assert (layout / "index.json").is_file() and (layout / "blobs" / "sha256").is_dir()

    docker_types = tmp_path / "dt.tar"
    _export(busybox, f"type=oci,dest={docker_types},oci-mediatypes=false")
    index = json.loads(read_member(docker_types, "index.json"))
    assert index["manifests"][0]["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"

    rootfs = tmp_path / "rootfs"
    _export(busybox, f"type=local,dest={rootfs}")
    assert (rootfs / "bin" / "busybox").read_bytes() == Path(BUSYBOX).read_bytes()
    assert os.readlink(rootfs / "bin" / "sh") == "busybox"
    assert (rootfs / "etc" / "passwd").read_text().startswith("root:")

    flat, again = tmp_path / "flat.tar", tmp_path / "again.tar"
    _export(busybox, f"type=tar,dest={flat}")
    _export(busybox, f"type=tar,dest={again}")
    assert flat.read_bytes() == again.read_bytes()
    with tarfile.open(flat) as tar:
        assert {"bin/busybox", "bin/sh", "etc/passwd"} <= set(tar.getnames())

    from pybuild.errors import ConfigError

    with pytest.raises(ConfigError, match="not empty"):
        _export(busybox, f"type=local,dest={rootfs}")

    _export(busybox, "type=image,name=copy:1")
    assert cli.inspect("copy:1")["digest"] == cli.inspect(busybox)["digest"]


# --- load ---------------------------------------------------------------------------------------------------


def test_load_oci_and_docker(cli: CLI, busybox: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = cli.inspect(busybox)
    oci, docker = tmp_path / "oci.tar", tmp_path / "docker.tar"
    cli.ok("save", busybox, "-o", str(oci))
    cli.ok("save", "--format", "docker", busybox, "-o", str(docker))
    for archive in (oci, docker):
        monkeypatch.setenv("PYBUILD_ROOT", str(tmp_path / f"store-{archive.stem}"))
        assert cli.ok("load", "-i", str(archive)).strip() == "Loaded image: busybox:test"
        after = cli.inspect(busybox)
        assert after["id"] == before["id"]
        if archive is oci:
            assert after["digest"] == before["digest"]
        again = tmp_path / f"again-{archive.name}"
        cli.ok("save", busybox, "-o", str(again))
        assert again.read_bytes() == oci.read_bytes()  # same manifest, same blobs, same bytes
        assert "verify:" in cli.ok("du", "--verify")


def test_load_layout_directory_and_gzipped_archive(cli: CLI, busybox: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    layout = tmp_path / "layout"
    _export(busybox, f"type=oci,dest={layout},tar=false")
    docker = tmp_path / "docker.tar"
    cli.ok("save", "--format", "docker", busybox, "-o", str(docker))
    gz = tmp_path / "docker.tar.gz"
    gz.write_bytes(gzip.compress(docker.read_bytes()))
    for source in (layout, gz):
        monkeypatch.setenv("PYBUILD_ROOT", str(tmp_path / f"store-{source.name}"))
        cli.ok("load", "-i", str(source))
        assert cli.inspect(busybox)["repoTags"] == ["busybox:test"]


def test_load_legacy_docker_archive(cli: CLI, busybox_rootfs: Path, tmp_path: Path) -> None:
    """`docker save` before docker 25: `<hex>.json` config, `<id>/layer.tar` uncompressed layers."""
    layer = busybox_rootfs.read_bytes()
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
                         "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()
    config_hex = hashlib.sha256(config).hexdigest()
    archive = tmp_path / "legacy.tar"
    with tarfile.open(archive, "w") as tar:
        _add(tar, f"{config_hex}.json", data=config)
        _add(tar, "abc123/layer.tar", data=layer)
        _add(tar, "manifest.json", data=json.dumps([{"Config": f"{config_hex}.json", "RepoTags": ["legacy:v1"],
                                                     "Layers": ["abc123/layer.tar"]}]).encode())
    cli.ok("load", "-i", str(archive))
    doc = cli.inspect("legacy:v1")
    assert doc["id"] == "sha256:" + config_hex
    assert doc["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    out = tmp_path / "out.tar"
    cli.ok("save", "legacy:v1", "-o", str(out))  # exported with gzip layers and OCI types
    index = json.loads(read_member(out, "index.json"))
    manifest = json.loads(read_member(out, "blobs/sha256/" + index["manifests"][0]["digest"][7:]))
    assert manifest["layers"][0]["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"


def _rewrite(archive: Path, out: Path, change: dict[str, bytes | None]) -> None:
    """Copy a tar, replacing (or, for None, dropping) the named members."""
    with tarfile.open(archive) as src, tarfile.open(out, "w") as dst:
        for member in src.getmembers():
            if member.name in change:
                data = change[member.name]
                if data is None:
                    continue
                member.size = len(data)
                dst.addfile(member, io.BytesIO(data))
            else:
                dst.addfile(member, src.extractfile(member) if member.isfile() else None)


def _layer_member(archive: Path) -> str:
    index = json.loads(read_member(archive, "index.json"))
    manifest = json.loads(read_member(archive, "blobs/sha256/" + index["manifests"][0]["digest"][7:]))
    return "blobs/sha256/" + str(manifest["layers"][0]["digest"])[7:]


def test_load_rejects_bad_archives(cli: CLI, busybox: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = tmp_path / "good.tar"
    cli.ok("save", busybox, "-o", str(good))
    docker = tmp_path / "docker.tar"
    cli.ok("save", "--format", "docker", busybox, "-o", str(docker))
    layer_name = _layer_member(good)
    layer = read_member(good, layer_name)
    index = json.loads(read_member(good, "index.json"))
    manifest_name = "blobs/sha256/" + index["manifests"][0]["digest"][7:]
    cases: dict[str, tuple[Path, dict[str, bytes | None]]] = {
        "digest mismatch": (good, {layer_name: gzip.compress(gzip.decompress(layer), compresslevel=1)}),
        "gzip stream": (good, {layer_name: layer[:-10] + bytes(10)}),
        "diffID": (good, {layer_name: gzip.compress(gzip.decompress(layer) + bytes(1024))}),
        "missing": (good, {layer_name: None}),
        "not valid JSON": (docker, {"manifest.json": b"[{", "index.json": None}),
        "mismatch for blobs": (good, {manifest_name: b'{"schemaVersion": 2}'}),
        "neither an OCI layout": (good, {"index.json": None}),
    }
    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"\x00garbage" * 1000)
    monkeypatch.setenv("PYBUILD_ROOT", str(tmp_path / "empty-store"))
    for fragment, (source, change) in cases.items():
        bad = tmp_path / f"{fragment.replace(' ', '-')}.tar"
        _rewrite(source, bad, change)
        message = cli.fails("load", "-i", str(bad))
        assert fragment in message, message
    for bad in (truncated, garbage, tmp_path / "nope.tar"):
        cli.fails("load", "-i", str(bad))
    assert blob_names() == set()
    assert json.loads(cli.ok("images", "--json")) == []


def test_load_rejects_invalid_manifest(cli: CLI, busybox: str, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    layout = tmp_path / "layout"
    _export(busybox, f"type=oci,dest={layout},tar=false")
    index = json.loads((layout / "index.json").read_text())
    bad_manifest = json.dumps({"schemaVersion": 2, "config": {"digest": "nope"}, "layers": []}).encode()
    digest = "sha256:" + hashlib.sha256(bad_manifest).hexdigest()
    (layout / "blobs" / "sha256" / digest[7:]).write_bytes(bad_manifest)
    index["manifests"][0].update(digest=digest, size=len(bad_manifest))
    (layout / "index.json").write_text(json.dumps(index))
    monkeypatch.setenv("PYBUILD_ROOT", str(tmp_path / "empty-store"))
    assert "invalid manifest" in cli.fails("load", "-i", str(layout))
    assert blob_names() == set()


# --- names, removal, du, prune --------------------------------------------------------------------------------


def test_tag_rmi_and_unknown_names(cli: CLI, busybox: str) -> None:
    cli.ok("tag", busybox, "other/name:v2")
    doc = cli.inspect("other/name:v2")
    assert doc["repoTags"] == ["busybox:test", "other/name:v2"]
    image_id = str(doc["id"])
    assert cli.inspect(image_id[7:19])["digest"] == doc["digest"]
    assert cli.inspect(str(doc["digest"]))["id"] == image_id
    assert "tagged 2 times" in cli.fails("rmi", image_id[7:19])
    assert "Untagged: other/name:v2" in cli.ok("rmi", "other/name:v2")
    assert "no such image: nothing:here" in cli.fails("inspect", "nothing:here")
    assert "no such image" in cli.fails("rmi", "nothing:here")
    assert "no such image" in cli.fails("tag", "nothing:here", "x:1")
    assert "no such image" in cli.fails("save", "nothing:here", "-o", "/tmp/never.tar")
    assert "no such image" in cli.fails("history", "nothing:here")
    assert "invalid" in cli.fails("tag", busybox, "Upper:1")
    cli.ok("rmi", busybox)
    assert json.loads(cli.ok("images", "--json")) == []


def test_rmi_removes_what_it_can_and_reports_the_rest(cli: CLI, busybox: str) -> None:
    cli.ok("tag", busybox, "a:1")
    code, out, err = cli("rmi", "a:1", "missing:1", "b:2")
    assert code == 1 and out == "Untagged: a:1\n"
    assert [line for line in err.splitlines() if line.startswith("error: ")] == [
        "error: no such image: missing:1", "error: no such image: b:2"]
    assert [row["names"] for row in json.loads(cli.ok("images", "--json"))] == [[busybox]]


def test_tag_names_follow_the_reference_grammar(cli: CLI, busybox: str) -> None:
    """docker's rules (distribution/reference): the path is lower case; a first component with an upper-case
    letter is a registry host (moby/moby#20056), so `UPPER/bad:tag` is a valid name, as docker takes it."""
    for bad in ("UPPER:tag", "upper/Bad:tag", "UPPER/Bad:tag", "a/b:", "a//b", "x:-tag", "a:b@sha256:12"):
        assert cli.fails("tag", busybox, bad).startswith("error: invalid reference format: "), bad
    cli.ok("tag", busybox, "UPPER/bad:tag")
    assert cli.inspect("UPPER/bad:tag")["repoTags"] == ["UPPER/bad:tag", busybox]


def test_du_verify_and_prune(cli: CLI, busybox: str) -> None:
    out = cli.ok("du", "--verify")
    assert "verify:" in out and "ok" in out
    assert cli.ok("prune").startswith("removed 0 cache entries, 0 blob(s)")
    cli.ok("rmi", busybox)
    assert "0 blob(s)" in cli.ok("prune", "--filter", "until=24h")
    report = cli.ok("prune", "--keep-storage", "0")
    assert "removed 0 cache entries, 0 blob(s)" not in report
    assert blob_names() == set()
    assert "invalid size" in cli.fails("prune", "--keep-storage", "lots")
    assert "invalid prune filter" in cli.fails("prune", "--filter", "label=x")
    assert "invalid prune filter" in cli.fails("prune", "--filter", "until=soon")


def test_du_verify_finds_corruption(cli: CLI, busybox: str) -> None:
    config = cli.inspect(busybox)["config"]
    assert isinstance(config, dict)
    path = store_root() / "blobs" / "sha256" / config["rootfs"]["diff_ids"][0][7:]
    data = bytearray(path.read_bytes())
    data[1000] ^= 0xFF
    os.chmod(path, 0o644)
    path.write_bytes(bytes(data))
    code, _, err = cli("du", "--verify")
    assert code == 1 and "corrupt blob" in err
    assert "corrupt" in cli.fails("save", "--compression", "zstd", busybox, "-o", str(store_root() / "x.tar"))


def test_save_failure_leaves_nothing(cli: CLI, busybox: str, tmp_path: Path) -> None:
    doc = cli.inspect(busybox)
    manifest = doc["manifest"]
    assert isinstance(manifest, dict)
    layer = store_root() / "blobs" / "sha256" / str(manifest["layers"][0]["digest"])[7:]
    shutil.copy(layer, tmp_path / "keep")
    layer.write_bytes(layer.read_bytes()[:-1] + b"!")
    out = tmp_path / "out.tar"
    assert "corrupt" in cli.fails("save", busybox, "-o", str(out))
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".pybuild-export")] == []


def test_image_export_with_other_compression_is_kept(cli: CLI, busybox: str) -> None:
    """`type=image` with zstd stores a second manifest; prune keeps everything both tags reach."""
    _export(busybox, "type=image,name=zbox:1,compression=zstd")
    original, zstd = cli.inspect(busybox), cli.inspect("zbox:1")
    assert zstd["id"] == original["id"] and zstd["digest"] != original["digest"]
    manifest = zstd["manifest"]
    assert isinstance(manifest, dict)
    assert manifest["layers"][0]["mediaType"].endswith("+zstd")
    cli.ok("rmi", busybox)
    cli.ok("prune", "--keep-storage", "0")
    assert "ok" in cli.ok("du", "--verify")
    rootfs = store_root().parent / "zrootfs"
    _export("zbox:1", f"type=local,dest={rootfs}")
    assert (rootfs / "bin" / "busybox").is_file()
