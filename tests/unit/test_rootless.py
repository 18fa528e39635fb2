"""pybuild.rootless: reading /etc/subuid-style ranges and the one-line errors for missing pieces."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pybuild import rootless
from pybuild.errors import ConfigError
from tests.bases import need


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "subuid"
    path.write_text(text)
    return str(path)


def test_range_by_name_or_uid(tmp_path: Path) -> None:
    path = write(tmp_path, "other:100000:65536\nalice:165536:65536\n")
    assert rootless.subordinate_range(path, "alice", 1000) == (165536, 65536)
    path = write(tmp_path, "# comment\n1000:200000:70000\n")
    assert rootless.subordinate_range(path, "alice", 1000) == (200000, 70000)


def test_first_large_enough_range_wins(tmp_path: Path) -> None:
    path = write(tmp_path, "alice:100000:100\nalice:300000:65536\nalice:bad:x\n")
    assert rootless.subordinate_range(path, "alice", 1000) == (300000, 65536)


def test_missing_range_names_user_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, "bob:100000:65536\n")
    with pytest.raises(ConfigError) as info:
        rootless.subordinate_range(path, "alice", 1000)
    assert str(info.value) == f"rootless build: no subordinate id range for user alice in {path}"
    assert "usermod --add-subuids" in (info.value.hint or "")


def test_too_small_range(tmp_path: Path) -> None:
    path = write(tmp_path, "alice:100000:1000\n")
    with pytest.raises(ConfigError, match="only 1000 subordinate ids, 65536 are needed"):
        rootless.subordinate_range(path, "alice", 1000)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        rootless.subordinate_range(str(tmp_path / "nope"), "alice", 1000)


def test_missing_uidmap_tool_names_the_package() -> None:
    with pytest.raises(ConfigError) as info:
        rootless._tool("newuidmap-that-does-not-exist")
    assert "uidmap" in (info.value.hint or "")


def test_map_arguments() -> None:
    assert rootless._map_args("/usr/bin/newuidmap", 42, 1000, 100000) == [
        "/usr/bin/newuidmap", "42", "0", "1000", "1", "1", "100000", "65536"]



def test_in_userns_tells_a_mapped_root_from_the_real_one() -> None:
    code = "from pybuild.rootless import in_userns; print(in_userns())"
    plain = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert plain.stdout.strip() == str(Path("/proc/self/uid_map").read_text().split()
                                       != ["0", "0", "4294967295"])
    need(shutil.which("unshare") is not None, "unshare (util-linux) not installed")
    mapped = subprocess.run(["unshare", "--user", "--map-root-user", sys.executable, "-c", code],
                            capture_output=True, text=True)
    need(mapped.returncode == 0, f"no user namespaces here: {mapped.stderr.strip()}")
    assert mapped.stdout.strip() == "True"
