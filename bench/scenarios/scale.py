"""4. Scale: insert (and run) workflows of 100 to 50,000 no-op steps, wide and chained.

For each shape (``wide``: 1 -> N-2 -> 1; ``chain``: N in a row) and size, in a fresh
database: a subprocess builds and inserts the workflow under tracemalloc (peak Python
memory; that workflow is cancelled before any worker starts), then another builds and
inserts it for real and reports build time, insert time and peak RSS (`scale_insert`).
When the size is at most the shape's ``scale_run_max`` the workers run it too (after
an unmeasured 50-step workflow of the same shape has warmed them up), and the run time
is the workflow's finish (stamped in the store) minus the moment the insert returned;
runs of up to 1,000 steps, over in well under a second, are repeated three times and
the median is reported.
Bigger sizes are inserted only, and the table says so; a run past
``scale_run_timeout_s`` is cancelled and reported as a timeout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import baton_dramatiq as baton

from ..config import Settings
from ..contenders import app_config, baton_app
from ..services import Services
from ..stats import median
from ..workers import ROOT, Workers

NAME = "scale"
SHAPES = ("wide", "chain")
#: a workflow of this many steps runs first, unmeasured, on the fresh workers
WARM_UP_STEPS = 50
#: runs of at most this many steps are repeated, and their median reported
SMALL_RUN_STEPS = 1_000
SMALL_RUN_ROUNDS = 3


def insert(
    env: dict[str, str], shape: str, steps: int, timeout: float, *mode: str
) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.scenarios.scale_insert", shape, str(steps), *mode],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"scale insert {shape} {steps} failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def wait_run(
    store: baton.Store, workflow_id: str, timeout: float, workers: Workers
) -> dict[str, Any]:
    """Wait for the workflow to finish; cancel it after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        view = baton.query.get_workflow(workflow_id, store=store)
        if view.outcome is not None:
            assert view.finished_at is not None
            return {"outcome": view.outcome, "finished_at": view.finished_at.timestamp()}
        if time.monotonic() > deadline:
            baton.WorkflowRun.get(workflow_id, store=store).cancel()
            return {"outcome": f"timeout after {timeout:.0f} s (cancelled)"}
        workers.check_alive()
        time.sleep(0.05)


def one(services: Services, settings: Settings, shape: str, steps: int) -> dict[str, Any]:
    run_it = steps <= settings.scale_run_max.get(shape, 0)
    row: dict[str, Any] = {"shape": shape, "steps": steps, "ran": run_it}
    with services.environment(database=True) as env:
        cfg = app_config(settings, env)
        workers = Workers(
            baton_app.MODULE, cfg.to_env(), count=settings.processes, label="baton-scale"
        )
        store = baton.Store(env.database_url)
        child_env = dict(os.environ, **cfg.to_env())
        try:
            # memory first, while no worker runs: that workflow is cancelled at once
            row.update(insert(child_env, shape, steps, settings.scale_run_timeout_s, "tracemalloc"))
            if run_it:
                workers.start()
                # warm: connections open and statements prepared, as in a live deployment
                warm = insert(child_env, shape, WARM_UP_STEPS, settings.scale_run_timeout_s)
                wait_run(store, warm["workflow_id"], settings.scale_run_timeout_s, workers)
            row.update(insert(child_env, shape, steps, settings.scale_run_timeout_s))
            row["rss_delta_mb"] = row["rss_peak_mb"] - row["rss_before_mb"]
            if run_it:
                row.update(
                    wait_run(store, row["workflow_id"], settings.scale_run_timeout_s, workers)
                )
                if "finished_at" in row:
                    runs = [row["finished_at"] - row["inserted_at"]]
                    # a small run is over in a blink: its median over several is reported
                    for _ in range(1, SMALL_RUN_ROUNDS if steps <= SMALL_RUN_STEPS else 1):
                        again = insert(child_env, shape, steps, settings.scale_run_timeout_s)
                        done = wait_run(
                            store, again["workflow_id"], settings.scale_run_timeout_s, workers
                        )
                        if "finished_at" not in done:
                            break
                        runs.append(done["finished_at"] - again["inserted_at"])
                    row["run_s_each"] = runs
                    row["run_s"] = median(runs)
                    row["run_ms_per_step"] = 1000 * row["run_s"] / steps
        finally:
            workers.stop()
            store.dispose()
    return row


def run(services: Services, settings: Settings) -> dict[str, Any]:
    rows = [
        one(services, settings, shape, steps) for shape in SHAPES for steps in settings.scale_sizes
    ]
    return {"rows": rows, "run_max": settings.scale_run_max}
