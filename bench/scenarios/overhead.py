"""1. Overhead: a 1 -> W -> 1 fan-out/fan-in of no-op steps against W + 2 bare messages.

Both contenders run side by side (each with its own fresh environment and workers, the
same broker and worker settings), and their rounds alternate so that background noise
hits both alike; the idle contender's workers keep polling Redis meanwhile (one fetch per
`worker_timeout`), a small load that each side puts on the other. Bare Dramatiq: W + 2
messages of a no-op actor, sent one by one, done when the queue holds nothing queued or
in flight. baton_dramatiq: one workflow inserted (one transaction, the first step
enqueued), done at the workflow's finish as stamped in the store; the harness waits on
the workflow's event topic, so it polls nothing meanwhile. Reported: messages (steps)
per second of each, and their ratio.
"""

from __future__ import annotations

from typing import Any

from ..config import Settings
from ..contenders import bare_app, baton_app
from ..services import Services
from ..stats import median

NAME = "overhead"


def run_baton(client: baton_app.Client, width: int, timeout: float) -> float:
    """Seconds from insert to the finish of one 1 -> width -> 1 workflow."""
    finish = client.run_to_finish(baton_app.wide(client.actors, width + 2), timeout)
    if finish.view.outcome != "completed":
        raise RuntimeError(f"overhead workflow ended {finish.view.outcome}")
    return finish.seconds


def run(services: Services, settings: Settings) -> dict[str, Any]:
    width, messages = settings.overhead_width, settings.overhead_width + 2
    bare_s: list[float] = []
    baton_s: list[float] = []
    with (
        bare_app.running(services, settings) as bare,
        baton_app.running(services, settings) as baton,
    ):
        bare.run_messages(20, settings.timeout_s)  # warm-up
        run_baton(baton, 20, settings.timeout_s)
        for _ in range(settings.overhead_rounds):
            bare_s.append(bare.run_messages(messages, settings.timeout_s))
            baton_s.append(run_baton(baton, width, settings.timeout_s))
    bare_rate = messages / median(bare_s)
    baton_rate = messages / median(baton_s)
    return {
        "width": width,
        "messages": messages,
        "rounds": settings.overhead_rounds,
        "bare": {"seconds": bare_s, "msgs_per_s": bare_rate},
        "baton": {"seconds": baton_s, "msgs_per_s": baton_rate},
        "ratio": baton_rate / bare_rate,
    }
