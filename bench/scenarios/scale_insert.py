"""One scale insert in its own process: ``python -m bench.scenarios.scale_insert SHAPE STEPS``.

Builds a ``wide`` (1 -> STEPS-2 -> 1) or ``chain`` workflow of no-op steps and inserts
it into the database named by BENCH_DATABASE_URL; prints one JSON line: build and insert
seconds, peak RSS before and after (``resource.getrusage``: the process's high-water
mark, which hides growth below the high-water mark left by start-up) and the workflow id.

With a third argument ``tracemalloc`` it measures memory instead: the peak of Python
allocations while building and inserting (exact, but slower, so no times), and cancels
the workflow right after inserting it, so that it never runs.
"""

from __future__ import annotations

import json
import resource
import sys
import time
import tracemalloc

import dramatiq

from ..config import AppConfig
from ..contenders import baton_app

SHAPES = {"wide": baton_app.wide, "chain": baton_app.chain}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    shape, steps = sys.argv[1], int(sys.argv[2])
    app = baton_app.App(AppConfig.from_env())
    dramatiq.set_broker(app.broker)
    if sys.argv[3:] == ["tracemalloc"]:
        traced(app, shape, steps)
        return
    baseline = peak_rss_mb()
    start = time.perf_counter()
    wf = SHAPES[shape](app.actors, steps)
    built = time.perf_counter()
    run = wf.insert(broker=app.broker, store=app.store)
    inserted = time.perf_counter()
    print(
        json.dumps(
            {
                "workflow_id": run.id,
                "build_s": built - start,
                "insert_s": inserted - built,
                "rss_before_mb": baseline,
                "rss_peak_mb": peak_rss_mb(),
            }
        ),
        flush=True,
    )
    app.close()


def traced(app: baton_app.App, shape: str, steps: int) -> None:
    tracemalloc.start()
    wf = SHAPES[shape](app.actors, steps)
    run = wf.insert(broker=app.broker, store=app.store)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    run.cancel()
    print(json.dumps({"traced_peak_mb": peak / 2**20}), flush=True)
    app.close()


if __name__ == "__main__":
    main()
