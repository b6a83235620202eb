"""The hot path of baton_dramatiq, per step, in diamonds and a wide fan-in (baton only).

Not in the default run (``--only profile``); needs py-spy. On one baton deployment, two
passes of N diamonds and a wide workflow:

A. unobserved: diamonds/s, worker CPU (user, system) per step, PostgreSQL commits per
   step (pg_stat_database of the fresh database);
B. with ``py-spy record --gil`` on the workers: where the time holding the GIL goes
   (claim, results read, complete, publish, enqueue, ...), store time split into the
   driver (psycopg, libpq, network) and the rest (baton_dramatiq's own code around the
   statements, and SQLAlchemy where a call goes through it);
C. a 1 -> 2,000 -> 1 workflow with PostgreSQL's backends sampled (`PgWaits`): what each
   hot statement spends its time in the server on (running, row locks, the WAL).

The worker counts its SQL statements, commits and Redis round trips (all passes and the
warm-up; divided by the steps run).

D. in the harness, one thread, no contention: wall and CPU time of the store calls a
   step makes (claim, complete), of a whole step through WorkflowMiddleware's hooks
   (claim, its event, completion, its event), and of one raw psycopg UPDATE + COMMIT.
   These call baton's internals: if they change, D says so and the rest still runs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
from collections.abc import Callable
from typing import Any

import psycopg

import baton_dramatiq as baton

from ..config import Settings
from ..contenders import baton_app
from ..pgwaits import PgWaits
from ..profiling import Sampler, breakdown, process_cpu, top_frames
from ..services import Services
from ..workers import LOG_DIR
from . import submit_diamonds, warm_up

NAME = "profile"
STEPS_PER_DIAMOND = 5
WARM_UP = 5
PGSTAT_IDLE_S = 11.0
#: the steps of pass C's workflow, 1 -> WIDE_STEPS - 2 -> 1
WIDE_STEPS = 2002


def run(services: Services, settings: Settings) -> dict[str, Any]:
    n = settings.diamonds
    out = LOG_DIR / "profile"
    out.mkdir(parents=True, exist_ok=True)
    sql_file, redis_file = out / "sql-counts.json", out / "redis-counts.json"
    env = {"BENCH_COUNT_SQL": str(sql_file), "BENCH_COUNT_REDIS": str(redis_file)}
    result: dict[str, Any] = {"diamonds": n}
    with baton_app.running(services, settings, label="baton-profile", extra_env=env) as client:
        warm_up(client, WARM_UP, settings.timeout_s)
        pids = client.workers.pids
        # A: unobserved
        commits0 = services.commits(client.env.db_name)
        cpu0 = [process_cpu(pid) for pid in pids]
        start = time.time()
        submit_diamonds(client, n, prefix="a")
        client.board.wait(n, settings.timeout_s, check=client.workers.check_alive)
        elapsed = max(client.board.times().values()) - start
        cpu1 = [process_cpu(pid) for pid in pids]
        # A busy backend reports its counters at most once a second, and one that went
        # idle reports what is left within 10 s (PostgreSQL 15: PGSTAT_IDLE_INTERVAL):
        # read sooner, and a pool's connections hold back most of the last second's.
        time.sleep(PGSTAT_IDLE_S)
        commits = services.commits(client.env.db_name) - commits0
        steps = n * STEPS_PER_DIAMOND
        user = sum(b[0] - a[0] for a, b in zip(cpu0, cpu1, strict=True))
        system = sum(b[1] - a[1] for a, b in zip(cpu0, cpu1, strict=True))
        result["unobserved"] = {
            "diamonds_per_s": n / elapsed,
            "worker_cpu_ms_per_step": {
                "user": 1000 * user / steps,
                "system": 1000 * system / steps,
            },
            "worker_cpu_share_of_one_core": (user + system) / elapsed / len(pids),
            "pg_commits_per_step": commits / steps,
        }
        client.board.reset()
        # B: sampled
        with Sampler(pids, out, label="baton-gil") as sampler:
            submit_diamonds(client, n, prefix="b")
            client.board.wait(n, settings.timeout_s, check=client.workers.check_alive)
        # C: a wide fan-in, the overhead scenario's shape, with PostgreSQL's backends sampled
        wide = baton_app.wide(client.actors, WIDE_STEPS)
        with PgWaits(settings.pg_admin_url, client.env.db_name) as waits:
            finish = client.run_to_finish(wide, settings.timeout_s)
        result["pg_waits"] = {"steps": WIDE_STEPS, "seconds": finish.seconds, **waits.shares()}
    total_steps = (WARM_UP + 2 * n) * STEPS_PER_DIAMOND + WIDE_STEPS
    rate = sampler.rate
    result["gil_ms_per_step"] = {}
    for path in sampler.files:
        split = breakdown(path)
        for category, samples in split["by_category"]:
            ms = 1000 * samples / rate / (n * STEPS_PER_DIAMOND)
            result["gil_ms_per_step"][category] = result["gil_ms_per_step"].get(category, 0) + ms
        result["top_frames"] = top_frames(path, limit=15)["total"]
    result["per_step_counts"] = {
        "sql": _per_step(sql_file, total_steps),
        "redis_round_trips": _per_step(redis_file, total_steps),
    }
    result["files"] = [str(p) for p in sampler.files]
    try:
        result["store_calls_one_thread"] = store_calls(services, settings)
    except Exception as exc:  # internals moved: report, do not fail the scenario
        result["store_calls_one_thread"] = {"error": f"{type(exc).__name__}: {exc}"}
    return result


def store_calls(services: Services, settings: Settings, count: int = 200) -> dict[str, Any]:
    """Mean wall and CPU ms of each store call of a step, one thread, fresh database."""
    with baton_app.running(services, dataclasses.replace(settings, processes=0)) as client:
        store = client.store
        runs = []
        for _ in range(count):
            wf = baton.Workflow("calls").add("a", client.actors.noop.message())
            wf.add("b", client.actors.noop.message(), deps=["a"])
            runs.append(client.insert(wf))
        stale = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=60)
        calls: list[tuple[str, Callable[[baton.WorkflowRun], object]]] = [
            (
                "claim (+ its dependencies' results)",
                lambda r: store.claim(r.id, "a", worker_id="bench", stale_before=stale),
            ),
            (
                "complete (+ make 1 dependent ready)",
                lambda r: store.complete(r.id, "a", 1, {"ok": 1}, dependents=("b",)),
            ),
        ]
        out: dict[str, Any] = {}
        for label, call in calls:
            wall, cpu = time.perf_counter(), time.process_time()
            for r in runs:
                call(r)
            out[label] = {
                "wall_ms": 1000 * (time.perf_counter() - wall) / count,
                "cpu_ms": 1000 * (time.process_time() - cpu) / count,
            }
        out["a whole step through WorkflowMiddleware's hooks (no enqueue)"] = hooks_per_step(
            client, count
        )
        url = client.env.database_url.replace("postgresql+psycopg://", "postgresql://", 1)
        with psycopg.connect(url) as conn:
            wall, cpu = time.perf_counter(), time.process_time()
            for r in runs:
                with conn.transaction():
                    conn.execute(
                        "UPDATE workflows SET remaining = remaining WHERE id = %s", (r.id,)
                    )
            out["raw psycopg UPDATE + COMMIT"] = {
                "wall_ms": 1000 * (time.perf_counter() - wall) / count,
                "cpu_ms": 1000 * (time.process_time() - cpu) / count,
            }
    return out


def hooks_per_step(client: Any, count: int) -> dict[str, float]:
    """Mean wall and CPU ms of one step's hooks, called in this thread: the claim and its
    ``executing`` event, then the completion and its ``completed`` event, of the middle
    steps of a 1 -> count -> 1 workflow (none of them makes a dependent ready)."""
    from dramatiq import Message
    from dramatiq.broker import MessageProxy

    from baton_dramatiq.context import running_step

    broker = client.app.broker
    middleware = next(m for m in broker.middleware if isinstance(m, baton.WorkflowMiddleware))
    noop = client.actors.noop
    wf = baton.Workflow("hooks").add("src", noop.message())
    for i in range(count):
        wf.add(f"m{i}", noop.message(), deps=["src"])
    wf.add("sink", noop.message(), deps=[f"m{i}" for i in range(count)])
    messages = {name: row["message"] for name, row in _node_messages(wf).items()}
    client.insert(wf)

    def step(name: str) -> None:
        message = MessageProxy(Message(**messages[name]))
        middleware.before_process_message(broker, message)
        running = running_step()
        assert running is not None, f"step {name} was not claimed"
        running.outcome = {"ok": True}
        middleware.after_process_message(broker, message, result={"ok": True})

    step("src")
    broker.flush_all()  # the middle steps src made ready: called here instead
    for i in range(10):
        step(f"m{i}")
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(10, count):
        step(f"m{i}")
    n = count - 10
    return {
        "wall_ms": 1000 * (time.perf_counter() - wall) / n,
        "cpu_ms": 1000 * (time.process_time() - cpu) / n,
    }


def _node_messages(wf: baton.Workflow) -> dict[str, Any]:
    order = wf.validate()
    _, nodes = wf._rows(order)
    return {node["step_name"]: node for node in nodes}


def _per_step(path: Any, steps: int) -> dict[str, float]:
    try:
        counts = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {kind: count / steps for kind, count in sorted(counts.items(), key=lambda kv: -kv[1])}
