"""`registry.pull.select_platform`: which manifest of an index a pull takes (containerd's matching)."""

from __future__ import annotations

import pytest

from pybuild.errors import RegistryError
from pybuild.image.spec import OCI_MANIFEST, Descriptor, Index, Platform, parse_platform
from pybuild.registry.pull import select_platform


def entry(n: int, os_name: str, arch: str, variant: str | None = None) -> Descriptor:
    return Descriptor(OCI_MANIFEST, "sha256:" + f"{n:x}" * 64, 100,
                      platform=Platform(os_name, arch, variant))


INDEX = Index((entry(1, "linux", "amd64"), entry(2, "linux", "arm64", "v8"), entry(3, "linux", "arm", "v6"),
               entry(4, "linux", "arm", "v7"), entry(5, "unknown", "unknown")))


@pytest.mark.parametrize(("wanted", "number"), [
    ("linux/amd64", 1), ("linux/x86_64", 1), ("linux/arm64", 2), ("linux/aarch64", 2), ("linux/arm/v6", 3),
    ("linux/arm/v7", 4), ("linux/arm", 4),
])
def test_picks_the_matching_manifest(wanted: str, number: int) -> None:
    chosen = select_platform(INDEX, parse_platform(wanted), "reg/app:1")
    assert chosen.digest == "sha256:" + f"{number:x}" * 64


def test_names_what_there_is_when_nothing_matches() -> None:
    with pytest.raises(RegistryError) as info:
        select_platform(INDEX, parse_platform("linux/s390x"), "reg/app:1")
    assert info.value.message == ("no linux/s390x image in reg/app:1: available: linux/amd64, linux/arm/v6, "
                                  "linux/arm/v7, linux/arm64")


def test_attestation_entries_are_never_picked() -> None:
    with pytest.raises(RegistryError, match="available: none"):
        select_platform(Index((entry(5, "unknown", "unknown"),)), parse_platform("linux/amd64"), "x")
