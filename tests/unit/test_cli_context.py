"""`pybuild context`: the plain table, --json, warnings, error lines and exit codes."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from pybuild.cli.main import main


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    root = tmp_path / "ctx"
    (root / "src").mkdir(parents=True)
    (root / "Dockerfile").write_text("FROM scratch\n")
    (root / "src" / "app.py").write_bytes(b"x" * 2048)
    os.symlink("app.py", root / "src" / "link")
    (root / ".dockerignore").write_text("*.log\n")
    (root / "debug.log").write_text("ignored\n")
    return root


def test_json(ctx: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["context", "--json", str(ctx)], capsys)
    assert code == 0 and err == ""
    doc = json.loads(out)
    assert set(doc) == {"files", "total_files", "total_bytes", "checksum"}
    assert [(f["path"], f["type"], f["size"]) for f in doc["files"]] == [
        (".dockerignore", "file", 6), ("Dockerfile", "file", 13), ("src/app.py", "file", 2048),
        ("src/link", "symlink", 6)]
    assert doc["total_files"] == 4 and doc["total_bytes"] == 6 + 13 + 2048 + 6
    assert all(f["checksum"].startswith("xxh3:") and len(f["checksum"]) == 37 for f in doc["files"])
    assert doc["checksum"].startswith("xxh3:")


def test_plain_table(ctx: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["context", str(ctx)], capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["TYPE", "SIZE", "CHECKSUM", "PATH"]
    rows = lines[1:5]
    assert [r.split()[-1] for r in rows[:3]] == [".dockerignore", "Dockerfile", "src/app.py"]
    assert rows[3].endswith("src/link -> app.py")
    assert len({r.index("xxh3:") for r in rows}) == 1, "checksum column aligned"
    assert "2,048" in rows[2]
    assert "total:       4 file(s), 2.0 KiB (2,073 bytes)" in out
    assert f"ignore file: {ctx / '.dockerignore'} (1 pattern(s))" in out
    assert "debug.log" not in out


def test_plain_and_json_agree_and_are_stable(ctx: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run_cli(["context", "--json", str(ctx)], capsys)
    _, again, _ = run_cli(["context", "--json", str(ctx)], capsys)
    _, plain, _ = run_cli(["context", str(ctx)], capsys)
    assert out == again
    assert f"checksum:    {json.loads(out)['checksum']}" in plain


def test_dockerfile_flag_and_its_ignore_file(ctx: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dockerfile = tmp_path / "prod.Dockerfile"
    dockerfile.write_text("FROM scratch\n")
    (tmp_path / "prod.Dockerfile.dockerignore").write_text("src\n")
    code, out, _ = run_cli(["context", "--json", "-f", str(dockerfile), str(ctx)], capsys)
    assert code == 0
    assert [f["path"] for f in json.loads(out)["files"]] == [".dockerignore", "Dockerfile", "debug.log"]


def test_odd_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = os.fsencode(tmp_path)
    for name in (b"new\nline", b"bad\xffbyte", b"with space"):
        with open(os.path.join(base, name), "wb") as handle:
            handle.write(b"1")
    code, out, _ = run_cli(["context", str(tmp_path)], capsys)
    assert code == 0
    assert "new\\nline" in out and "bad\\xffbyte" in out and "with space" in out


def test_odd_names_json_round_trip(tmp_path: Path, capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    base = os.fsencode(tmp_path)
    with open(os.path.join(base, b"bad\xffbyte"), "wb") as handle:
        handle.write(b"1")
    assert main(["context", "--json", str(tmp_path)]) == 0
    out = capfdbinary.readouterr().out
    doc = json.loads(out.decode("utf-8"))
    assert os.fsencode(doc["files"][0]["path"]) == b"bad\xffbyte"


def test_warning_for_fifo(ctx: Path, capsys: pytest.CaptureFixture[str]) -> None:
    os.mkfifo(ctx / "pipe")
    code, _, err = run_cli(["context", str(ctx)], capsys)
    assert code == 0
    assert err == "warning: pipe: fifo skipped\n"


def test_missing_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["context", str(tmp_path / "nope")], capsys)
    assert code == 1 and out == ""
    assert err == f"error: context directory not found: {tmp_path / 'nope'}\n"


def test_missing_dockerfile_flag(ctx: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["context", "-f", str(ctx / "nope"), str(ctx)], capsys)
    assert code == 1 and err.startswith("error: Dockerfile not found:")


def test_unreadable_file_names_its_path(ctx: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Root reads any file, so the failure is injected: os.open fails for one path."""
    real_open = os.open
    target = str(ctx / "src" / "app.py")

    def failing_open(path: str, flags: int, *args: object, **kwargs: object) -> int:
        if os.fsdecode(path) == target:
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", failing_open)
    code, out, err = run_cli(["context", str(ctx)], capsys)
    assert code == 1 and out == ""
    assert err == "error: cannot read src/app.py: permission denied\n"


def test_usage_error_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["context"], capsys)
    assert code == 1 and err.startswith("error: pybuild context: the following arguments are required: DIR")
