"""2. Diamond throughput: N research-brief diamonds of no-op steps submitted at once.

For each contender, in turn, with its own fresh environment and workers: a warm-up of
5 diamonds, then N submitted back to back. Throughput is N over the time from the first
submit to the last fan-in finish; latency is each diamond's fan-in finish minus its own
submit time. For baton_dramatiq the fan-in latency under this load is also read from
the store.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import time
from typing import Any

from ..config import Settings
from ..contenders import DiamondClient, baton_app
from ..services import Services
from ..stats import median, summary_ms
from . import fanin, submit_diamonds, warm_up

NAME = "diamonds"
logger = logging.getLogger("bench")

#: contender key -> (module in bench.contenders, keyword arguments of its `running`), in
#: the order they run; imported when run, so a peer that is not installed fails alone
CONTENDERS: dict[str, tuple[str, dict[str, Any]]] = {
    "baton": ("baton_app", {}),
    "celery": ("celery_app", {}),
    "dramatiq-workflow": ("dqw_app", {"with_results": False}),
    "dramatiq-workflow+results": ("dqw_app", {"with_results": True}),
    "group+callback": ("group_app", {}),
}


def start(
    key: str, services: Services, settings: Settings
) -> contextlib.AbstractContextManager[Any]:
    """The contender's environment and workers; yields its DiamondClient."""
    module_name, kwargs = CONTENDERS[key]
    module = importlib.import_module(f"bench.contenders.{module_name}")
    return module.running(services, settings, **kwargs)  # type: ignore[no-any-return]


def measure(client: DiamondClient, count: int, timeout: float) -> dict[str, Any]:
    """Submit `count` diamonds at once and time them to their fan-in finish."""
    start = time.time()
    submits = submit_diamonds(client, count)
    submit_s = time.time() - start
    client.board.wait(count, timeout, check=client.workers.check_alive)
    done = client.board.times()
    elapsed = max(done.values()) - start
    return {
        "elapsed_s": elapsed,
        "submit_s": submit_s,
        "diamonds_per_s": count / elapsed,
        "latency": summary_ms([done[key] - at for key, at in submits.items()]),
        "_submits": submits,
    }


def run(
    services: Services, settings: Settings, contenders: list[str] | None = None
) -> dict[str, Any]:
    keys = contenders or list(CONTENDERS)
    rounds: dict[str, list[dict[str, Any]]] = {key: [] for key in keys}
    names: dict[str, tuple[str, str]] = {}
    errors: dict[str, str] = {}
    for _ in range(settings.diamond_rounds):
        for key in keys:
            if key in errors:
                continue
            try:
                with start(key, services, settings) as client:
                    warm_up(client, 5, settings.timeout_s)
                    result = measure(client, settings.diamonds, settings.timeout_s)
                    submits = result.pop("_submits")
                    if isinstance(client, baton_app.Client):
                        ids = [client.runs[k].id for k in submits]
                        under_load = fanin.latencies(client.store, ids)
                        result["fan_in_under_load"] = summary_ms(under_load["fan_in"])
                        result["outcomes"] = under_load["outcomes"]
                    names[key] = (client.name, client.results_note)
                    rounds[key].append(result)
            except Exception as exc:  # one contender failing does not stop the others
                logger.exception("diamonds: contender %s failed", key)
                errors[key] = f"{type(exc).__name__}: {exc}"
    out: dict[str, Any] = {"diamonds": settings.diamonds, "contenders": {}, "errors": errors}
    for key in keys:
        runs = rounds[key]
        if not runs:
            continue
        best = sorted(runs, key=lambda r: r["diamonds_per_s"])[len(runs) // 2]  # median round
        out["contenders"][key] = {
            "name": names[key][0],
            "results_to_fan_in": names[key][1],
            "diamonds_per_s": median([r["diamonds_per_s"] for r in runs]),
            "latency": best["latency"],
            "rounds": runs,
        }
    return out
