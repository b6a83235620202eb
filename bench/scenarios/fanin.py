"""3. Fan-in latency: from the last dependency's completion to the fan-in step's start.

Read from the store, per diamond: ``compile_brief.started_at - max(finished_at of its
three dependencies)`` (both stamped by the transitions that claim and complete a step).
Diamonds are submitted at a steady pace well below capacity (one every
``paced_interval_s``), so the number measures the fan-in itself, not a queue; the
diamond scenario reports the same number under full load.

Also reported: the single-dependency hop (``fetch_sources`` done -> a middle step
started), which is the same enqueue-and-claim path with no join; and, in the same run
at the same pace and worker settings, bare Dramatiq's hop from one actor to the next
(sent at the end of one body -> the next body starts). Most of a bare hop is the Redis
consumer's idle polling (``worker_timeout``); baton_dramatiq's consumers are woken by the
steps enqueued for them (`baton_dramatiq.wakeup`). All of it is measured at the run's
``worker_timeout`` and again at 2 ms.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import baton_dramatiq as baton

from ..config import Settings
from ..contenders import bare_app, baton_app
from ..services import Services
from ..stats import summary_ms
from . import submit_diamonds, warm_up

NAME = "fanin"
#: the scenario runs again with the consumers polling this often (ms), when the run's
#: own `worker_timeout` is longer: an idle Redis consumer sleeps up to that long
#: between fetches, and that sleep is most of a bare Dramatiq hop
FAST_POLL_MS = 2


def latencies(store: baton.Store, workflow_ids: Iterable[str]) -> dict[str, Any]:
    """Fan-in and single-hop latencies (seconds) of finished diamonds, from the store."""
    fan_in: list[float] = []
    hop: list[float] = []
    outcomes: dict[str, int] = {}
    for workflow_id in workflow_ids:
        view = baton.query.get_workflow(workflow_id, store=store)
        outcomes[view.state] = outcomes.get(view.state, 0) + 1
        steps = {s.step_name: s for s in baton.query.get_workflow_steps(workflow_id, store=store)}
        join = steps["compile_brief"]
        deps = [steps[name] for name in join.deps]
        if join.started_at is None or any(d.finished_at is None for d in deps):
            continue
        fan_in.append((join.started_at - max(d.finished_at for d in deps)).total_seconds())  # type: ignore[type-var]
        source = steps["fetch_sources"]
        for name in join.deps:
            started = steps[name].started_at
            if started is not None and source.finished_at is not None:
                hop.append((started - source.finished_at).total_seconds())
    return {"fan_in": fan_in, "hop": hop, "outcomes": outcomes}


def run(services: Services, settings: Settings) -> dict[str, Any]:
    polls = [settings.worker_timeout_ms]
    if FAST_POLL_MS < settings.worker_timeout_ms:
        polls.append(FAST_POLL_MS)
    runs = [measure(services, dataclasses.replace(settings, worker_timeout_ms=ms)) for ms in polls]
    return {
        "diamonds": settings.fanin_diamonds,
        "pace_per_s": 1 / settings.paced_interval_s,
        "runs": runs,
    }


def measure(services: Services, settings: Settings) -> dict[str, Any]:
    """Fan-in and hop latencies of baton_dramatiq, and bare Dramatiq's hop, at one poll."""
    count, interval = settings.fanin_diamonds, settings.paced_interval_s
    with baton_app.running(services, settings, label="baton-fanin") as client:
        warm_up(client, 5, settings.timeout_s)
        submits = submit_diamonds(client, count, interval=interval)
        client.board.wait(count, settings.timeout_s, check=client.workers.check_alive)
        measured = latencies(client.store, (client.runs[key].id for key in submits))
    with bare_app.running(services, settings) as bare:
        bare.run_hops(10, interval, settings.timeout_s)  # warm-up
        bare.app.redis.delete(bare.app.hops)
        bare_hops = bare.run_hops(count, interval, settings.timeout_s)
    return {
        "worker_timeout_ms": settings.worker_timeout_ms,
        "fan_in": summary_ms(measured["fan_in"]),
        "single_hop": summary_ms(measured["hop"]),
        "bare_hop": summary_ms(bare_hops),
        "outcomes": measured["outcomes"],
    }
