"""OCI/docker image documents: digests and canonical JSON, media-type mapping, platforms, descriptors,
manifests and indexes (image configs and times: test_image_config.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pybuild.digest import canonical_json, digest_hex, parse_digest, sha256_digest, validate_digest
from pybuild.errors import ConfigError, InternalError, StoreError
from pybuild.image import spec
from pybuild.image.spec import (
    DOCKER_CONFIG,
    DOCKER_FOREIGN_LAYER_GZIP,
    DOCKER_LAYER,
    DOCKER_LAYER_GZIP,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    EMPTY_DESCRIPTOR,
    OCI_CONFIG,
    OCI_EMPTY,
    OCI_INDEX,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_LAYER_ZSTD,
    OCI_MANIFEST,
    OCI_NONDIST_LAYER_GZIP,
    Descriptor,
    Index,
    Manifest,
    Platform,
    host_platform,
    layer_compression,
    layer_media_type,
    normalize_platform,
    parse_document,
    parse_platform,
    to_descriptor,
    to_docker_media_type,
    to_oci_media_type,
    to_pairs,
)
from pybuild.record import replace

EMPTY_SHA = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64
C = "sha256:" + "c" * 64

# ------------------------------------------------------------------------------------------------- digest


def test_sha256_digest() -> None:
    assert sha256_digest(b"") == EMPTY_SHA
    assert sha256_digest(b"{}") == "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"


@pytest.mark.parametrize(
    ("text", "expected"),
    [(EMPTY_SHA, ("sha256", EMPTY_SHA[7:])), ("sha512:" + "0" * 128, ("sha512", "0" * 128))],
)
def test_parse_digest(text: str, expected: tuple[str, str]) -> None:
    assert parse_digest(text) == expected
    assert validate_digest(text) == text
    assert digest_hex(text) == expected[1]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "invalid digest format"),
        ("sha256", "invalid digest format"),
        ("sha256:", "invalid digest format"),
        (":" + "a" * 64, "invalid digest format"),
        ("SHA256:" + "a" * 64, "invalid digest format"),
        ("sha256:" + "a" * 63, "64 lower-case hex"),
        ("sha256:" + "a" * 65, "64 lower-case hex"),
        ("sha256:" + "A" * 64, "64 lower-case hex"),
        ("sha256:" + "g" * 64, "64 lower-case hex"),
        ("sha512:" + "a" * 64, "128 lower-case hex"),
        ("md5:" + "a" * 32, "unsupported digest algorithm: 'md5'"),
        ("sha256 :" + "a" * 64, "invalid digest format"),
    ],
)
def test_parse_digest_errors(text: str, reason: str) -> None:
    with pytest.raises(StoreError, match=reason):
        parse_digest(text)


def test_parse_digest_rejects_non_strings() -> None:
    with pytest.raises(StoreError, match="expected a string"):
        parse_digest(42)  # type: ignore[arg-type]


def test_canonical_json() -> None:
    assert canonical_json({"b": 1, "a": [1, {"d": None, "c": True}]}) == b'{"a":[1,{"c":true,"d":null}],"b":1}'
    assert canonical_json({"k": "é ☃ <&>"}) == '{"k":"é ☃ <&>"}'.encode()
    with pytest.raises(InternalError):
        canonical_json({"x": float("nan")})
    with pytest.raises(InternalError):
        canonical_json({"x": object()})


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)


@given(_json_values)
def test_canonical_json_is_deterministic_and_faithful(value: object) -> None:
    data = canonical_json(value)
    assert json.loads(data) == value
    assert canonical_json(json.loads(data)) == data


# -------------------------------------------------------------------------------------------- media types


@pytest.mark.parametrize(
    ("oci", "docker"),
    [
        (OCI_MANIFEST, DOCKER_MANIFEST), (OCI_INDEX, DOCKER_MANIFEST_LIST), (OCI_CONFIG, DOCKER_CONFIG),
        (OCI_LAYER, DOCKER_LAYER), (OCI_LAYER_GZIP, DOCKER_LAYER_GZIP),
        (OCI_NONDIST_LAYER_GZIP, DOCKER_FOREIGN_LAYER_GZIP),
    ],
)
def test_docker_media_types(oci: str, docker: str) -> None:
    assert to_docker_media_type(oci) == docker
    assert to_docker_media_type(docker) == docker
    assert to_oci_media_type(docker) == oci
    assert to_oci_media_type(oci) == oci


def test_media_type_constants() -> None:
    assert OCI_MANIFEST == "application/vnd.oci.image.manifest.v1+json"
    assert OCI_CONFIG == "application/vnd.oci.image.config.v1+json"
    assert OCI_EMPTY == "application/vnd.oci.empty.v1+json"
    assert DOCKER_MANIFEST == "application/vnd.docker.distribution.manifest.v2+json"
    assert DOCKER_CONFIG == "application/vnd.docker.container.image.v1+json"
    assert DOCKER_LAYER == "application/vnd.docker.image.rootfs.diff.tar"


def test_docker_has_no_zstd() -> None:
    with pytest.raises(ConfigError, match="zstd"):
        to_docker_media_type(OCI_LAYER_ZSTD)
    with pytest.raises(ConfigError, match="zstd") as info:
        layer_media_type("zstd", oci=False)
    assert info.value.hint and "oci-mediatypes" in info.value.hint


def test_unknown_media_types_pass_through() -> None:
    other = "application/vnd.in-toto+json"
    assert to_docker_media_type(other) == other
    assert to_oci_media_type(other) == other


@pytest.mark.parametrize(
    ("compression", "oci", "media_type"),
    [
        ("gzip", True, OCI_LAYER_GZIP), ("zstd", True, OCI_LAYER_ZSTD), ("uncompressed", True, OCI_LAYER),
        ("gzip", False, DOCKER_LAYER_GZIP), ("uncompressed", False, DOCKER_LAYER),
    ],
)
def test_layer_media_type(compression: str, oci: bool, media_type: str) -> None:
    assert layer_media_type(compression, oci=oci) == media_type
    assert layer_compression(media_type) == compression


def test_layer_media_type_errors() -> None:
    with pytest.raises(ConfigError, match="unknown layer compression: 'lz4'"):
        layer_media_type("lz4")
    with pytest.raises(StoreError, match="not a layer media type"):
        layer_compression(OCI_CONFIG)


# ---------------------------------------------------------------------------------------------- platform


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("linux/amd64", Platform("linux", "amd64")),
        ("linux/x86_64", Platform("linux", "amd64")),
        ("linux/amd64/v1", Platform("linux", "amd64")),
        ("linux/amd64/v3", Platform("linux", "amd64", "v3")),
        ("linux/arm64", Platform("linux", "arm64")),
        ("linux/aarch64", Platform("linux", "arm64")),
        ("linux/arm64/v8", Platform("linux", "arm64")),
        ("linux/arm64/8", Platform("linux", "arm64")),
        ("linux/arm", Platform("linux", "arm", "v7")),
        ("linux/arm/v6", Platform("linux", "arm", "v6")),
        ("linux/arm/7", Platform("linux", "arm", "v7")),
        ("linux/armhf", Platform("linux", "arm", "v7")),
        ("linux/armel", Platform("linux", "arm", "v6")),
        ("linux/i386", Platform("linux", "386")),
        ("linux/386", Platform("linux", "386")),
        ("Linux/PPC64LE", Platform("linux", "ppc64le")),
        ("linux/s390x", Platform("linux", "s390x")),
        ("linux/riscv64", Platform("linux", "riscv64")),
        ("windows/amd64", Platform("windows", "amd64")),
    ],
)
def test_parse_platform(text: str, expected: Platform) -> None:
    assert parse_platform(text) == expected


@pytest.mark.parametrize("text", ["", "linux", "linux/", "/amd64", "linux/amd64/v8/x", "linux/am d64",
                                  "linux/amd64/", "lin-ux/amd64", "linux/arm/v7!"])
def test_parse_platform_errors(text: str) -> None:
    with pytest.raises(ConfigError, match="invalid platform"):
        parse_platform(text)


def test_platform_str_and_dict() -> None:
    p = Platform("windows", "amd64", None, "10.0.17763", ("win32k",))
    assert str(p) == "windows/amd64"
    assert str(Platform("linux", "arm", "v7")) == "linux/arm/v7"
    assert p.to_dict() == {"architecture": "amd64", "os": "windows", "os.version": "10.0.17763",
                           "os.features": ["win32k"]}
    assert Platform.from_dict(p.to_dict()) == p
    assert normalize_platform(Platform("linux", "aarch64", "v8")) == Platform("linux", "arm64")
    with pytest.raises(StoreError, match="invalid platform: field 'architecture' is required"):
        Platform.from_dict({"os": "linux"})


@pytest.mark.parametrize(
    ("machine", "arch", "variant"),
    [("x86_64", "amd64", None), ("aarch64", "arm64", None), ("armv7l", "arm", "v7"), ("armv6l", "arm", "v6"),
     ("i686", "386", None), ("ppc64le", "ppc64le", None), ("s390x", "s390x", None),
     ("riscv64", "riscv64", None), ("AMD64", "amd64", None), ("mystery", "mystery", None)],
)
def test_host_platform(monkeypatch: pytest.MonkeyPatch, machine: str, arch: str, variant: str | None) -> None:
    monkeypatch.setattr(spec, "_machine", lambda: machine)
    assert host_platform() == Platform("linux", arch, variant)


def test_host_platform_is_real() -> None:
    p = host_platform()
    assert p.os == "linux"
    assert parse_platform(str(p)) == p


# ------------------------------------------------------------------------------------- descriptor/manifest


def _layer(digest: str = B, size: int = 10) -> Descriptor:
    return Descriptor(OCI_LAYER_GZIP, digest, size)


def test_descriptor_dict_and_annotations_sorted() -> None:
    d = Descriptor(OCI_MANIFEST, A, 7, (("z", "1"), ("a", "2")), Platform("linux", "arm", "v7"),
                   ("https://x/y",), "application/x")
    assert d.annotations == (("a", "2"), ("z", "1"))
    assert d.annotations_dict == {"a": "2", "z": "1"}
    assert d.to_dict() == {
        "mediaType": OCI_MANIFEST, "digest": A, "size": 7, "urls": ["https://x/y"],
        "annotations": {"a": "2", "z": "1"}, "artifactType": "application/x",
        "platform": {"architecture": "arm", "os": "linux", "variant": "v7"},
    }
    assert Descriptor.from_dict(d.to_dict()) == d
    assert hash(d) == hash(Descriptor.from_dict(d.to_dict()))
    assert Descriptor(OCI_LAYER, A, 1).to_dict() == {"mediaType": OCI_LAYER, "digest": A, "size": 1}


def test_to_descriptor_and_empty() -> None:
    d = to_descriptor(OCI_CONFIG, b"abc", annotations={"k": "v"}, platform=Platform("linux", "amd64"))
    assert d.digest == sha256_digest(b"abc") and d.size == 3 and d.annotations == (("k", "v"),)
    assert EMPTY_DESCRIPTOR.to_dict() == {
        "mediaType": OCI_EMPTY, "size": 2,
        "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
    }
    assert to_pairs({"b": "1", "a": "2"}) == (("a", "2"), ("b", "1"))
    assert to_pairs([("a", "1"), ("a", "2")]) == (("a", "2"),)


def test_manifest_round_trip() -> None:
    m = Manifest(Descriptor(OCI_CONFIG, A, 100), (_layer(B), _layer(C, 20)),
                 annotations=(("org.opencontainers.image.created", "2024-01-01T00:00:00Z"),))
    data = m.to_bytes()
    assert data == canonical_json(m.to_dict())
    assert json.loads(data) == {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": A, "size": 100},
        "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": B, "size": 10},
                   {"mediaType": OCI_LAYER_GZIP, "digest": C, "size": 20}],
        "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"},
    }
    assert Manifest.from_bytes(data) == m
    assert parse_document(data) == m
    assert Manifest.from_bytes(data).to_bytes() == data
    assert {m: 1}[Manifest.from_bytes(data)] == 1


DOCKER_MANIFEST_JSON = b"""{
   "schemaVersion": 2,
   "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
   "config": {
      "mediaType": "application/vnd.docker.container.image.v1+json",
      "size": 1457,
      "digest": "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
   },
   "layers": [
      {
         "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
         "size": 2220094,
         "digest": "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
      }
   ]
}"""


def test_docker_manifest() -> None:
    m = Manifest.from_bytes(DOCKER_MANIFEST_JSON)
    assert m.media_type == DOCKER_MANIFEST
    assert m.config == Descriptor(DOCKER_CONFIG, A, 1457)
    assert m.layers == (Descriptor(DOCKER_LAYER_GZIP, B, 2220094),)
    assert json.loads(m.to_bytes()) == json.loads(DOCKER_MANIFEST_JSON)


def test_manifest_keeps_unknown_fields_and_subject() -> None:
    doc: dict[str, Any] = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/vnd.example",
        "config": {"mediaType": OCI_EMPTY, "digest": A, "size": 2, "data": "e30=", "x-custom": [1, {"a": 2}]},
        "layers": [], "subject": {"mediaType": OCI_MANIFEST, "digest": C, "size": 5},
        "x-vendor": {"nested": ["value", None]},
    }
    m = Manifest.from_dict(doc)
    assert m.artifact_type == "application/vnd.example"
    assert m.subject == Descriptor(OCI_MANIFEST, C, 5)
    assert dict(m.extra) == {"x-vendor": '{"nested":["value",null]}'}
    assert m.to_dict() == doc
    hash(m)


def test_manifest_without_media_type_is_oci() -> None:
    doc = {"schemaVersion": 2, "config": Descriptor(OCI_CONFIG, A, 1).to_dict(), "layers": []}
    m = Manifest.from_dict(doc)
    assert m.media_type == OCI_MANIFEST
    assert parse_document(json.dumps(doc).encode()) == m


def test_index_round_trip() -> None:
    idx = Index((
        Descriptor(OCI_MANIFEST, A, 500, platform=Platform("linux", "amd64")),
        Descriptor(OCI_MANIFEST, B, 501, platform=Platform("linux", "arm64"),
                   annotations=(("vnd.docker.reference.type", "attestation-manifest"),)),
    ), annotations=(("org.opencontainers.image.ref.name", "latest"),))
    data = idx.to_bytes()
    assert json.loads(data)["manifests"][0] == {"mediaType": OCI_MANIFEST, "digest": A, "size": 500,
                                                "platform": {"architecture": "amd64", "os": "linux"}}
    assert Index.from_bytes(data) == idx
    assert parse_document(data) == idx
    docker = replace(idx, media_type=DOCKER_MANIFEST_LIST)
    assert parse_document(docker.to_bytes()) == docker
    bare = {"schemaVersion": 2, "manifests": []}
    assert parse_document(json.dumps(bare).encode()) == Index(())


_MANIFEST_OK: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                                "config": {"mediaType": OCI_CONFIG, "digest": A, "size": 1}, "layers": []}


def with_path(doc: dict[str, Any], path: str, value: object) -> dict[str, Any]:
    """A deep copy of `doc` with `path` ("a.b.0.c") set to `value` (or removed when value is ...)."""
    out = json.loads(json.dumps(doc))
    *parents, last = [path] if path.startswith("os.") else path.split(".")
    target = out
    for key in parents:
        target = target[int(key)] if isinstance(target, list) else target[key]
    if value is ...:
        del target[last]
    else:
        target[last] = value
    return out  # type: ignore[no-any-return]


_LAYER_OK = {"mediaType": OCI_LAYER_GZIP, "digest": B, "size": 3}


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("schemaVersion", ..., "field 'schemaVersion' is required"),
        ("schemaVersion", 1, "field 'schemaVersion' must be 2, got 1"),
        ("schemaVersion", "2", "field 'schemaVersion' must be an integer >= 0, got string"),
        ("schemaVersion", True, "field 'schemaVersion' must be an integer >= 0, got boolean"),
        ("mediaType", OCI_INDEX, "field 'mediaType' must be one of"),
        ("mediaType", 5, "field 'mediaType' must be a string, got number"),
        ("config", ..., "field 'config' is required"),
        ("config", [], "field 'config' must be an object, got array"),
        ("config.digest", ..., "field 'config.digest' is required"),
        ("config.digest", "sha256:zz", "field 'config.digest' is not a valid digest"),
        ("config.mediaType", ..., "field 'config.mediaType' is required"),
        ("config.size", -1, "field 'config.size' must be an integer >= 0, got -1"),
        ("config.size", 1.5, "field 'config.size' must be an integer >= 0, got number"),
        ("config.annotations", {"a": 1}, "field 'config.annotations.a' must be a string, got number"),
        ("config.annotations", ["a"], "field 'config.annotations' must be an object, got array"),
        ("config.urls", "http://x", "field 'config.urls' must be an array of strings, got string"),
        ("config.urls", [1], r"field 'config.urls\[0\]' must be a string"),
        ("config.platform", "linux", "field 'config.platform' must be an object, got string"),
        ("config.platform", {"os": "linux"}, "field 'config.platform.architecture' is required"),
        ("layers", ..., "field 'layers' is required"),
        ("layers", {}, "field 'layers' must be an array, got object"),
        ("layers", [_LAYER_OK, 3], r"field 'layers\[1\]' must be an object, got number"),
        ("layers", [_LAYER_OK, {**_LAYER_OK, "size": "3"}], r"field 'layers\[1\].size' must be an integer"),
        ("annotations", {"k": None}, "field 'annotations.k' must be a string, got null"),
        ("subject", {"mediaType": OCI_MANIFEST}, "field 'subject.digest' is required"),
    ],
)
def test_manifest_validation(path: str, value: object, message: str) -> None:
    with pytest.raises(StoreError, match=f"^invalid manifest: {message}"):
        Manifest.from_dict(with_path(_MANIFEST_OK, path, value))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{", "invalid manifest: not valid JSON"),
        (b"\xff\xfe\x00", "invalid manifest: not valid JSON"),
        (b"[]", "invalid manifest: expected a JSON object, got array"),
        (b'{"schemaVersion": NaN}', "invalid manifest: not valid JSON"),
    ],
)
def test_manifest_bytes_errors(data: bytes, message: str) -> None:
    with pytest.raises(StoreError, match=message):
        Manifest.from_bytes(data)


def test_index_and_document_errors() -> None:
    with pytest.raises(StoreError, match="invalid index: field 'manifests' is required"):
        Index.from_dict({"schemaVersion": 2})
    with pytest.raises(StoreError, match=r"invalid index: field 'manifests\[0\].size' is required"):
        Index.from_dict({"schemaVersion": 2, "manifests": [{"mediaType": OCI_MANIFEST, "digest": A}]})
    with pytest.raises(StoreError, match="invalid index: field 'mediaType' must be one of"):
        Index.from_dict({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "manifests": []})
    with pytest.raises(StoreError, match="unsupported mediaType 'text/plain'"):
        parse_document(b'{"mediaType": "text/plain"}')
    with pytest.raises(StoreError, match="invalid manifest: field 'config' is required"):
        parse_document(b'{"schemaVersion": 2}')
