"""pybuild against docker BuildKit: each case in buildkit_ref/cases must build to what BuildKit built.

The expected values in buildkit_ref/expected/ were recorded with docker BuildKit by
`buildkit_ref/record.py` (its docstring says which docker and how to run it again); they are never edited to
match pybuild. A test builds one case with the `pybuild` CLI in its own store (PYBUILD_ROOT from
tests/conftest.py), on `busybox:ref` imported from the same rootfs tar docker imported, saves the image as an
OCI archive and compares `refcase.summarize` of it with the recording: the config's `config` section, the
history the Dockerfile added (`created_by`, `empty_layer`), the number of layers, and the files it changed
(type, mode, owner, size, symlink target, content digest; never times). A failure lists every difference.

Cases whose Dockerfile docker 20.10 could not build (heredocs, COPY --link) were recorded from an
equivalent `reference_dockerfile`; their history `created_by` is null in the recording and not compared.

pybuild follows current BuildKit (dockerfile2llb on master), the recording is BuildKit 0.8: where the two
BuildKits differ, `VERSION_GAPS` (the one list of them) says how the comparison crosses the difference,
for the named cases only, after checking that pybuild's side is what current BuildKit writes.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.bases import need
from tests.integration.buildkit_ref.refcase import (
    BASE_NAME,
    EXPECTED,
    Case,
    base_filesystem,
    case_names,
    iter_differences,
    load_case,
    prepare_context,
    read_oci_archive,
    summarize,
    write_base_tar,
)

pytestmark = pytest.mark.root

PYBUILD = (sys.executable, "-m", "pybuild")

Summary = dict[str, Any]


@dataclass(frozen=True)
class VersionGap:
    """A difference between BuildKit 0.8 (the recording) and current BuildKit (pybuild), for some cases.

    `apply(data, expected, actual)` rewrites copies of the two summaries so they compare across the
    difference, using that case's `data`; it returns problems: pybuild not writing what current BuildKit
    writes, or the gap no longer applying (so a stale gap fails instead of hiding something).
    """

    cases: dict[str, Any]
    apply: Callable[[Any, Summary, Summary], list[str]]


def _arg_values(values: dict[str, str], expected: Summary, actual: Summary) -> list[str]:
    """Rewrite the recording's ARG entries (`ARG K`, `ARG K=default`) as current BuildKit writes them
    (`ARG K=value`, with the value the ARG took); pybuild's entries are then compared as they are."""
    changed = 0
    for entry in expected["history"]:
        text = entry["created_by"] or ""
        if not text.startswith("ARG "):
            continue
        words = []
        for word in text[4:].split(" "):
            key = word.partition("=")[0]
            words.append(f"{key}={values[key]}" if key in values else word)
        new = "ARG " + " ".join(words)
        changed += new != text
        entry["created_by"] = new
    return [] if changed else ["version gap arg-history-values changed no ARG entry: remove it for this case"]


# Current BuildKit's wording of the two entries whose format changed since 0.8 (see VERSION_GAPS).
_CURRENT_FORMAT = {
    "HEALTHCHECK ": re.compile(r"HEALTHCHECK \{Test:\[.*\] Interval:\S+ Timeout:\S+ StartPeriod:\S+ "
                               r"StartInterval:\S+ Retries:\d+\}"),
    "EXPOSE ": re.compile(r"EXPOSE \[[^\]]*\]"),
}


def _history_format(_data: None, expected: Summary, actual: Summary) -> list[str]:
    """Check that pybuild words HEALTHCHECK and EXPOSE entries as current BuildKit does, then take the
    recording's 0.8 wording for them, so the rest of the history is compared as it is."""
    problems, changed = [], 0
    for mine, theirs in zip(actual["history"], expected["history"]):
        text, old = mine["created_by"], theirs["created_by"] or ""
        for prefix, pattern in _CURRENT_FORMAT.items():
            if text.startswith(prefix) and old.startswith(prefix):
                if pattern.fullmatch(text) is None:
                    problems.append(f"pybuild's history entry is not current BuildKit's wording: {text!r}")
                mine["created_by"] = old
                changed += 1
    return problems + ([] if changed else ["version gap history-format matched no entry: remove it"])


def _archive_owner(data: dict[str, Any], expected: Summary, actual: Summary) -> list[str]:
    """Check that what `ADD --chown` extracted below `data["under"]` is owned by `data["owner"]` in pybuild
    (current BuildKit), then compare with the recording's owners (the archive's); nothing else changes."""
    under, (uid, gid) = data["under"] + "/", data["owner"]
    recorded = {e["path"]: e for e in expected["filesystem"]}
    problems, changed = [], 0
    for entry in actual["filesystem"]:
        if not entry["path"].startswith(under):
            continue
        if (entry["uid"], entry["gid"]) != (uid, gid):
            problems.append(f"fs {entry['path']}: pybuild owner {entry['uid']}:{entry['gid']}, current "
                            f"BuildKit extracts ADD --chown archives as {uid}:{gid}")
        if entry["path"] in recorded:
            entry["uid"], entry["gid"] = recorded[entry["path"]]["uid"], recorded[entry["path"]]["gid"]
            changed += 1
    return problems + ([] if changed else [f"version gap add-chown-archive found nothing under {under}"])


VERSION_GAPS: dict[str, VersionGap] = {
    # ARG history. BuildKit 0.8's dispatchArg wrote the Dockerfile's words (`ARG TAG`, `ARG GREETING=hello`);
    # current BuildKit writes the value the ARG took (build arg, else the global or automatic platform
    # ARG, else the expanded default): `ARG TAG=ref`, `ARG GREETING=hi`. Only ARG entries are rewritten.
    "arg-history-values": VersionGap(cases={
        "args-env": {"TAG": "ref", "GLOBAL_ONLY": "global-default", "GREETING": "hi", "WHO": "builder",
                     "TARGETPLATFORM": "linux/amd64", "TARGETOS": "linux", "TARGETARCH": "amd64",
                     "TARGETVARIANT": "", "BUILDPLATFORM": "linux/amd64", "BUILDOS": "linux",
                     "BUILDARCH": "amd64"},
        "onbuild-child": {"ONBUILD_ARG": "from-cli"},
    }, apply=_arg_values),
    # HEALTHCHECK and EXPOSE history. BuildKit 0.8 wrote Go's %q of the *HealthcheckConfig
    # (`&{["CMD" "/bin/true"] "30s" "5s" "10s" '\x04'}`) and %v of the parsed port map
    # (`map[443/tcp:{} 80/tcp:{}]`); current BuildKit writes %+v of the config (`{Test:[CMD /bin/true]
    # Interval:30s ... StartInterval:0s Retries:4}`, TestDispatchHealthcheckHistory) and %v of the port
    # specs in the (sorted) instruction order (`[443/tcp 80/tcp]`, moby/buildkit#6218).
    "history-format": VersionGap(
        cases={"metadata": None, "onbuild-child": None, "shell-forms": None}, apply=_history_format),
    # `ADD --chown=app:app archive.tar /untar-chown/`: BuildKit 0.8 kept the archive's owners when
    # extracting; current BuildKit passes the chown to the extraction, so every extracted entry is app's
    # (1000:1000 in busybox:ref). The destination directory itself is app's in both.
    "add-chown-archive": VersionGap(
        cases={"add-archive": {"under": "/untar-chown", "owner": (1000, 1000)}}, apply=_archive_owner),
}


def cross_version_gaps(name: str, expected: Summary, actual: Summary) -> tuple[Summary, Summary, list[str]]:
    """Copies of the two summaries with every `VERSION_GAPS` entry for case `name` applied, and problems."""
    expected, actual = copy.deepcopy(expected), copy.deepcopy(actual)
    problems: list[str] = []
    for gap in VERSION_GAPS.values():
        if name in gap.cases:
            problems += gap.apply(gap.cases[name], expected, actual)
    return expected, actual, problems


def pybuild(*argv: str, timeout: float = 600) -> str:
    """Run the pybuild CLI in a subprocess (RUN steps start runc); fail with its output on a non-zero exit."""
    result = subprocess.run([*PYBUILD, *argv], capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        pytest.fail(f"pybuild {' '.join(argv)} exited {result.returncode}\n"
                    f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-6000:]}")
    return result.stdout


@pytest.fixture(scope="session")
def base_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The busybox rootfs tar that record.py `docker import`ed as busybox:ref."""
    need(os.path.isfile("/bin/busybox"), "busybox-static not installed")
    return write_base_tar(tmp_path_factory.mktemp("buildkit-ref") / "busybox.tar")


@pytest.fixture
def builder(base_tar: Path) -> Path:
    """A store with busybox:ref in it (this test's PYBUILD_ROOT); returns the base tar."""
    need(os.geteuid() == 0, "needs root (overlayfs, runc)")
    need(shutil.which("runc") is not None, "runc not installed")
    help_text = subprocess.run([*PYBUILD, "--help"], capture_output=True, text=True).stdout
    need(" build " in help_text, "pybuild has no build command yet")
    pybuild("import", str(base_tar), BASE_NAME)
    return base_tar


def build_case(case: Case, work: Path) -> None:
    """`pybuild build` the case (after the cases it requires), tagged ref-<name>, from a prepared context."""
    for required in case.requires:
        build_case(load_case(required), work)
    context = prepare_context(case, work / case.name)
    argv = ["build", "--progress=plain", "-t", case.tag, "-f", str(context / "Dockerfile")]
    for key, value in case.build_args.items():
        argv += ["--build-arg", f"{key}={value}"]
    if case.target:
        argv += ["--target", case.target]
    pybuild(*argv, str(context))


@pytest.mark.parametrize("name", case_names())
def test_matches_buildkit(name: str, builder: Path, tmp_path: Path) -> None:
    expected: dict[str, Any] = json.loads((EXPECTED / f"{name}.json").read_text())
    case = load_case(name)
    build_case(case, tmp_path / "contexts")
    archive = tmp_path / "image.tar"
    pybuild("save", "--format", "oci", "-o", str(archive), case.tag)
    config, layers = read_oci_archive(archive)
    actual = summarize(config, layers, base_filesystem(builder))
    (tmp_path / "actual.json").write_text(json.dumps(actual, indent=1))
    expected, actual, differences = cross_version_gaps(name, expected, actual)
    differences += iter_differences(expected, actual)
    notes = "".join(f"\n(recording note: {note})" for note in expected.get("unverified", ()))
    assert not differences, (f"{name}: {len(differences)} difference(s) from {expected['recorded_with']}:\n  "
                             + "\n  ".join(differences) + notes)
