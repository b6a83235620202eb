"""Named crash points, for fault-injection tests.

Production code calls `point(name)` where a crash would leave work for the Sweeper;
it does nothing unless a test installed `hook` (the fault tests kill the process there).
"""

from __future__ import annotations

from collections.abc import Callable

#: called with the point's name; None in production
hook: Callable[[str], None] | None = None


def point(name: str) -> None:
    if hook is not None:
        hook(name)
