"""1. Overhead: a 1 -> W -> 1 fan-out/fan-in of no-op steps against W + 2 bare messages.

Both contenders run side by side (each with its own fresh environment and workers, the
same broker and worker settings), and their rounds alternate so that background noise
hits both alike; the idle contender's workers keep polling Redis meanwhile (one fetch
per `worker_timeout`), a small load that each side puts on the other. Bare Dramatiq: W +
2 messages of a no-op actor, sent one by one, done when the queue holds nothing queued
or in flight. baton_dramatiq: one workflow inserted (one transaction, the first step
enqueued), done at the workflow's finish as stamped in the store; the harness reads the
workflow's row every 20 ms meanwhile, which does not move the time measured (bare
Dramatiq's harness polls the queue every 2 ms, and its time ends at the poll that finds
it empty). Reported: messages (steps) per second of each, their ratio, what a message
(step) cost in CPU: the contender's workers, the PostgreSQL server (every one of its
processes; bare Dramatiq uses none of them) and the harness (which sends bare Dramatiq's
messages and inserts the workflow), and how many times per message (step) the workers'
threads switched (blocked or were preempted): with eight threads on one GIL, each
blocking call costs several. And where a baton_dramatiq round's time went: its phases
(`PHASES`), from the steps' timestamps in the store, so that a change shows whether it
moved the steps' own rate (the middle phase) or a fixed cost around it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from baton_dramatiq import query

from ..config import Settings
from ..contenders import bare_app, baton_app
from ..profiling import process_cpu, thread_switches
from ..services import Services
from ..stats import median

NAME = "overhead"


def run_baton(client: baton_app.Client, width: int, timeout: float) -> baton_app.Finish:
    """One 1 -> width -> 1 workflow, from insert to finish."""
    finish = client.run_to_finish(baton_app.wide(client.actors, width + 2), timeout)
    if finish.view.outcome != "completed":
        raise RuntimeError(f"overhead workflow ended {finish.view.outcome}")
    return finish


#: a round's phases, in order: what each one spans
PHASES = {
    "insert": "the insert (steps written, the first step enqueued)",
    "first_step_waits": "insert returned → first step started (below zero: it started first)",
    "first_step": "first step started → finished",
    "fan_out": "first step finished → first middle step started",
    "middle": "first middle step started → last one finished",
    "fan_in": "last middle step finished → last step started",
    "last_step": "last step started → finished (the workflow's finish)",
}


def phases(client: baton_app.Client, finish: baton_app.Finish) -> dict[str, float]:
    """Where a round's time went, in ms, from the store's step timestamps (read after
    the round, so the reading costs the round nothing)."""
    steps = {s.step_name: s for s in query.get_workflow_steps(finish.view.id, store=client.store)}
    first, last = steps.pop("start"), steps.pop("end")
    middles = steps.values()

    def at(moment: dt.datetime | None) -> float:
        assert moment is not None
        return moment.timestamp()

    marks = [
        finish.started_at,
        finish.inserted_at,
        at(first.started_at),
        at(first.finished_at),
        min(at(s.started_at) for s in middles),
        max(at(s.finished_at) for s in middles),
        at(last.started_at),
        at(last.finished_at),
    ]
    return {
        name: 1000 * (end - begin)
        for name, (begin, end) in zip(PHASES, itertools.pairwise(marks), strict=True)
    }


def run(services: Services, settings: Settings) -> dict[str, Any]:
    width, messages = settings.overhead_width, settings.overhead_width + 2
    bare_s: list[float] = []
    baton_s: list[float] = []
    baton_phases: list[dict[str, float]] = []
    cpu: dict[str, list[CpuSplit]] = {"bare": [], "baton": []}
    with (
        bare_app.running(services, settings) as bare,
        baton_app.running(services, settings) as baton,
    ):
        bare.run_messages(20, settings.timeout_s)  # warm-up
        run_baton(baton, 20, settings.timeout_s)
        for _ in range(settings.overhead_rounds):
            with measure_cpu(bare.workers.pids, cpu["bare"]):
                bare_s.append(bare.run_messages(messages, settings.timeout_s))
            with measure_cpu(baton.workers.pids, cpu["baton"]):
                finish = run_baton(baton, width, settings.timeout_s)
            baton_s.append(finish.seconds)
            baton_phases.append(phases(baton, finish))
    bare_rate = messages / median(bare_s)
    baton_rate = messages / median(baton_s)
    return {
        "width": width,
        "messages": messages,
        "rounds": settings.overhead_rounds,
        "bare": {
            "seconds": bare_s,
            "msgs_per_s": bare_rate,
            "cpu_ms_per_msg": per_msg(cpu["bare"], messages),
        },
        "baton": {
            "seconds": baton_s,
            "msgs_per_s": baton_rate,
            "cpu_ms_per_msg": per_msg(cpu["baton"], messages),
            "phases": [
                {"phase": name, "spans": spans, "ms": median([p[name] for p in baton_phases])}
                for name, spans in PHASES.items()
            ],
        },
        "ratio": baton_rate / bare_rate,
    }


class CpuSplit(NamedTuple):
    """CPU seconds spent during one round by the workers, PostgreSQL and the harness,
    and the workers' thread switches."""

    workers: float
    postgres: float
    harness: float
    switches: float


@contextlib.contextmanager
def measure_cpu(worker_pids: list[int], into: list[CpuSplit]) -> Iterator[None]:
    """Append the CPU (user + system, from /proc) that the block cost each party, and
    the workers' thread switches during it."""

    def sample() -> CpuSplit:
        return CpuSplit(
            workers=_total(worker_pids, _cpu_seconds),
            postgres=_total(_postgres_pids(), _cpu_seconds),
            harness=time.process_time(),
            switches=_total(worker_pids, thread_switches),
        )

    before = sample()
    yield
    after = sample()
    into.append(CpuSplit(*(b - a for a, b in zip(before, after, strict=True))))


def per_msg(rounds: list[CpuSplit], messages: int) -> dict[str, float]:
    """Median CPU ms per message (step) of each party over the rounds, and the
    workers' median thread switches per message (step)."""
    out = {
        party: 1000 * median([getattr(r, party) for r in rounds]) / messages
        for party in ("workers", "postgres", "harness")
    }
    out["switches"] = median([r.switches for r in rounds]) / messages
    return out


def _cpu_seconds(pid: int) -> float:
    return sum(process_cpu(pid))


def _total(pids: list[int], of: Callable[[int], float]) -> float:
    """The sum of `of(pid)` over `pids`, skipping processes that ended meanwhile (a
    PostgreSQL backend, say)."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            total += of(pid)
    return total


def _postgres_pids() -> list[int]:
    """Every process of the local PostgreSQL server (its backends included)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids
