"""Rich output: the state colours, table cells, and one line per workflow event."""

from __future__ import annotations

import datetime as dt
import os

from rich.console import Console
from rich.text import Text

from ..events import STEP_UPDATED, WORKFLOW_FINISHED, Event

#: the width of tables when output goes to a pipe or a file
PIPE_COLUMNS = 160

STATE_STYLES = {
    "pending": "dim",
    "available": "dim",
    "executing": "yellow",
    "running": "yellow",
    "snoozed": "cyan",
    "retryable": "dark_orange",
    "waiting": "blue",
    "completed": "green",
    "discarded": "red",
    "failed": "red",
    "cancelled": "magenta",
}


def console() -> Console:
    """Standard output through rich.

    Made per call, as click's test runner swaps sys.stdout between invocations. Piped
    output is not cut at rich's default of 80 columns, which would fold workflow ids.
    """
    out = Console(highlight=False)
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out.width = PIPE_COLUMNS
    return out


def styled(state: str | None) -> Text:
    """`state` in its colour; "-" when there is none."""
    return Text(state or "-", style=STATE_STYLES.get(state or "", ""))


def when(moment: dt.datetime | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    """`moment` in UTC as `fmt`; "-" when there is none."""
    return moment.astimezone(dt.UTC).strftime(fmt) if moment else "-"


def took(start: dt.datetime | None, end: dt.datetime | None) -> str:
    """The seconds from `start` to `end`; "-" unless both are known."""
    return f"{(end - start).total_seconds():.2f} s" if start and end else "-"


class Progress:
    """Prints one line per event: seconds since `since`, step, state, attempt."""

    def __init__(self, out: Console, since: dt.datetime) -> None:
        self.out, self.since = out, since

    def show(self, event: Event) -> None:
        """Print `event` as one line."""
        p = event.payload
        line = Text(f"{self._offset(p.get('at')):>+8.2f}s  ", style="dim")
        if event.event == STEP_UPDATED:
            line.append(f"{p['step_name']:<16} ", style="bold")
            line.append(styled(p["state"]))
            line.append(" " * max(1, 11 - len(p["state"])) + f"attempt {p['attempt']}")
            if p.get("error") and p["state"] not in ("executing", "completed"):
                # an executing step still carries its previous attempt's error
                line.append(f"  {p['error']}", style="red")
        elif event.event == WORKFLOW_FINISHED:
            line.append(f"{'workflow':<16} ", style="bold")
            line.append(styled(p["outcome"]))
            if p.get("failed_steps"):
                line.append(f"  failed steps: {', '.join(p['failed_steps'])}", style="red")
        else:
            line.append(event.event)
        self.out.print(line, soft_wrap=True)

    def _offset(self, at: object) -> float:
        try:
            moment = dt.datetime.fromisoformat(str(at))
        except ValueError:
            moment = dt.datetime.now(dt.UTC)
        return (moment - self.since).total_seconds()
