"""Looking inside the hot path: py-spy on the workers, SQL statements per step.

- `Sampler`: attaches ``py-spy record`` (``pip install py-spy``) to worker processes
  for the span of a ``with`` block and writes collapsed stacks (``--format raw``): by
  default only the thread holding the GIL (``--gil``: where the process's one core of
  Python goes), or with ``idle=True`` every thread (wall time, waits included).
- `count_sql`: in a worker process, counts statements and commits by kind; written to
  a JSON file at exit (set BENCH_COUNT_SQL=path for the baton worker app).
- `top_frames`: the heaviest frames of a collapsed-stacks file, self and total.
"""

from __future__ import annotations

import atexit
import collections
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import TracebackType
from typing import Any


class Sampler:
    """py-spy record on `pids` while the block runs; files ``<out_dir>/<label>-<pid>.txt``."""

    def __init__(
        self, pids: list[int], out_dir: Path, *, label: str, rate: int = 200, idle: bool = False
    ) -> None:
        self.pids, self.out_dir, self.label, self.rate = pids, out_dir, label, rate
        self.idle = idle
        self.procs: list[subprocess.Popen[bytes]] = []
        self.files: list[Path] = []

    def __enter__(self) -> Sampler:
        beside = Path(sys.executable).parent / "py-spy"  # the venv's, when not on PATH
        exe = shutil.which("py-spy") or (str(beside) if beside.exists() else None)
        if exe is None:
            raise RuntimeError("py-spy is not installed: pip install py-spy")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for pid in self.pids:
            out = self.out_dir / f"{self.label}-{pid}.txt"
            self.files.append(out)
            cmd = [exe, "record", "--pid", str(pid), "--rate", str(self.rate)]
            cmd.append("--idle" if self.idle else "--gil")
            cmd += ["--format", "raw", "--output", str(out)]
            self.procs.append(
                subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def top_frames(path: Path, *, limit: int = 25, thread_filter: str = "") -> dict[str, Any]:
    """Self and total sample counts per frame (function + file) in a collapsed-stacks file."""
    self_counts: collections.Counter[str] = collections.Counter()
    total_counts: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        if thread_filter and thread_filter not in stack:
            continue
        count = int(count_text)
        samples += count
        frames = [_short(f) for f in stack.split(";")]
        self_counts[frames[-1]] += count
        for frame in set(frames):
            total_counts[frame] += count
    return {
        "samples": samples,
        "self": self_counts.most_common(limit),
        "total": total_counts.most_common(limit),
    }


def _short(frame: str) -> str:
    # "fn (path/to/module.py:123)" -> "fn (module.py)"
    return re.sub(r"\(([^()]*/)?([^/():]+):\d+\)$", r"(\2)", frame.strip())


def count_sql(store: Any, out_path: str) -> None:
    """Count this process's SQL statements (by first words) and commits; dump at exit.

    Statements on PostgreSQL's hot path (`store.driver`) commit by themselves: they are
    counted as ``hot path: <first words>`` and each as a commit.
    """
    import sqlalchemy as sa

    counts: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()
    engine = store.engine

    def kind_of(statement: str) -> str:
        words = statement.split()
        return " ".join(words[:3]) if words else "?"

    @sa.event.listens_for(engine, "before_cursor_execute")
    def _statement(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        with lock:
            counts[kind_of(statement)] += 1

    driver = getattr(store, "driver", None)
    if driver is not None:

        def counting(call: Any) -> Any:
            def counted(sql: str, params: Any) -> Any:
                with lock:
                    counts["hot path: " + kind_of(sql)] += 1
                    counts["COMMIT"] += 1
                return call(sql, params)

            return counted

        driver.one, driver.execute = counting(driver.one), counting(driver.execute)

    @sa.event.listens_for(engine, "commit")
    def _commit(conn: Any) -> None:
        with lock:
            counts["COMMIT"] += 1

    def dump() -> None:
        with lock:
            Path(out_path).write_text(json.dumps(dict(counts), indent=1))

    atexit.register(dump)


#: where a worker's time goes, by the first of these frames found from the leaf up
CATEGORIES = (
    ("Transitions.claim", "store: claim"),
    ("Transitions.complete", "store: complete + propagate"),
    ("Lifecycle.mark_published", "store: finish bookkeeping"),
    ("RedisEventBus.publish", "redis: publish events"),
    ("enqueue_step", "redis: enqueue ready steps"),
    ("_RedisConsumer.ack", "redis: ack"),
    ("WakingConsumer._send_held", "redis: ack"),
    ("_RedisConsumer.__next__", "redis: fetch"),
    ("WakingConsumer._ack_and_fetch", "redis: fetch (with the held acks)"),
    ("JSONEncoder", "json: encode"),
    ("JSONDecoder", "json: decode"),
    ("Actor.__call__", "step body"),
    ("WorkerThread.process_message", "dramatiq: other"),
)
#: frames below which a store sample is the driver or the network, not baton_dramatiq
#: or SQLAlchemy
DRIVER_FRAMES = (
    "_Session.run",
    "Cursor.execute",
    "Cursor.fetchone",
    "Connection.commit",
    "Connection.rollback",
    "connect (",
)


def breakdown(path: Path) -> dict[str, Any]:
    """GIL samples by category; store categories split into driver vs SQLAlchemy."""
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        category = "other threads"
        for frame in reversed(frames):
            match = next((label for marker, label in CATEGORIES if marker in frame), None)
            if match:
                category = match
                break
        if category.startswith("store"):
            driver = any(marker in frame for frame in frames for marker in DRIVER_FRAMES)
            category += " [psycopg]" if driver else " [baton_dramatiq, SQLAlchemy]"
        counts[category] += count
    return {"samples": total, "by_category": counts.most_common()}


def count_redis(out_path: str) -> None:
    """Count this process's Redis round trips (commands and pipelines); dump at exit."""
    import redis

    counts: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()
    execute_command = redis.Redis.execute_command
    pipeline_execute = redis.client.Pipeline.execute

    def counted_command(self: Any, *args: Any, **options: Any) -> Any:
        with lock:
            counts[str(args[0]).upper() if args else "?"] += 1
        return execute_command(self, *args, **options)

    def counted_pipeline(self: Any, *args: Any, **kwargs: Any) -> Any:
        with lock:
            counts["PIPELINE"] += 1
        return pipeline_execute(self, *args, **kwargs)

    redis.Redis.execute_command = counted_command  # type: ignore[method-assign]
    redis.client.Pipeline.execute = counted_pipeline  # type: ignore[method-assign]

    def dump() -> None:
        with lock:
            Path(out_path).write_text(json.dumps(dict(counts), indent=1))

    atexit.register(dump)


def process_cpu(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds used so far by process `pid` (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def thread_switches(pid: int) -> int:
    """Context switches so far of every live thread of process `pid` (Linux /proc):
    each time one of them blocked or was preempted."""
    total = 0
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue  # a thread that ended meanwhile
        for line in text.splitlines():
            if "ctxt_switches:" in line:  # voluntary and nonvoluntary
                total += int(line.split()[1])
    return total
