"""What a whole command's process needs before it starts working."""

from __future__ import annotations

__all__ = ["enter_rootless_if_needed"]


def enter_rootless_if_needed() -> None:
    """A non-root user builds (and prunes) in a user namespace: enter one now, before any thread starts
    (`pybuild.rootless`); root goes on as it is."""
    from pybuild.rootless import enter_if_needed

    enter_if_needed()
