"""4. Scale: insert (and run) workflows of 100 to 50,000 no-op steps, wide and chained.

For each shape (``wide``: 1 -> N-2 -> 1; ``chain``: N in a row) and size, in a fresh
database that no worker reads: a subprocess builds and inserts the workflow under
tracemalloc (peak Python memory), then another builds and inserts it for real and
reports build time, insert time and peak RSS (`scale_insert`). When the size is at most
the shape's ``scale_run_max``, fresh workers on a database of their own run it: after
an unmeasured 50-step workflow of the same shape has warmed them up, the harness
inserts it and waits for its finish (`baton_app.Client.run_to_finish`), and the run time
is the workflow's finish (stamped in the store) minus the moment the insert returned.
Runs of up to 1,000 steps, over in about a second or less, are repeated five times and
the median is reported.
Bigger sizes are inserted only, and the table says so; a run past
``scale_run_timeout_s`` is cancelled and reported as a timeout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from ..config import Settings
from ..contenders import app_config, baton_app
from ..services import Services
from ..stats import median
from ..workers import ROOT
from . import scale_insert

NAME = "scale"
SHAPES = ("wide", "chain")
#: a workflow of this many steps runs first, unmeasured, on the fresh workers
WARM_UP_STEPS = 50
#: runs of at most this many steps are repeated, and their median reported
SMALL_RUN_STEPS = 1_000
SMALL_RUN_ROUNDS = 5


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


def one(services: Services, settings: Settings, shape: str, steps: int) -> dict[str, Any]:
    run_it = steps <= settings.scale_run_max.get(shape, 0)
    row: dict[str, Any] = {"shape": shape, "steps": steps, "ran": run_it}
    timeout = settings.scale_run_timeout_s
    with services.environment(database=True) as env:
        # each in a process of its own, into a fresh database that no worker reads
        child_env = dict(os.environ, **app_config(settings, env).to_env())
        row.update(insert(child_env, shape, steps, timeout, "tracemalloc"))
        row.update(insert(child_env, shape, steps, timeout))
        row["rss_delta_mb"] = row["rss_peak_mb"] - row["rss_before_mb"]
    if run_it:
        row.update(run_times(services, settings, shape, steps))
    return row


def run_times(services: Services, settings: Settings, shape: str, steps: int) -> dict[str, Any]:
    """Run the workflow on fresh workers, warmed up by a small one of the same shape.

    The run time is its finish (stamped in the store) minus the moment the insert
    returned.
    """
    build = scale_insert.SHAPES[shape]
    timeout = settings.scale_run_timeout_s
    runs: list[float] = []
    with baton_app.running(services, settings, label="baton-scale") as client:
        # warm: connections open and statements prepared, as in a live deployment
        client.run_to_finish(build(client.actors, WARM_UP_STEPS), timeout)
        # a small run is over in a blink: its median over several is reported
        for _ in range(SMALL_RUN_ROUNDS if steps <= SMALL_RUN_STEPS else 1):
            try:
                finish = client.run_to_finish(build(client.actors, steps), timeout)
            except TimeoutError:
                return {"outcome": f"timeout after {timeout:.0f} s (cancelled)"}
            runs.append(finish.seconds_after_insert)
    run_s = median(runs)
    return {
        "outcome": finish.view.outcome,
        "run_s_each": runs,
        "run_s": run_s,
        "run_ms_per_step": 1000 * run_s / steps,
    }


def run(services: Services, settings: Settings) -> dict[str, Any]:
    rows = [
        one(services, settings, shape, steps) for shape in SHAPES for steps in settings.scale_sizes
    ]
    return {"rows": rows, "run_max": settings.scale_run_max}
