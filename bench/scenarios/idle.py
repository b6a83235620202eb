"""A workflow sent to an idle worker, at several ``worker_timeout`` settings.

Dramatiq's Redis consumer backs off while its queue stays empty: 5 to 10 ms after the
first empty fetch, doubling up to ``worker_timeout`` (1,000 ms by default, or the
``dramatiq_worker_timeout`` environment variable). A message sent after an idle spell
waits out whatever is left of that sleep, unless something wakes the consumer:
baton_dramatiq's steps do (`baton_dramatiq.wakeup`). Lowering the setting costs polling
while idle.

Per setting: a 2-step chain inserted `SAMPLES` times, each after `IDLE_S` seconds of
idleness (the first step's ``started_at`` minus the moment the insert returned, and the
hop to the second step, from the store); the EVALSHA calls per second that the worker
process made once idle for `IDLE_S` seconds (Redis ``INFO commandstats``, over
`POLL_WINDOW_S` seconds; the fetches of its queue and of its delay queue); and, beside
them, bare Dramatiq: a message sent `SAMPLES` times after the same idle spell, from its
send to its body's start.

On request only: ``python -m bench --only idle``.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import redis

import baton_dramatiq as baton

from ..config import Settings
from ..contenders import bare_app, baton_app
from ..services import Services
from ..stats import summary_ms

NAME = "idle"
#: the settings compared: Dramatiq's default, and two lower ones
WORKER_TIMEOUTS_MS = (1000, 100, 10)
SAMPLES = 8
#: long enough for the back-off to reach 1,000 ms (5 + 10 + ... + 640 ms = 1.3 s)
IDLE_S = 3.0
POLL_WINDOW_S = 5.0


def run(services: Services, settings: Settings) -> dict[str, Any]:
    samples = 3 if settings.quick else SAMPLES
    runs = [
        measure(services, dataclasses.replace(settings, worker_timeout_ms=ms), samples)
        for ms in WORKER_TIMEOUTS_MS
    ]
    return {"samples": samples, "idle_s": IDLE_S, "runs": runs}


def measure(services: Services, settings: Settings, samples: int) -> dict[str, Any]:
    first: list[float] = []
    hop: list[float] = []
    with baton_app.running(services, settings, label="baton-idle") as client:
        client.run_to_finish(baton_app.chain(client.actors, 2), settings.timeout_s)  # warm-up
        time.sleep(IDLE_S)  # the back-off at its cap
        polls = _evalsha_per_s(services.redis_url, POLL_WINDOW_S)
        for _ in range(samples):
            time.sleep(IDLE_S)
            finish = client.run_to_finish(baton_app.chain(client.actors, 2), settings.timeout_s)
            steps = baton.query.get_workflow_steps(finish.view.id, store=client.store)
            a, b = steps
            assert a.started_at and a.finished_at and b.started_at
            first.append(a.started_at.timestamp() - finish.inserted_at)
            hop.append((b.started_at - a.finished_at).total_seconds())
    with bare_app.running(services, settings) as bare:
        bare.run_hops(3, 0.05, settings.timeout_s)  # warm-up
        bare_first = bare.run_after_idle(samples, IDLE_S, settings.timeout_s)
    return {
        "worker_timeout_ms": settings.worker_timeout_ms,
        "first_step": summary_ms(first),
        "first_step_ms": sorted(1000 * s for s in first),
        "hop": summary_ms(hop),
        "idle_evalsha_per_s": polls,
        "bare_first_message": summary_ms(bare_first),
    }


def _evalsha_per_s(redis_url: str, seconds: float) -> float:
    """EVALSHA calls per second on the server (Dramatiq's fetches run as EVALSHA)."""
    client = redis.Redis.from_url(redis_url)

    def calls() -> int:
        stats: dict[str, Any] = client.info("commandstats")
        return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))

    try:
        before = calls()
        time.sleep(seconds)
        return (calls() - before) / seconds
    finally:
        client.close()
