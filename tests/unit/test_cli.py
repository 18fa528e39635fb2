"""The CLI: exit codes, one-line errors with the offending line, stdin, JSON output."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pybuild.cli.main import main
from tests.conftest import REPO

PYBUILD = str(Path(sys.executable).with_name("pybuild"))


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def write(tmp_path: Path, text: str, name: str = "Dockerfile") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_parse_dump(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "FROM busybox AS b\nRUN echo hi\n")
    code, out, _ = run_cli(["parse", "--dump", str(path)], capsys)
    assert code == 0
    assert out == '(from "busybox" "AS" "b")\n(run "echo hi")\n'


def test_parse_json_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "FROM a\nCOPY --link <<EOF /x\nhello\nEOF\n")
    code, out, _ = run_cli(["parse", "--json", str(path)], capsys)
    assert code == 0
    data = json.loads(out)
    assert [d["cmd"] for d in data] == ["FROM", "COPY"]
    keys = {"cmd", "sub_cmd", "json", "original", "start_line", "end_line", "flags", "value", "heredocs"}
    assert keys <= set(data[1])
    assert data[1]["flags"] == ["--link"]
    assert data[1]["heredocs"][0]["name"] == "EOF"
    assert data[1]["heredocs"][0]["content"] == "hello\n"
    assert (data[1]["start_line"], data[1]["end_line"]) == (2, 4)


def test_parse_stdin(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"from x\nfoo bar\n")))
    code, out, _ = run_cli(["parse", "-"], capsys)
    assert code == 0
    assert out == '(from "x")\n(foo "")\n'


def test_unknown_instruction_is_one_line_error_with_context(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "FROM busybox\nWORKDIR /app\nRNU echo hi\n")
    code, out, err = run_cli(["check", "-f", str(path), str(tmp_path)], capsys)
    assert code == 1
    first = err.splitlines()[0]
    assert first == f"error: {path}:3:1: unknown instruction: RNU (did you mean RUN?)"
    assert ">>> 3 | RNU echo hi" in err
    assert "Traceback" not in err


def test_check_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "FROM busybox AS base\nRUN echo hi\nFROM base\nCMD [\"sh\"]\n")
    code, out, err = run_cli(["check", str(tmp_path)], capsys)
    assert code == 0, err
    assert "2 stage(s)" in out


def test_check_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["check", str(tmp_path / "nope")], capsys)
    assert code == 1
    assert "cannot read Dockerfile" in err and "Traceback" not in err


def test_bad_flag_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["parse", "--frobnicate", "x"], capsys)
    assert code == 1
    assert "unrecognized arguments: --frobnicate" in err.splitlines()[0]


def test_no_command(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli([], capsys)
    assert code == 1
    assert "no command given" in err


def test_empty_file_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "# only a comment\n")
    code, _, err = run_cli(["parse", str(path)], capsys)
    assert code == 1
    assert "file with no instructions" in err


def test_console_script_runs_check_on_demo() -> None:
    demo = REPO / "fixtures" / "demo"
    proc = subprocess.run([PYBUILD, "check", "-f", str(demo / "Dockerfile"), str(demo)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "check complete" in proc.stdout


def test_wheel_ships_grammar(tmp_path: Path) -> None:
    """`pip install .` (not editable) then `pybuild parse` from another directory works."""
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(REPO)],
                   check=True, capture_output=True)
    (wheel,) = wheels.glob("pybuild-*.whl")
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                    str(wheel)], check=True, capture_output=True)
    assert (target / "pybuild" / "grammar" / "dockerfile.lark").is_file()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "Dockerfile").write_text("FROM scratch\nCOPY a /b\n")
    code = ("import pybuild, sys; from pybuild.cli.main import main; "
            "assert pybuild.__file__.startswith(sys.argv[1]), pybuild.__file__; "
            "raise SystemExit(main(['parse', 'Dockerfile']))")
    proc = subprocess.run([sys.executable, "-c", code, str(target)], cwd=elsewhere, capture_output=True,
                          text=True, env={"PYTHONPATH": str(target), "HOME": str(tmp_path)}, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == '(from "scratch")\n(copy "a" "/b")\n'
