"""The `pybuild` script's exit (`cli.main.run` / `quick_exit`): codes kept, output complete, atexit handlers
run, running threads waited for, a closed pipe quiet. Each case is a real process."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from pybuild import __version__
from pybuild.cli.main import main
from tests.conftest import REPO

PYBUILD = str(Path(sys.executable).with_name("pybuild"))


def python(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False)


def test_version_and_user_error_codes_survive_the_quick_exit(tmp_path: Path) -> None:
    proc = subprocess.run([PYBUILD, "--version"], capture_output=True, text=True, timeout=60, check=False)
    assert (proc.returncode, proc.stdout) == (0, f"pybuild {__version__}\n")
    proc = subprocess.run([PYBUILD, "nosuchcommand"], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: pybuild: argument COMMAND: invalid choice")
    proc = subprocess.run([sys.executable, "-m", "pybuild", "parse", str(tmp_path / "missing")], cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1 and proc.stdout == ""
    assert "missing" in proc.stderr and "Traceback" not in proc.stderr


def test_piped_output_is_complete(tmp_path: Path, capsys: object) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM scratch\n" + "".join(f"ENV K{i}=value{i}\n" for i in range(3000)))
    proc = subprocess.run([PYBUILD, "parse", str(dockerfile)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert main(["parse", str(dockerfile)]) == 0
    expected = capsys.readouterr().out  # type: ignore[attr-defined]
    assert proc.stdout == expected and len(expected) > 60_000


def test_atexit_handlers_run_and_buffered_output_is_flushed(tmp_path: Path) -> None:
    proc = python("""
        import atexit, pathlib, sys
        from pybuild.cli.main import quick_exit
        marker = pathlib.Path(sys.argv[1], "marker")
        atexit.register(marker.write_text, "ran")
        sys.stdout.write("x" * 100_000)
        sys.stderr.write("to stderr")
        quick_exit(3)
        """, tmp_path)
    assert proc.returncode == 3
    assert proc.stdout == "x" * 100_000 and proc.stderr == "to stderr"
    assert (tmp_path / "marker").read_text() == "ran"


def test_a_running_thread_is_waited_for(tmp_path: Path) -> None:
    proc = python("""
        import pathlib, sys, threading, time
        from pybuild.cli.main import quick_exit
        def late():
            time.sleep(0.3)
            pathlib.Path(sys.argv[1], "late").write_text("done")
        threading.Thread(target=late).start()
        quick_exit(4)
        """, tmp_path)
    assert proc.returncode == 4, proc.stderr
    assert (tmp_path / "late").read_text() == "done"


def test_a_reader_that_goes_away_is_not_an_error(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM scratch\n" + "".join(f"ENV K{i}=value{i}\n" for i in range(20000)))
    proc = subprocess.Popen([PYBUILD, "parse", str(dockerfile)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline() == '(from "scratch")\n'
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 0
    assert err == ""
