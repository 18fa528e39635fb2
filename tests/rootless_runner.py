"""Run pybuild as the unprivileged test user `pybuild-rootless` (made by scripts/setup.sh with 65536
subordinate uids/gids), for tests/integration/test_rootless.py and benchmarks/rootless.py; needs root.

The user cannot reach a venv whose interpreter lives under a 0700 /root (pyenv), so `make_runner` picks an
interpreter the user can execute (this one, or the system's python3 of the same minor version: same ABI) and
puts pybuild and its dependencies on PYTHONPATH, copied into the user's home when the user cannot read them
where they are. pybuild runs with `runuser` and a clean environment (HOME = the home given, so the store is
the default one, `~/.local/share/pybuild`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
USER = "pybuild-rootless"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class Rootless:
    """Runs pybuild as `USER` (HOME and the default store in `home`) or as root (a store of its own)."""

    def __init__(self, home: Path, python: str, pythonpath: str) -> None:
        self.home = home
        self.python = python
        self.pythonpath = pythonpath

    def python_argv(self, *args: str, user: str = USER, env: dict[str, str] | None = None) -> list[str]:
        """`python ARGS` as `user` with a clean environment (plus `env`)."""
        base = {"HOME": str(self.home), "PATH": PATH, "PYTHONPATH": self.pythonpath, "LANG": "C.UTF-8",
                **(env or {})}
        return ["runuser", "-u", user, "--", "env", "-i", *(f"{k}={v}" for k, v in base.items()),
                self.python, *args]

    def run(self, *args: str, user: str = USER, env: dict[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """`pybuild ARGS` as `user`."""
        argv = self.python_argv("-m", "pybuild", *args, user=user, env=env)
        return subprocess.run(argv, cwd=self.home, capture_output=True, text=True, timeout=timeout)

    def ok(self, *args: str, env: dict[str, str] | None = None, timeout: float = 300) -> str:
        result = self.run(*args, env=env, timeout=timeout)
        assert result.returncode == 0, f"pybuild {' '.join(args)}: {result.stderr}"
        return result.stdout

    def as_root(self, store: Path, *args: str, env: dict[str, str] | None = None) -> str:
        full = {**os.environ, "PYBUILD_ROOT": str(store), **(env or {})}
        result = subprocess.run([sys.executable, "-m", "pybuild", *args], capture_output=True, text=True,
                                env=full, timeout=300, cwd=self.home)
        assert result.returncode == 0, f"root pybuild {' '.join(args)}: {result.stderr}"
        return result.stdout

    def give(self, path: Path) -> Path:
        """Hand `path` (under home) to the user."""
        subprocess.run(["chown", "-R", f"{USER}:{USER}", str(path)], check=True)
        return path


def _user_can(test: str, path: str) -> bool:
    return subprocess.run(["runuser", "-u", USER, "--", "test", test, path]).returncode == 0


def _python_for_user() -> str:
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    for candidate in (os.path.realpath(sys.executable), f"/usr/bin/python{version}"):
        if os.path.exists(candidate) and _user_can("-x", candidate):
            return candidate
    raise RuntimeError(f"no Python {version} that {USER} can execute")


def ensure_user() -> None:
    """Run scripts/setup.sh, which makes the user and its subordinate ranges (idempotent)."""
    subprocess.run(["bash", str(REPO / "scripts" / "setup.sh")], check=True, capture_output=True, timeout=900)


def make_runner(home: Path) -> Rootless:
    """A runner whose user's HOME is `home` (made 0755 and given to the user)."""
    home.chmod(0o755)
    python = _python_for_user()
    site = sysconfig.get_paths()["purelib"]
    code = [str(REPO), site]
    if not (_user_can("-r", str(REPO / "pybuild" / "__init__.py")) and _user_can("-r", site)):
        shutil.copytree(REPO / "pybuild", home / "code" / "pybuild")
        shutil.copytree(REPO / "grammar", home / "code" / "grammar")  # beside the package, as in a checkout
        shutil.copytree(site, home / "code" / "site")
        code = [str(home / "code"), str(home / "code" / "site")]
    runner = Rootless(home, python, ":".join(code))
    runner.give(home)
    return runner
