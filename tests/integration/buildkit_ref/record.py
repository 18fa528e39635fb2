"""Record what docker BuildKit makes of each case in cases/, as expected/<name>.json.

Recorded with docker 20.10.24+dfsg1 (Debian 12's docker.io, API 1.41; BuildKit 0.8 embedded in dockerd,
its built-in Dockerfile frontend, i.e. dockerfile syntax 1.2), containerd 1.6.20, runc 1.1.5, overlay2,
amd64. The lab's peers set-up script (docker 20.10 with BuildKit) installs and starts it. Call
`/usr/bin/docker`: a newer CLI without buildx may shadow it on PATH.

Run it as root from the repository root, with dockerd up:

    .venv/bin/python -m tests.integration.buildkit_ref.record            # every case
    .venv/bin/python -m tests.integration.buildkit_ref.record copy metadata

For each case: the base `busybox:ref` is `docker import`ed from `refcase.write_base_tar` (the same bytes
`pybuild import` gets in the test), the case's context is prepared (`refcase.prepare_context`), the cases it
`requires` are built first (tagged `ref-<name>`), then `DOCKER_BUILDKIT=1 docker build --no-cache
--build-arg ... [--target T] -t ref-<name>`, and `docker save` gives the config and layers that
`refcase.summarize` reduces to the expected JSON. Nothing with a time in it is recorded.

Cases whose Dockerfile needs a newer frontend than docker 20.10 has (heredocs, COPY --link) name a
`reference_dockerfile` with the same steps in older syntax; their history `created_by` is recorded as null
(not checked) and `unverified` says why.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.integration.buildkit_ref.refcase import (
    BASE_NAME,
    EXPECTED,
    Case,
    base_filesystem,
    case_names,
    load_case,
    prepare_context,
    read_docker_archive,
    summarize,
    write_base_tar,
)

DOCKER = os.environ.get("DOCKER", "/usr/bin/docker")


def docker(*args: str, capture: bool = True) -> str:
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}
    result = subprocess.run([DOCKER, *args], env=env, text=True, capture_output=capture)
    if result.returncode != 0:
        raise SystemExit(f"docker {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result.stdout if capture else ""


def docker_version() -> str:
    return docker("version", "--format", "{{.Server.Version}}").strip()


def build(case: Case, work: Path) -> None:
    """Build `case` (after what it requires) into the docker image store as ref-<name>."""
    for required in case.requires:
        build(load_case(required), work)
    work.mkdir(parents=True, exist_ok=True)
    context = prepare_context(case, Path(tempfile.mkdtemp(dir=work)) / case.name)
    argv = ["build", "--no-cache", "--progress=plain", "-t", case.tag, "-f",
            str(context / case.reference_dockerfile)]
    for key, value in case.build_args.items():
        argv += ["--build-arg", f"{key}={value}"]
    if case.target:
        argv += ["--target", case.target]
    docker(*argv, str(context))


def record(case: Case, work: Path, base_tar: Path, version: str) -> dict[str, Any]:
    build(case, work)
    archive = work / f"{case.name}.docker.tar"
    docker("save", "-o", str(archive), case.tag)
    config, layers = read_docker_archive(archive)
    summary = summarize(config, layers, base_filesystem(base_tar))
    if case.reference_dockerfile != "Dockerfile":
        for entry in summary["history"]:
            entry["created_by"] = None
    return {"case": case.name, "recorded_with": f"docker {version} (BuildKit, built-in dockerfile frontend)",
            "build_args": case.build_args, "target": case.target, "requires": list(case.requires),
            "built_from": case.reference_dockerfile, "unverified": list(case.unverified), **summary}


def main(argv: list[str]) -> int:
    names = argv or case_names()
    version = docker_version()
    with tempfile.TemporaryDirectory(prefix="buildkit-ref-") as tmp:
        work = Path(tmp)
        base_tar = write_base_tar(work / "busybox.tar")
        docker("import", str(base_tar), BASE_NAME)
        EXPECTED.mkdir(exist_ok=True)
        for name in names:
            doc = record(load_case(name), work / "cases", base_tar, version)
            (EXPECTED / f"{name}.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
            print(f"{name}: {doc['layers']} layers, {len(doc['history'])} history entries, "
                  f"{len(doc['filesystem'])} paths changed, {len(doc['removed'])} removed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
