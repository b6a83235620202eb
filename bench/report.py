"""Markdown tables and the speed targets, from the results of a run."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .stats import median

# -- formatting --------------------------------------------------------------------------


def num(value: Any, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.{digits}f}"


def ms(summary: dict[str, Any], key: str) -> str:
    return num(summary.get(key), 1)


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# -- one section per scenario ------------------------------------------------------------


def overhead(r: dict[str, Any]) -> str:
    def cpu(side: dict[str, Any]) -> list[str]:
        split = side.get("cpu_ms_per_msg", {})
        parties = ("workers", "postgres", "harness")
        cells = [num(split[k], 2) if k in split else "–" for k in parties]
        return cells + [num(split["switches"], 1) if "switches" in split else "–"]

    rows = [
        ["bare Dramatiq", f"{r['messages']} messages", num(r["bare"]["msgs_per_s"]), "1.00"]
        + cpu(r["bare"]),
        [
            "baton_dramatiq",
            f"1 → {r['width']} → 1 workflow",
            num(r["baton"]["msgs_per_s"]),
            num(r["ratio"], 2),
        ]
        + cpu(r["baton"]),
    ]
    head = (
        f"**1. Overhead** (median of {r['rounds']} alternating round(s); CPU: ms per message"
        " or step, from /proc; thread switches: the workers' context switches per message"
        " or step)\n\n"
    )
    columns = ["contender", "work", "msgs (steps)/s", "ratio"]
    columns += ["CPU: workers", "CPU: PostgreSQL", "CPU: harness", "thread switches: workers"]
    return head + table(columns, rows) + overhead_phases(r)


def overhead_phases(r: dict[str, Any]) -> str:
    phases = r["baton"].get("phases")
    if not phases:
        return ""
    total = sum(p["ms"] for p in phases)
    rows = [
        [
            p["phase"].replace("_", " "),
            p["spans"],
            num(p["ms"], 1),
            f"{100 * p['ms'] / total:.0f} %" if p["ms"] >= 0 else "–",
        ]
        for p in phases
    ]
    middle_ms = next(p["ms"] for p in phases if p["phase"] == "middle")
    return (
        "\n\nWhere a baton_dramatiq round's time goes (medians of the rounds, from the"
        f" steps' timestamps in the store); its {r['width']} middle steps ran at"
        f" {num(r['width'] / (middle_ms / 1000))} steps/s:\n\n"
        + table(["phase", "spans", "ms", "share"], rows)
    )


def diamonds(r: dict[str, Any]) -> str:
    rows = []
    for c in r["contenders"].values():
        lat = c["latency"]
        rows.append(
            [
                c["name"],
                c["results_to_fan_in"],
                num(c["diamonds_per_s"]),
                ms(lat, "p50_ms"),
                ms(lat, "p95_ms"),
            ]
        )
    for key, error in r.get("errors", {}).items():
        rows.append([key, f"failed: {error}", "–", "–", "–"])
    head = f"**2. Diamond throughput** ({r['diamonds']} diamonds submitted at once)\n\n"
    text = head + table(
        ["contender", "results into the fan-in step", "diamonds/s", "p50 ms", "p95 ms"], rows
    )
    baton = r["contenders"].get("baton", {}).get("rounds", [{}])[0].get("fan_in_under_load")
    if baton:
        text += (
            f"\n\nbaton_dramatiq fan-in latency under this load (from the store): p50 "
            f"{ms(baton, 'p50_ms')} ms, p95 {ms(baton, 'p95_ms')} ms, p99 {ms(baton, 'p99_ms')} ms."
        )
    return text


def fanin(r: dict[str, Any]) -> str:
    rows = []
    for run in r["runs"]:
        poll = f"{run['worker_timeout_ms']} ms"
        for label, s in (
            ("baton_dramatiq: fan-in (3 deps → compile_brief)", run["fan_in"]),
            ("baton_dramatiq: single hop (fetch_sources → middle step)", run["single_hop"]),
            ("bare Dramatiq: an actor sends the next (send → its body starts)", run["bare_hop"]),
        ):
            rows.append(
                [poll, label, str(s["n"]), ms(s, "p50_ms"), ms(s, "p95_ms"), ms(s, "p99_ms")]
            )
    head = (
        f"**3. Fan-in latency** ({r['diamonds']} diamonds, or bare hops, at "
        f"{num(r['pace_per_s'])}/s; last dependency finished → fan-in step started; "
        "`worker_timeout`: the longest an idle Redis consumer sleeps between fetches)\n\n"
    )
    return head + table(["worker_timeout", "hop", "n", "p50 ms", "p95 ms", "p99 ms"], rows)


def scale(r: dict[str, Any]) -> str:
    rows = []
    for row in r["rows"]:
        if not row["ran"]:
            run_s, per_step = "not run (insert only)", "–"
        elif "run_s" in row:
            run_s, per_step = num(row["run_s"], 2), num(row["run_ms_per_step"], 2)
        else:
            run_s, per_step = row.get("outcome", "?"), "–"
        rows.append(
            [
                row["shape"],
                num(row["steps"]),
                num(row["build_s"], 3),
                num(row["insert_s"], 3),
                num(row["traced_peak_mb"], 1),
                num(row["rss_peak_mb"], 0),
                run_s,
                per_step,
            ]
        )
    head = (
        "**4. Scale** (wide = 1 → N-2 → 1, chain = N in a row; build + insert in a process of "
        "its own: peak of Python allocations (tracemalloc), and the process's peak RSS)\n\n"
    )
    header = [
        "shape",
        "steps",
        "build s",
        "insert s",
        "traced peak MB",
        "peak RSS MB",
        "run s",
        "run ms/step",
    ]
    return head + table(header, rows)


def events(r: dict[str, Any]) -> str:
    rows = [["all events", *(_lat(r["all"]))]]
    rows += [[kind, *(_lat(s))] for kind, s in r["by_kind"].items()]
    head = (
        f"**5. Event latency** ({r['diamonds']} diamonds at {num(r['pace_per_s'])}/s; "
        "payload `at` → received by a subscriber process)\n\n"
    )
    return head + table(["event", "n", "p50 ms", "p95 ms", "p99 ms"], rows)


def _lat(s: dict[str, Any]) -> list[str]:
    return [str(s["n"]), ms(s, "p50_ms"), ms(s, "p95_ms"), ms(s, "p99_ms")]


def profile(r: dict[str, Any]) -> str:
    a = r["unobserved"]
    cpu = a["worker_cpu_ms_per_step"]
    lines = [
        f"**Hot path** ({r['diamonds']} diamonds; unobserved pass: "
        f"{num(a['diamonds_per_s'])} diamonds/s, "
        f"worker CPU {num(cpu['user'], 2)} ms user + {num(cpu['system'], 2)} ms system per step, "
        f"{num(100 * a['worker_cpu_share_of_one_core'])}% of one core per worker process, "
        f"{num(a['pg_commits_per_step'], 2)} PostgreSQL commits per step)",
        "",
        table(
            ["where the GIL is held (py-spy --gil)", "ms per step"],
            [
                [k, num(v, 2)]
                for k, v in sorted(r["gil_ms_per_step"].items(), key=lambda kv: -kv[1])
            ],
        ),
        "",
        table(
            ["per step", "count"],
            [[f"SQL: {k}", num(v, 2)] for k, v in r["per_step_counts"]["sql"].items()]
            + [
                [f"Redis: {k}", num(v, 2)]
                for k, v in r["per_step_counts"]["redis_round_trips"].items()
            ],
        ),
    ]
    lines += ["", "(Redis HSET: the benchmark's own finish record, once per diamond.)"]
    waits = r.get("pg_waits")
    if waits:
        lines += ["", pg_waits(waits)]
    calls = r.get("store_calls_one_thread", {})
    if "error" in calls:
        lines += ["", f"Store calls, one thread: not measured ({calls['error']})"]
    elif calls:
        rows = [[k, num(v["wall_ms"], 2), num(v["cpu_ms"], 2)] for k, v in calls.items()]
        lines += ["", table(["store call, one thread, no contention", "wall ms", "CPU ms"], rows)]
    return "\n".join(lines)


def pg_waits(w: dict[str, Any]) -> str:
    """Where each hot statement's time in PostgreSQL went, as `PgWaits` sampled it."""
    classes = list(dict.fromkeys(wait for s in w["statements"].values() for wait in s["shares"]))
    rows = [
        [kind, num(s["samples"])] + [f"{100 * s['shares'].get(c, 0):.0f} %" for c in classes]
        for kind, s in w["statements"].items()
    ]
    head = (
        f"**PostgreSQL's backends** during a 1 → {num(w['steps'] - 2)} → 1 workflow "
        f"({num(w['steps'] / w['seconds'])} steps/s while sampled; pg_stat_activity read "
        f"{num(w['samples'])} times, {num(w['mean_active_backends'], 2)} backends running "
        "a statement on average)"
    )
    return head + "\n\n" + table(["statement", "samples"] + classes, rows)


def prune(r: dict[str, Any]) -> str:
    return f"**Pruning** ({num(r['steps'])} finished steps, Sweeper defaults)\n\n" + table(
        ["workflows", "rows", "transactions", "seconds", "writes beside it", "slowest write ms"],
        [
            [
                num(r["workflows"]),
                num(r["rows"]),
                num(r["transactions"]),
                num(r["seconds"], 2),
                num(r["concurrent_writes"]),
                num(r["slowest_concurrent_write_ms"], 1),
            ]
        ],
    )


def store(r: dict[str, Any]) -> str:
    head = (
        f"**The store alone** ({num(r['diamonds'])} diamonds claimed and completed by "
        f"{r['threads']} threads in one process, no broker, no events; median of "
        f"{r['rounds']} rounds; CPU from /proc)\n\n"
    )
    columns = ["steps/s", "CPU: client, ms per step", "CPU: PostgreSQL, ms per step"]
    row = [
        num(r["steps_per_s"]),
        num(r["client_cpu_ms_per_step"], 3),
        num(r["postgres_cpu_ms_per_step"], 3),
    ]
    return head + table(columns, [row])


def idle(r: dict[str, Any]) -> str:
    rows = []
    for run in r["runs"]:
        first, hop = run["first_step"], run["hop"]
        rows.append(
            [
                f"{run['worker_timeout_ms']} ms",
                ms(first, "p50_ms"),
                ms(first, "max_ms"),
                ms(hop, "p50_ms"),
                num(run["idle_evalsha_per_s"]),
                ms(run["bare_first_message"], "p50_ms"),
                ms(run["bare_first_message"], "max_ms"),
            ]
        )
    head = (
        f"**A workflow sent to an idle worker** ({r['samples']} 2-step chains per setting, "
        f"each after {num(r['idle_s'])} s idle; first step: its start minus the insert's "
        "return; idle polling: the idle worker process's Redis fetches; bare Dramatiq: "
        "as many messages, each after the same idle spell, send to start)\n\n"
    )
    columns = ["worker_timeout", "first step p50 ms", "first step max ms", "hop p50 ms"]
    bare = ["bare Dramatiq: first message p50 ms", "max ms"]
    return head + table(columns + ["idle polling, EVALSHA/s", *bare], rows)


SECTIONS: dict[str, Callable[[dict[str, Any]], str]] = {
    "overhead": overhead,
    "diamonds": diamonds,
    "fanin": fanin,
    "scale": scale,
    "events": events,
    "profile": profile,
    "prune": prune,
    "idle": idle,
    "store": store,
}


# -- targets -----------------------------------------------------------------------------


def targets(results: dict[str, Any]) -> str:
    """The speed targets that this run measured: value and met or not."""
    rows: list[list[str]] = []

    def add(target: str, value: str, met: bool | None) -> None:
        rows.append([target, value, "–" if met is None else ("yes" if met else "**no**")])

    if "overhead" in results:
        ratio = results["overhead"]["ratio"]
        add("overhead ≥ 0.6× bare Dramatiq msgs/s", num(ratio, 2) + "×", ratio >= 0.6)
    if "diamonds" in results:
        c = results["diamonds"]["contenders"]
        if "baton" in c:
            ours = c["baton"]
            for key, factor in (
                ("celery", 1.5),
                ("dramatiq-workflow", 1.5),
                ("group+callback", 1.0),
            ):
                if key in c:
                    ratio = ours["diamonds_per_s"] / c[key]["diamonds_per_s"]
                    word = f"≥ {factor}×" if factor > 1 else "ahead of"
                    add(
                        f"diamonds/s {word} {c[key]['name']}",
                        num(ratio, 2) + "×",
                        ratio >= factor if factor > 1 else ratio > 1,
                    )
            peers = [k for k in ("celery", "dramatiq-workflow", "group+callback") if k in c]
            if peers:
                p95 = ours["latency"]["p95_ms"]
                best = min(c[k]["latency"]["p95_ms"] for k in peers)
                add(
                    "diamond p95 lower than all three peers",
                    f"{num(p95, 1)} ms vs best {num(best, 1)} ms",
                    p95 < best,
                )
    for run in results.get("fanin", {}).get("runs", []):
        f, bare, poll = run["fan_in"], run["bare_hop"], run["worker_timeout_ms"]
        where = f"(worker_timeout {poll} ms; bare Dramatiq's hop p50 {ms(bare, 'p50_ms')} ms)"
        add(f"fan-in p50 ≤ 5 ms {where}", f"{ms(f, 'p50_ms')} ms", f["p50_ms"] <= 5)
        p99 = f"{ms(f, 'p99_ms')} ms"
        add(f"fan-in p99 ≤ 50 ms (worker_timeout {poll} ms)", p99, f["p99_ms"] <= 50)
    if "scale" in results:
        _scale_targets(results["scale"]["rows"], add)
    if not rows:
        return ""
    return "**Speed targets**\n\n" + table(["target", "measured", "met"], rows)


def _scale_targets(
    rows: list[dict[str, Any]], add: Callable[[str, str, bool | None], None]
) -> None:
    for row in rows:
        if row["steps"] == 10_000:
            add(
                f"insert 10,000 steps ≤ 1 s ({row['shape']})",
                num(row["insert_s"], 3) + " s",
                row["insert_s"] <= 1.0,
            )
    for shape in sorted({r["shape"] for r in rows}):
        ran = [r for r in rows if r["shape"] == shape and "run_ms_per_step" in r]
        if len(ran) >= 2:
            values = [r["run_ms_per_step"] for r in ran]
            mid = median(values)  # of an even count: the mean of the middle two
            spread = max(abs(v / mid - 1) for v in values)
            sizes = f"{num(ran[0]['steps'])}–{num(ran[-1]['steps'])}"
            add(
                f"run time per step flat ±20% ({shape}, {sizes} steps)",
                f"±{num(100 * spread)}% of median",
                spread <= 0.2,
            )
        sized = [r for r in rows if r["shape"] == shape]
        if len(sized) >= 2:
            # linear: memory per step must not grow with the size (it may fall: fixed
            # costs spread, and CPython's JSON encoder compacts its pieces past ~100k)
            per_step = [1024 * r["traced_peak_mb"] / r["steps"] for r in sized]
            growth = max(b / a for a, b in zip(per_step, per_step[1:], strict=False))
            sizes = ", ".join(num(r["steps"]) for r in sized)
            add(
                f"memory linear, no growth per step ({shape}: traced KiB/step at {sizes} steps)",
                " / ".join(num(v, 2) for v in per_step),
                growth <= 1.25,
            )
