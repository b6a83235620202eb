"""``python -m bench``: run the benchmarks, print markdown, write JSON.

    python -m bench                  # everything, full sizes (takes a while)
    python -m bench --quick          # small sizes: a smoke run
    python -m bench --only diamonds  # one scenario (repeat --only or use commas)
    python -m bench --json out.json  # default: bench/results/latest.json
    python -m bench --only profile   # the hot path of baton_dramatiq (needs py-spy)
    python -m bench --only idle      # a workflow sent to an idle worker, per worker_timeout
    python -m bench --only store     # the store alone, from 8 threads: steps/s, CPU per step
    python -m bench --cleanup        # drop what a killed run left behind

Scenarios: overhead, diamonds, fanin, scale, events (and profile, prune, idle, store, on
request).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import logging
import os
import platform
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import psycopg
import redis

from . import report
from .config import Settings
from .scenarios import diamonds, events, fanin, idle, overhead, profile, prune, scale, store
from .services import Services
from .workers import ROOT

SCENARIOS = {
    m.NAME: m for m in (overhead, diamonds, fanin, scale, events, profile, prune, idle, store)
}
DEFAULT = ["overhead", "diamonds", "fanin", "scale", "events"]
DEFAULT_JSON = ROOT / "bench" / "results" / "latest.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    p.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help=f"run only these scenarios ({', '.join(SCENARIOS)})",
    )
    p.add_argument(
        "--json", type=Path, default=DEFAULT_JSON, metavar="PATH", help="where to write JSON"
    )
    p.add_argument("--processes", type=int, help="worker processes per contender (default 1)")
    p.add_argument(
        "--threads", type=int, help="threads (Celery: concurrency) per process (default 8)"
    )
    p.add_argument(
        "--worker-timeout",
        type=int,
        metavar="MS",
        help="Dramatiq consumer back-off cap, every Dramatiq contender (default 10)",
    )
    p.add_argument(
        "--celery-pool", choices=["prefork", "threads"], help="Celery pool (default prefork)"
    )
    p.add_argument("--diamonds", type=int, help="diamonds per contender in scenario 2")
    p.add_argument("--rounds", type=int, help="rounds of scenario 2 (default 3; median reported)")
    p.add_argument("--contenders", help=f"scenario 2 only these: {', '.join(diamonds.CONTENDERS)}")
    p.add_argument(
        "--scale-sizes", help="scenario 4 sizes, comma-separated (default 100,1000,10000,50000)"
    )
    p.add_argument(
        "--scale-run-max",
        action="append",
        default=[],
        metavar="SHAPE=N",
        help="scenario 4: run workflows of SHAPE (wide, chain) up to N steps (default 50000 each)",
    )
    p.add_argument("--cleanup", action="store_true", help="drop leftover bench databases and keys")
    return p.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    s = Settings()
    if args.quick:
        s = s.quick_sizes()
    for attr, value in (
        ("processes", args.processes),
        ("threads", args.threads),
        ("worker_timeout_ms", args.worker_timeout),
        ("celery_pool", args.celery_pool),
        ("diamonds", args.diamonds),
        ("diamond_rounds", args.rounds),
    ):
        if value is not None:
            setattr(s, attr, value)
    if args.scale_sizes:
        s.scale_sizes = tuple(int(n) for n in args.scale_sizes.split(","))
    for item in args.scale_run_max:
        shape, _, steps = item.partition("=")
        s.scale_run_max = {**s.scale_run_max, shape: int(steps)}
    return s


def environment(settings: Settings) -> dict[str, Any]:
    """Machine, versions and settings, printed above the tables."""
    versions = {}
    for package in (
        "baton_dramatiq",
        "dramatiq",
        "celery",
        "kombu",
        "dramatiq-workflow",
        "redis",
        "psycopg",
        "SQLAlchemy",
    ):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    with psycopg.connect(settings.pg_admin_url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
        versions["PostgreSQL"] = row[0].split()[0] if row else "?"
    client = redis.Redis.from_url(settings.redis_url)
    versions["Redis"] = str(client.info("server")["redis_version"])
    client.close()
    return {
        "host": socket.gethostname(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_at_start": os.getloadavg(),
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "versions": versions,
    }


def header(env: dict[str, Any], s: Settings) -> str:
    v = env["versions"]
    kind = "quick smoke run (small sizes)" if s.quick else "full run"
    return (
        f"### Benchmark: {kind}, {env['started']} on `{env['host']}` ({env['cpus']} CPUs, "
        f"load average at start {env['load_average_at_start'][0]:.2f})\n\n"
        f"Every contender: its own fresh Redis namespace (and PostgreSQL database), "
        f"{s.processes} worker process(es) × {s.threads} threads, started and stopped by the "
        f"harness; Dramatiq contenders: RedisBroker, `worker_timeout` {s.worker_timeout_ms} ms; "
        f"Celery: pool {s.celery_pool}, concurrency {s.threads}, Redis broker and result backend. "
        f"No-op steps returning a small dict. Versions: Python {env['python']}, "
        + ", ".join(f"{k} {val}" for k, val in v.items())
        + "."
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    settings = settings_from(args)
    services = Services(settings.pg_admin_url, settings.redis_url)
    if args.cleanup:
        dbs, keys = services.cleanup_leftovers()
        print(f"dropped {dbs} database(s) and {keys} Redis key(s)")
        return 0
    names = [n for item in args.only for n in item.split(",") if n] or DEFAULT
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        print(f"unknown scenario(s): {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
        return 2
    wanted = args.contenders.split(",") if args.contenders else []
    if any(key not in diamonds.CONTENDERS for key in wanted):
        print(f"--contenders: choose from {', '.join(diamonds.CONTENDERS)}")
        return 2
    env = environment(settings)
    out: dict[str, Any] = {
        "environment": env,
        "settings": settings.as_dict(),
        "results": {},
        "errors": {},
    }
    print(header(env, settings), flush=True)
    try:
        for name in names:
            print(f"\n[{name}] running...", file=sys.stderr, flush=True)
            start = time.monotonic()
            try:
                if name == "diamonds" and wanted:
                    result = diamonds.run(services, settings, wanted)
                else:
                    result = SCENARIOS[name].run(services, settings)
            except KeyboardInterrupt:
                raise
            except Exception as exc:
                traceback.print_exc()
                out["errors"][name] = f"{type(exc).__name__}: {exc}"
                print(f"\n**{name} failed**: {type(exc).__name__}: {exc}", flush=True)
                continue
            result["duration_s"] = time.monotonic() - start
            out["results"][name] = result
            if result.get("errors"):  # some contenders failed, the others were measured
                out["errors"][name] = result["errors"]
            print("\n" + report.SECTIONS[name](result), flush=True)
    finally:
        services.close()
        summary = report.targets(out["results"])
        if summary:
            print("\n" + summary)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1, default=str))
        print(f"\nJSON: {args.json}", file=sys.stderr)
    return 1 if out["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
