"""`-o/--output` specs: the buildx spelling, defaults, and one clear ConfigError per bad spec."""

from __future__ import annotations

import pytest

from pybuild.errors import ConfigError
from pybuild.export.outputs import OutputSpec, parse_output


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("type=oci,dest=x.tar", OutputSpec(type="oci", dest="x.tar")),
        ("type=oci,dest=dir,tar=false", OutputSpec(type="oci", dest="dir", tar=False)),
        ("type=docker,dest=x.tar", OutputSpec(type="docker", dest="x.tar")),
        ("type=local,dest=out", OutputSpec(type="local", dest="out")),
        ("type=tar,dest=rootfs.tar", OutputSpec(type="tar", dest="rootfs.tar")),
        ("type=tar,dest=-", OutputSpec(type="tar", dest="-")),
        ("type=image,name=app:v1", OutputSpec(type="image", names=("app:v1",))),
        ('type=image,"name=a:1,b:2"', OutputSpec(type="image", names=("a:1", "b:2"))),
        ("TYPE=OCI, dest=x.tar", OutputSpec(type="oci", dest="x.tar")),
        ("type=oci,dest=x.tar,compression=zstd,compression-level=19",
         OutputSpec(type="oci", dest="x.tar", compression="zstd", compression_level=19)),
        ("type=oci,dest=x.tar,compression=uncompressed",
         OutputSpec(type="oci", dest="x.tar", compression="uncompressed")),
        ("type=oci,dest=x.tar,compression=gzip,compression-level=0",
         OutputSpec(type="oci", dest="x.tar", compression_level=0)),
        ("type=oci,dest=x.tar,oci-mediatypes=false", OutputSpec(type="oci", dest="x.tar", oci_mediatypes=False)),
        ("type=docker,dest=x.tar,oci-mediatypes=true",
         OutputSpec(type="docker", dest="x.tar", oci_mediatypes=True)),
        ("type=oci,dest=x.tar,name=app:v1", OutputSpec(type="oci", dest="x.tar", names=("app:v1",))),
        ("type=oci,dest=x.tar,force-compression=true",
         OutputSpec(type="oci", dest="x.tar", force_compression=True)),
        ("type=image,name=reg:5000/app:v1,push=true",
         OutputSpec(type="image", names=("reg:5000/app:v1",), push=True)),
        ("type=registry,name=reg:5000/app:v1", OutputSpec(type="image", names=("reg:5000/app:v1",), push=True)),
        ("type=registry,name=reg:5000/app:v1,compression=zstd",
         OutputSpec(type="image", names=("reg:5000/app:v1",), compression="zstd", push=True)),
        ("outdir", OutputSpec(type="local", dest="outdir")),
        ("-", OutputSpec(type="tar", dest="-")),
    ],
)
def test_parse_output(text: str, expected: OutputSpec) -> None:
    assert parse_output(text) == expected


def test_media_type_defaults() -> None:
    assert parse_output("type=oci,dest=x").use_oci_mediatypes
    assert parse_output("type=image,name=a").use_oci_mediatypes
    assert not parse_output("type=docker,dest=x").use_oci_mediatypes
    assert not parse_output("type=oci,dest=x,oci-mediatypes=false").use_oci_mediatypes
    assert parse_output("type=docker,dest=x,oci-mediatypes=true").use_oci_mediatypes


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        ("dest=x.tar", "missing type="),
        ("type=bogus,dest=x", "unknown type 'bogus'"),
        ("type=registry", "needs name="),
        ("type=registry,name=x,push=false", "type=registry always pushes"),
        ("type=image,name=x@sha256:" + "a" * 64 + ",push=true", "cannot push to"),
        ("type=image,name=x/Bad:1,push=true", "invalid reference format"),
        ("type=oci", "needs dest="),
        ("type=docker", "needs dest="),
        ("type=local", "needs dest="),
        ("type=tar", "needs dest="),
        ("type=oci,dest=", "dest is empty"),
        ("type=image", "needs name="),
        ("type=local,dest=-", "standard output"),
        ("type=oci,dest=-,tar=false", "standard output"),
        ("type=oci,dest=x,tar=maybe", "not true or false"),
        ("type=oci,dest=x,compression=lz4", "unknown compression 'lz4'"),
        ("type=oci,dest=x,compression-level=abc", "not a number"),
        ("type=oci,dest=x,compression=gzip,compression-level=10", "0..9"),
        ("type=oci,dest=x,compression=zstd,compression-level=23", "0..22"),
        ("type=oci,dest=x,compression=uncompressed,compression-level=3", "needs compression=gzip or zstd"),
        ("type=oci,dest=x,oci-mediatypes=false,compression=zstd", "need OCI media types"),
        ("type=docker,dest=x,compression=zstd", "need OCI media types"),
        ("type=local,dest=x,compression=gzip", "does not take compression"),
        ("type=oci,dest=x,bogus=1", "does not take bogus"),
        ("type=oci,dest=x,dest=y", "given twice"),
        ("type=oci,dest=x,novalue", "is not key=value"),
        ('type=oci,"dest=x', "invalid output spec"),
    ],
)
def test_bad_output(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_output(text)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message
