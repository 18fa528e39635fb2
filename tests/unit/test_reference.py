"""Image references: docker/distribution normalisation (its `normalize_test.go` / `reference_test.go`
examples), familiar forms, and errors that say why a reference is invalid."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pybuild.errors import ConfigError, UserError
from pybuild.image.reference import Reference, parse_reference

D64 = "sha256:" + "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

NORMALISED = [
    # text, normalized, familiar
    ("busybox", "docker.io/library/busybox:latest", "busybox:latest"),
    ("busybox:1.36", "docker.io/library/busybox:1.36", "busybox:1.36"),
    ("debian", "docker.io/library/debian:latest", "debian:latest"),
    ("library/debian", "docker.io/library/debian:latest", "debian:latest"),
    ("docker.io/debian", "docker.io/library/debian:latest", "debian:latest"),
    ("docker.io/library/debian", "docker.io/library/debian:latest", "debian:latest"),
    ("index.docker.io/debian", "docker.io/library/debian:latest", "debian:latest"),
    ("index.docker.io/library/debian", "docker.io/library/debian:latest", "debian:latest"),
    ("docker/docker", "docker.io/docker/docker:latest", "docker/docker:latest"),
    ("docker.io/docker/docker", "docker.io/docker/docker:latest", "docker/docker:latest"),
    ("index.docker.io/docker/docker", "docker.io/docker/docker:latest", "docker/docker:latest"),
    ("user/app", "docker.io/user/app:latest", "user/app:latest"),
    ("user/app:v1", "docker.io/user/app:v1", "user/app:v1"),
    ("docker.io/library/a/b", "docker.io/library/a/b:latest", "library/a/b:latest"),
    ("localhost/debian", "localhost/debian:latest", "localhost/debian:latest"),
    ("localhost/library/debian", "localhost/library/debian:latest", "localhost/library/debian:latest"),
    ("localhost:5000/x", "localhost:5000/x:latest", "localhost:5000/x:latest"),
    ("127.0.0.1:5000/x:tag", "127.0.0.1:5000/x:tag", "127.0.0.1:5000/x:tag"),
    ("127.0.0.1:5000/library/debian", "127.0.0.1:5000/library/debian:latest",
     "127.0.0.1:5000/library/debian:latest"),
    ("192.168.0.1/debian", "192.168.0.1/debian:latest", "192.168.0.1/debian:latest"),
    ("example.com/library/debian", "example.com/library/debian:latest", "example.com/library/debian:latest"),
    ("example.com:5000/a/b/c:1.0", "example.com:5000/a/b/c:1.0", "example.com:5000/a/b/c:1.0"),
    ("dockerhub.io/debian", "dockerhub.io/debian:latest", "dockerhub.io/debian:latest"),
    ("quay.io/coreos/etcd:v3.5", "quay.io/coreos/etcd:v3.5", "quay.io/coreos/etcd:v3.5"),
    ("[fe80::1]:5000/x", "[fe80::1]:5000/x:latest", "[fe80::1]:5000/x:latest"),
    ("Docker/docker", "Docker/docker:latest", "Docker/docker:latest"),  # upper case first part: a domain
    ("localhost:5000", "docker.io/library/localhost:5000", "localhost:5000"),  # a tag, as in docker
    ("ab__c-d_e/f--g.h", "docker.io/ab__c-d_e/f--g.h:latest", "ab__c-d_e/f--g.h:latest"),
    ("a-b.c/d", "a-b.c/d:latest", "a-b.c/d:latest"),  # has a '.': a domain
    (f"registry.example.com/a/b@{D64}", f"registry.example.com/a/b@{D64}", f"registry.example.com/a/b@{D64}"),
    (f"busybox@{D64}", f"docker.io/library/busybox@{D64}", f"busybox@{D64}"),
    (f"busybox:1@{D64}", f"docker.io/library/busybox:1@{D64}", f"busybox:1@{D64}"),
    ("x:Tag_1.0-rc", "docker.io/library/x:Tag_1.0-rc", "x:Tag_1.0-rc"),
    ("x:" + "t" * 128, "docker.io/library/x:" + "t" * 128, "x:" + "t" * 128),
]


@pytest.mark.parametrize(("text", "normalized", "familiar"), NORMALISED)
def test_normalisation(text: str, normalized: str, familiar: str) -> None:
    ref = parse_reference(text)
    assert ref.normalized == normalized
    assert str(ref) == normalized
    assert ref.familiar == familiar


@pytest.mark.parametrize(("text", "normalized", "familiar"), NORMALISED)
def test_normalised_form_is_a_fixed_point(text: str, normalized: str, familiar: str) -> None:
    ref = parse_reference(text)
    assert parse_reference(normalized).normalized == normalized
    assert parse_reference(familiar).normalized == parse_reference(normalized).normalized
    if ref.tag is None and ref.digest is None:
        assert parse_reference(normalized) == Reference(ref.domain, ref.path, "latest")


@pytest.mark.parametrize(
    ("text", "domain", "path", "tag", "digest"),
    [
        ("busybox", "docker.io", "library/busybox", None, None),
        ("user/app:v1", "docker.io", "user/app", "v1", None),
        ("localhost:5000/x", "localhost:5000", "x", None, None),
        ("127.0.0.1:5000/x:tag", "127.0.0.1:5000", "x", "tag", None),
        (f"registry.example.com/a/b@{D64}", "registry.example.com", "a/b", None, D64),
        (f"r.io/a:t@{D64}", "r.io", "a", "t", D64),
    ],
)
def test_parts(text: str, domain: str, path: str, tag: str | None, digest: str | None) -> None:
    ref = parse_reference(text)
    assert (ref.domain, ref.path, ref.tag, ref.digest) == (domain, path, tag, digest)
    assert ref.name == f"{domain}/{path}"


def test_properties_and_builders() -> None:
    ref = parse_reference("busybox")
    assert ref.familiar_name == "busybox"
    assert ref.tag_or_latest == "latest"
    tagged = ref.with_tag("1.36")
    assert tagged.normalized == "docker.io/library/busybox:1.36"
    pinned = tagged.with_digest(D64)
    assert pinned.normalized == f"docker.io/library/busybox:1.36@{D64}"
    assert pinned.with_tag("x").digest is None
    assert parse_reference("quay.io/a/b").familiar_name == "quay.io/a/b"
    assert parse_reference("user/app").familiar_name == "user/app"
    assert hash(ref) == hash(parse_reference("docker.io/library/busybox"))
    with pytest.raises(ConfigError, match="invalid tag"):
        ref.with_tag("-bad")
    with pytest.raises(ConfigError, match="digest"):
        ref.with_digest("sha256:abc")


INVALID = [
    ("", "at least one component"),
    (":tag", "at least one component"),
    ("docker/Docker", r"repository name \(docker/Docker\) must be lowercase"),
    ("docker.io/docker/Docker", "must be lowercase"),
    ("docker.io/Library/debian", "must be lowercase"),
    ("Busybox", "must be lowercase"),
    ("-docker", "invalid path component '-docker'"),
    ("-docker/docker", "invalid path component"),
    ("docker-/docker", "invalid path component"),
    ("-docker.io/docker/docker", "invalid registry domain"),
    ("docker:/docker", "invalid"),
    ("https://github.com/docker/docker", "invalid registry domain"),
    ("docker///docker", "empty path component"),
    ("docker/", "empty path component"),
    ("a..b", "invalid path component"),
    ("a___b", "invalid path component"),
    ("docker.io/docker/docker:", "invalid tag ''"),
    ("x:-tag", "invalid tag"),
    ("x:.tag", "invalid tag"),
    ("x:ta/g", "invalid"),
    ("x:" + "t" * 129, "invalid tag"),
    ("x:tag!", "invalid tag"),
    ("docker.io/docker/docker@", "invalid digest"),
    ("docker.io/docker/docker@sha256:", "invalid digest"),
    ("x@sha256:abc", "sha256 needs 64 lower-case hex"),
    ("x@sha256:" + "E" * 64, "sha256 needs 64 lower-case hex"),
    ("x@md5:" + "a" * 32, "unsupported digest algorithm"),
    ("x@" + "a" * 64, "invalid digest"),
    ("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "64-byte hexadecimal"),
    (" busybox", "whitespace"),
    ("busy box", "invalid"),
    ("a/" + "b" * 250, "not be more than 255 characters"),
    ("r.io/" + "/".join(["abcdefghi"] * 26), "not be more than 255 characters"),
    ("a_b.c/d", "invalid registry domain"),
]


@pytest.mark.parametrize(("text", "reason"), INVALID)
def test_invalid(text: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason) as info:
        parse_reference(text)
    assert str(info.value).startswith("invalid reference format: ")
    assert isinstance(info.value, UserError)


def test_longest_name_is_accepted() -> None:
    path = "u/" + "a" * (255 - len("docker.io/u/"))
    assert parse_reference(path).name == f"docker.io/{path}"
    with pytest.raises(ConfigError, match="255"):
        parse_reference(path + "a")


_component = st.from_regex(r"[a-z0-9]+(?:[._-][a-z0-9]+)?", fullmatch=True).filter(lambda c: len(c) < 30)


@given(
    st.lists(_component, min_size=1, max_size=3),
    st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)),
)
def test_round_trip_property(components: list[str], tag: str | None) -> None:
    text = "/".join(components) + (f":{tag}" if tag else "")
    ref = parse_reference(text)
    again = parse_reference(ref.normalized)
    assert again.normalized == ref.normalized
    assert parse_reference(ref.familiar).normalized == ref.normalized
