"""The scenarios, one module each; each has ``run(services, settings) -> dict``."""

from __future__ import annotations

import time
from collections.abc import Callable

from ..contenders import DiamondClient


def submit_diamonds(
    client: DiamondClient, count: int, *, prefix: str = "d", interval: float = 0.0
) -> dict[str, float]:
    """Submit `count` diamonds, one every `interval` seconds (0: at once).

    Returns ``{key: submit time}`` (wall clock, taken just before each submit call).
    """
    submits: dict[str, float] = {}
    start = time.monotonic()
    for i in range(count):
        if interval:
            pause = start + i * interval - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        key = f"{prefix}{i}"
        submits[key] = time.time()
        client.submit_diamond(key)
    return submits


def warm_up(client: DiamondClient, count: int, timeout: float) -> None:
    """A few diamonds before measuring (connections, lazy imports), then a clean board."""
    submit_diamonds(client, count, prefix="warm")
    client.board.wait(count, timeout, check=client.workers.check_alive)
    client.board.reset()


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
