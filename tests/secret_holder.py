"""A process that dies holding a fallback secret dir (`worker.secretfiles`), for the sweep tests."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_HOLDER = textwrap.dedent("""
    import sys, time
    from pybuild.worker import secretfiles
    secretfiles.detached_mounts_work = lambda: False
    files = secretfiles.SecretFiles()
    print(files.add(sys.argv[1].encode(), mode=0o400, uid=0, gid=0), flush=True)
    time.sleep(300)
""")


@contextmanager
def holder(value: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """A live process holding `value` in a fallback secret dir; yields it and the secret file's path."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, value], stdout=subprocess.PIPE, text=True,
                            cwd=REPO)
    try:
        assert proc.stdout is not None
        path = proc.stdout.readline().strip()
        assert path, "the holder printed no path"
        yield proc, path
    finally:
        proc.kill()
        proc.wait(timeout=30)


def left_by_a_killed_process(value: str) -> str:
    """The path of a secret file holding `value` whose process was killed with SIGKILL (so it cleaned up
    nothing)."""
    with holder(value) as (proc, path):
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert Path(path).read_text() == value
    return path
