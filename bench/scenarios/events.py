"""5. Event latency: a transition committed -> its event received by a subscriber.

A subscriber process (``python -m bench.scenarios.events``, so that the harness's own
work does not delay it) holds ``baton.events.subscribe_all`` on the RedisEventBus and,
for every event of the measured workflows, takes its receive time minus the payload's
``at``. baton stamps ``at`` when the store transition begins (before its statements and
its commit), so the number is an upper bound of commit -> received: it covers the
transition's SQL and commit, the publish, Redis and the subscriber's decoding. Diamonds
are submitted at the fan-in scenario's steady pace.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from pathlib import Path
from typing import Any

import baton_dramatiq as baton

from ..config import AppConfig, Settings
from ..contenders import app_config, baton_app
from ..services import Services
from ..stats import summary_ms
from ..workers import LOG_DIR, Workers
from . import submit_diamonds, warm_up

NAME = "events"
MODULE = "bench.scenarios.events"
MEASURED = "brief:d"  # workflow names of the measured diamonds (warm-up ones differ)


def run(services: Services, settings: Settings) -> dict[str, Any]:
    count = settings.event_diamonds
    out = LOG_DIR / "events.json"
    out.unlink(missing_ok=True)
    with baton_app.running(services, settings, label="baton-events") as client:
        warm_up(client, 5, settings.timeout_s)
        env = dict(
            app_config(settings, client.env).to_env(),
            BENCH_EXPECT=str(count),
            BENCH_OUT=str(out),
            BENCH_TIMEOUT=str(settings.timeout_s),
        )
        with Workers(MODULE, env, label="subscriber") as subscriber:
            submit_diamonds(client, count, interval=settings.paced_interval_s)
            client.board.wait(count, settings.timeout_s, check=client.workers.check_alive)
            proc = subscriber.procs[0]
            deadline = time.monotonic() + 30
            while proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
    received = json.loads(out.read_text())
    by_kind: dict[str, list[float]] = {}
    for kind, latency in received["samples"]:
        by_kind.setdefault(kind, []).append(latency)
    return {
        "diamonds": count,
        "pace_per_s": 1 / settings.paced_interval_s,
        "all": summary_ms([lat for _, lat in received["samples"]]),
        "by_kind": {kind: summary_ms(values) for kind, values in sorted(by_kind.items())},
        "finished_seen": received["finished"],
    }


def subscribe() -> None:
    """The subscriber process: collect latencies until `expect` measured workflows finished."""
    cfg = AppConfig.from_env()
    expect = int(os.environ["BENCH_EXPECT"])
    deadline = time.monotonic() + float(os.environ.get("BENCH_TIMEOUT", "180"))
    bus = baton.RedisEventBus(cfg.redis_url, prefix=cfg.namespace + ":")
    samples: list[tuple[str, float]] = []
    finished = 0
    with baton.events.subscribe_all(bus=bus, timeout=1.0) as stream:
        print("ready", flush=True)
        while finished < expect and time.monotonic() < deadline:
            try:
                event = next(stream)
            except baton.WaitTimeout:
                continue
            received = time.time()
            payload = event.payload
            if not str(payload.get("workflow_name", "")).startswith(MEASURED):
                continue
            at = dt.datetime.fromisoformat(payload["at"]).timestamp()
            kind = payload.get("state") or event.event
            if event.event == baton.events.WORKFLOW_FINISHED:
                kind, finished = "workflow_finished", finished + 1
            samples.append((kind, received - at))
    Path(os.environ["BENCH_OUT"]).write_text(json.dumps({"samples": samples, "finished": finished}))
    bus.close()


if __name__ == "__main__":
    subscribe()
