"""What PostgreSQL's backends wait on while a block runs: `pg_stat_activity`, sampled.

`PgWaits` reads, every `interval` seconds on a connection of its own (to another
database, so that it never counts itself), the backends of one database that are running
a statement, and files each under its statement (`statement_kind`) and what it waits on
(`wait_class`). The shares it reports show where a statement's time in the server goes:
running (on a core, or waiting for one), waiting for another transaction's row lock, for
the WAL, for the client. Sampling costs the server a query a millisecond: a profile,
not a measure of speed.
"""

from __future__ import annotations

import collections
import threading
import time
from types import TracebackType
from typing import Any

import psycopg

#: the first words of each hot statement, as `baton_dramatiq.store.hot` writes them
STATEMENTS = {
    "WITH claimed AS": "claim",
    "WITH done AS": "completion",
    "WITH workflow AS": "insert",
}

SAMPLE = """
    SELECT left(ltrim(query), 40), wait_event_type, wait_event
      FROM pg_stat_activity
     WHERE datname = %s AND state = 'active' AND backend_type = 'client backend'
"""


def statement_kind(query: str) -> str:
    """Which hot statement `query` is, by its first words; "other" if none."""
    text = query.lstrip()
    return next((kind for head, kind in STATEMENTS.items() if text.startswith(head)), "other")


def wait_class(wait_type: str | None, wait_event: str | None) -> str:
    """What a backend running a statement waits on, in one of `WAIT_CLASSES`."""
    if wait_type is None:
        return "running"
    if wait_type == "Lock":
        return "row lock" if wait_event in ("transactionid", "tuple") else "other"
    if wait_type == "IO" and (wait_event or "").startswith("WAL"):
        return "WAL"
    if wait_type in ("Client", "LWLock"):
        return wait_type
    return "other"


#: running: on a core, or waiting for one; row lock: for another transaction to end;
#: WAL: for the write-ahead log's file I/O; Client: for the client to send or read;
#: LWLock: for a lightweight lock (a buffer's, the lock manager's, ...)
WAIT_CLASSES = ("running", "row lock", "WAL", "Client", "LWLock", "other")


class PgWaits:
    """Samples the active backends of database `db_name` while the block runs.

    Parameters:
      admin_url(str): a connection to another database of the same server.
      db_name(str): the database whose backends are sampled.
      interval(float): seconds between samples.
    """

    def __init__(self, admin_url: str, db_name: str, *, interval: float = 0.001) -> None:
        self.admin_url, self.db_name, self.interval = admin_url, db_name, interval
        #: samples by (statement kind, wait class)
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()
        #: how many times pg_stat_activity was read
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pg-waits", daemon=True)

    def __enter__(self) -> PgWaits:
        self._conn = psycopg.connect(self.admin_url, autocommit=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        self._conn.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            rows = self._conn.execute(SAMPLE, (self.db_name,)).fetchall()
            self.samples += 1
            for query, wait_type, wait_event in rows:
                self.counts[(statement_kind(query), wait_class(wait_type, wait_event))] += 1
            time.sleep(self.interval)

    def shares(self) -> dict[str, Any]:
        """Per statement kind: the samples that found it, and the share of them by wait
        class; and the mean number of backends running a statement."""
        by_kind: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        for (kind, wait), n in self.counts.items():
            by_kind[kind][wait] += n
        statements = {}
        for kind, waits in sorted(by_kind.items(), key=lambda kv: -sum(kv[1].values())):
            total = sum(waits.values())
            statements[kind] = {
                "samples": total,
                "shares": {wait: waits[wait] / total for wait in WAIT_CLASSES},
            }
        return {
            "samples": self.samples,
            "mean_active_backends": sum(self.counts.values()) / max(self.samples, 1),
            "statements": statements,
        }
