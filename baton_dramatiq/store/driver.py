"""The driver under PostgreSQL's hot path: one autocommit statement at a time, on the
calling thread's own connection.

Each statement goes to libpq's blocking call (which lets go of the GIL while it waits)
through psycopg's `pq` module, prepared once per connection, with psycopg's own
Transformer turning parameters and rows to and from Python, just as a cursor would.
Through a cursor, the same statements cost a worker's thread almost twice the CPU: its
wait loop, which takes the GIL back at every wake-up, its result bookkeeping and its
per-call preparation checks weigh as much as the rest of a claim's Python work.

Each thread keeps a connection of its own (up to the engine's pool size; threads past
that borrow from a pool): with eight worker threads on one GIL, a checkout and return
through a shared pool's locks cost more than the statement's own Python work.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import os
import re
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg import pq
from psycopg.adapt import PyFormat, Transformer
from psycopg.errors import error_from_result

from ..errors import StoreError

#: SQLSTATEs worth running a statement again for: deadlock, serialization failure
RETRY_SQLSTATES = frozenset({"40P01", "40001"})
#: how many times a statement or transaction is tried before its error is raised
RETRIES = 8
#: how many statements a connection keeps prepared; past that they run unprepared
MAX_PREPARED = 64


def pause_before_retry(attempt: int) -> None:
    """Back off after failed attempt number `attempt` (0-based): 2 ms, doubling."""
    time.sleep(0.002 * (2**attempt))


def store_error(driver_error: BaseException) -> StoreError:
    """A StoreError naming the driver's error class and message."""
    return StoreError(f"{type(driver_error).__name__}: {driver_error}".strip())


class Driver:
    """Runs one autocommit statement at a time on the calling thread's own psycopg
    connection (or, past `max_owned` threads, on one borrowed from a pool).

    Statements are written with psycopg's named placeholders, ``%(name)s``."""

    def __init__(self, engine: sa.Engine, *, max_owned: int | None = None) -> None:
        self._engine = engine
        size = getattr(engine.pool, "size", None)
        #: how many threads may keep a connection of their own
        self.max_owned = max_owned if max_owned is not None else (size() if size else 10)
        self._reset()
        ref = weakref.ref(self)

        def in_child() -> None:  # connections never cross a fork: a child makes its own
            driver = ref()
            if driver is not None:
                driver._reset()

        os.register_at_fork(after_in_child=in_child)

    def _reset(self) -> None:
        self._pool: Any = None
        self._lock = threading.Lock()
        self._local = threading.local()
        self._owned: weakref.WeakSet[_Owned] = weakref.WeakSet()

    def _current_pool(self) -> Any:
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    pool = self._engine.pool.recreate()
                    sa.event.listen(pool, "connect", _autocommit)
                    self._pool = pool
        return self._pool

    def one(self, sql: str, params: dict[str, Any]) -> Any:
        """The first row `sql` returns (a named tuple), or None; retried on deadlock."""
        return self._run(_parse(sql), params, fetch=True)

    def execute(self, sql: str, params: dict[str, Any]) -> int:
        """Run `sql`, which returns no rows; how many rows it changed."""
        rowcount: int = self._run(_parse(sql), params, fetch=False)
        return rowcount

    def _run(self, statement: _Statement, params: dict[str, Any], *, fetch: bool) -> Any:
        for attempt in range(RETRIES):
            try:
                session, borrowed = self._checkout()
            except psycopg.Error as exc:
                raise store_error(exc) from exc
            try:
                return session.run(statement, params, fetch=fetch)
            except psycopg.Error as exc:
                if isinstance(exc, psycopg.OperationalError) or session.conn.closed:
                    # a broken connection: the next call gets a fresh one
                    if borrowed is not None:
                        borrowed.invalidate(exc)
                    else:
                        session.conn.close()
                if exc.sqlstate not in RETRY_SQLSTATES or attempt == RETRIES - 1:
                    raise store_error(exc) from exc
            finally:
                if borrowed is not None:
                    borrowed.close()
            pause_before_retry(attempt)
        raise AssertionError("unreachable")

    def _checkout(self) -> tuple[_Session, Any]:
        """This thread's session, and None; or, past `max_owned` threads, the session of
        a pooled connection and its pool handle, to be closed after the statement."""
        owned: _Owned | None = getattr(self._local, "owned", None)
        if owned is not None:
            if not owned.session.conn.closed:
                return owned.session, None
            with self._lock:
                self._owned.discard(owned)  # broken: it no longer counts
            self._local.owned = None
        fairy = self._current_pool().connect()
        conn: psycopg.Connection[Any] = fairy.driver_connection
        with self._lock:
            if len(self._owned) >= self.max_owned:
                # the session lives as long as the pooled connection does
                session = fairy.info.get(_Session)
                if session is None or session.conn is not conn:
                    session = fairy.info[_Session] = _Session(conn)
                return session, fairy
            fairy.detach()  # the pool forgets it: it is this thread's until the thread ends
            owned = _Owned(_Session(conn))
            self._owned.add(owned)
        self._local.owned = owned
        return owned.session, None

    def dispose(self) -> None:
        """Close every thread's connection and the pool (threads reconnect on next use)."""
        with self._lock:
            pool, self._pool = self._pool, None
            owned = list(self._owned)
        for each in owned:
            each.close()
        if pool is not None:
            pool.dispose()


@dataclasses.dataclass(frozen=True, slots=True)
class _Statement:
    """A statement in libpq's terms: ``$n`` placeholders, and the parameter each takes."""

    text: bytes
    names: tuple[str, ...]
    formats: tuple[PyFormat, ...]


_PLACEHOLDER = re.compile(r"%\((\w+)\)s|%%")


@functools.lru_cache(maxsize=256)
def _parse(sql: str) -> _Statement:
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return "%"  # an escaped percent sign
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    text = _PLACEHOLDER.sub(number, sql)
    return _Statement(text.encode(), tuple(names), (PyFormat.AUTO,) * len(names))


class _Session:
    """One connection's statements: its Transformer, which adapts parameters and rows
    as psycopg's cursors do on it, and what it has prepared."""

    __slots__ = ("conn", "_prepared", "_transformer")

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self._transformer = Transformer(conn)
        #: by statement and parameter types: its name, and how its rows are made
        self._prepared: dict[tuple[bytes, tuple[int, ...]], _Prepared] = {}

    def run(self, statement: _Statement, params: dict[str, Any], *, fetch: bool) -> Any:
        """The first row (`fetch`) or the count of rows changed; psycopg.Error if not."""
        tx = self._transformer
        # None for NULL: libpq takes it, though `pq`'s annotations leave it out
        values: Any = tx.dump_sequence([params[n] for n in statement.names], statement.formats)
        types = tx.types or ()
        pgconn = self.conn.pgconn
        key = (statement.text, types)
        prepared = self._prepared.get(key)
        if prepared is None and len(self._prepared) < MAX_PREPARED:
            prepared = _Prepared(f"baton_{len(self._prepared)}".encode())
            self._check(pgconn.prepare(prepared.name, statement.text, types))
            self._prepared[key] = prepared
        if prepared is not None:
            result = self._check(pgconn.exec_prepared(prepared.name, values, tx.formats))
        else:
            result = self._check(pgconn.exec_params(statement.text, values, types, tx.formats))
        if not fetch:
            return result.command_tuples or 0
        if not result.ntuples:
            return None
        tx.set_pgresult(result)
        make_row = prepared.make_row if prepared is not None else None
        if make_row is None:
            make_row = _row_maker(tuple(result.fname(i) or b"" for i in range(result.nfields)))
            if prepared is not None:
                prepared.make_row = make_row
        return tx.load_row(0, make_row)

    def _check(self, result: pq.abc.PGresult) -> pq.abc.PGresult:
        if result.status in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK):
            return result
        if self.conn.pgconn.status == pq.ConnStatus.BAD:  # the server or network went away
            message = (result.error_message or self.conn.pgconn.error_message).decode()
            raise psycopg.OperationalError(f"the connection was lost: {message.strip()}")
        raise error_from_result(result, encoding=self.conn.info.encoding)


@dataclasses.dataclass(slots=True)
class _Prepared:
    name: bytes
    make_row: Callable[[Any], Any] | None = None


@functools.lru_cache(maxsize=64)
def _row_maker(columns: tuple[bytes, ...]) -> Callable[[Any], Any]:
    """Named tuples of these columns, as psycopg's ``namedtuple_row`` makes them."""
    row: Any = collections.namedtuple("Row", [c.decode() for c in columns], rename=True)  # type: ignore[misc]
    make: Callable[[Any], Any] = row._make
    return make


class _Owned:
    """One thread's connection: closed when the thread ends and its locals go (but
    never by a forked child, which shares the parent's socket and must leave it be)."""

    __slots__ = ("__weakref__", "pid", "session")

    def __init__(self, session: _Session) -> None:
        self.session, self.pid = session, os.getpid()

    def close(self) -> None:
        conn = self.session.conn
        if self.pid == os.getpid() and not conn.closed:
            conn.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # at interpreter exit, or a connection already gone
            pass


def _autocommit(dbapi_conn: psycopg.Connection[Any], _record: Any) -> None:
    dbapi_conn.autocommit = True
