"""The actors the tests run as workflow steps, declared on whichever broker is given.

Dramatiq binds an actor to a broker when it is declared, so each test setup declares a
fresh set. Worker processes declare the same set in `worker_app`.
"""

from __future__ import annotations

import asyncio
import os
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dramatiq

import baton_dramatiq as baton

#: called with (workflow_id, step_name) each time a step body runs
Recorder = Callable[[str, str], None]

FAST_RETRY = {"min_backoff": 10, "max_backoff": 40}


def declare(broker: dramatiq.Broker, record: Recorder) -> types.SimpleNamespace:
    """Declare every test actor on `broker`; returns them by name."""

    def ran() -> baton.StepContext:
        ctx = baton.current_step()
        record(ctx.workflow_id, ctx.step_name)
        return ctx

    @baton.workflow_actor(broker=broker, max_retries=0)
    def echo(value: Any = None) -> Any:
        ran()
        return value

    @baton.workflow_actor(broker=broker, max_retries=0)
    def record_deps(sleep: float = 0.0) -> dict[str, Any]:
        ctx = ran()
        if sleep:
            time.sleep(sleep)
        return {"step": ctx.step_name, "saw": sorted(baton.get_all_results())}

    @baton.workflow_actor(broker=broker, max_retries=0)
    def boom(message: str = "boom") -> None:
        ran()
        raise RuntimeError(message)

    @baton.workflow_actor(broker=broker, max_retries=3, **FAST_RETRY)
    def flaky(fail_times: int) -> dict[str, int]:
        ctx = ran()
        if ctx.attempt <= fail_times:
            raise ValueError(f"attempt {ctx.attempt} fails")
        return {"attempt": ctx.attempt}

    @baton.workflow_actor(broker=broker, max_retries=3, **FAST_RETRY)
    def hopeless() -> None:
        ran()
        error = baton.BatonError("no retry can fix this")
        error.retryable = False
        raise error

    @baton.workflow_actor(broker=broker, max_retries=0)
    def snoozer(marker: str, seconds: float = 0.2) -> dict[str, int]:
        ctx = ran()
        path = Path(marker)
        if not path.exists():
            path.write_text("snoozed")
            raise baton.Snooze(seconds)
        return {"attempt": ctx.attempt}

    @baton.workflow_actor(broker=broker, max_retries=0)
    def sleeper(seconds: float) -> float:
        ran()
        time.sleep(seconds)
        return seconds

    @baton.workflow_actor(broker=broker, max_retries=2, **FAST_RETRY)
    def bad_result(kind: str) -> Any:
        ran()
        if kind == "set":
            return {1, 2, 3}
        if kind == "nan":
            return float("nan")
        return "x" * int(kind)

    @baton.workflow_actor(broker=broker, max_retries=0)
    def tolerant() -> dict[str, Any]:
        ctx = ran()
        ok, failed = {}, []
        for dep in ctx.deps:
            try:
                ok[dep] = baton.get_result(dep)
            except baton.DependencyFailed:
                failed.append(dep)
        return {"ok": ok, "failed": failed}

    @baton.workflow_actor(broker=broker, max_retries=0)
    def ask(name: str) -> Any:
        ran()
        try:
            return baton.get_result(name)
        except baton.UnknownDependency as exc:
            return {"error": type(exc).__name__, "message": str(exc)}

    @baton.workflow_actor(broker=broker, max_retries=0)
    async def async_echo(value: Any = None) -> Any:
        ran()
        await asyncio.sleep(0.01)
        return {
            "value": value,
            "deps": baton.get_all_results(),
            "step": baton.current_step().step_name,
        }

    @dramatiq.actor(broker=broker)
    def plain(path: str) -> None:
        Path(path).write_text(str(os.getpid()))

    return types.SimpleNamespace(
        echo=echo,
        record_deps=record_deps,
        boom=boom,
        flaky=flaky,
        snoozer=snoozer,
        hopeless=hopeless,
        sleeper=sleeper,
        bad_result=bad_result,
        tolerant=tolerant,
        ask=ask,
        async_echo=async_echo,
        plain=plain,
    )
