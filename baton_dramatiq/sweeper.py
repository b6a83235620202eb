"""The Sweeper: recovers what a crash left undone and prunes what is old.

A worker can die between any two lines: after committing a step but before enqueuing
its dependents, after the last step settled but before `workflow_finished` went out.
The store knows; the Sweeper reads it and finishes the job. One sweep runs at a time
across every process (a lease row in the store), in bounded batches.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import logging
import random
import threading
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware

from .errors import ConfigurationError
from .events import WORKFLOW_FINISHED, Event, EventBus
from .setup import find_middleware, process_name
from .store import Store
from .workflow import ENQUEUE_BATCH, enqueue_steps, first_steps

logger = logging.getLogger("baton_dramatiq.sweeper")

LEASE = "sweeper"
_OPTIONS = ("interval", "rescue_after", "prune", "max_age", "debug_log_max_age", "batch_size")


@dataclasses.dataclass(frozen=True, slots=True)
class SweepReport:
    """What one sweep did. `ran` is False when another process held the lease."""

    ran: bool
    holder: str
    started_at: dt.datetime
    finished_at: dt.datetime
    rescued: int = 0
    published: int = 0
    pruned_workflows: int = 0
    pruned_rows: int = 0
    pruned_debug_logs: int = 0
    transactions: int = 0


class Sweeper(Middleware):
    """Periodic recovery and pruning, as a Dramatiq middleware (add it after WorkflowMiddleware).

    Parameters:
      store(Store): the workflow store.
      interval(float): seconds between sweeps in each worker process.
      rescue_after(float): seconds a step may sit ready, retryable or snoozed past its
        due time, or executing without a renewed claim, before it is re-enqueued; also
        how long a recorded finish may go unpublished before the Sweeper publishes it.
      prune(bool): delete workflows that finished more than `max_age` seconds ago.
      max_age(float): seconds a finished workflow is kept when pruning.
      debug_log_max_age(float|None): seconds LLM debug logs are kept; None keeps them.
      batch_size(int): rows per transaction; bounds every lock a sweep takes.

    Raises:
      ConfigurationError: a value out of range or an unknown option.
    """

    def __init__(
        self,
        store: Store,
        *,
        interval: float = 60,
        rescue_after: float = 30,
        prune: bool = False,
        max_age: float = 86400,
        debug_log_max_age: float | None = None,
        batch_size: int = 1000,
        **unknown: Any,
    ) -> None:
        for name in unknown:
            close = difflib.get_close_matches(name, _OPTIONS, n=1)
            hint = (
                f"; did you mean {close[0]!r}?" if close else f" (options: {', '.join(_OPTIONS)})"
            )
            raise ConfigurationError(f"Unknown Sweeper option {name!r}{hint}")
        if not isinstance(store, Store):
            raise ConfigurationError(f"Sweeper needs a baton.Store, got {type(store).__name__}")
        _positive("interval", interval)
        _positive("rescue_after", rescue_after)
        _positive("max_age", max_age)
        if debug_log_max_age is not None:
            _positive("debug_log_max_age", debug_log_max_age)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigurationError(
                f"Sweeper batch_size must be a whole number >= 1, got {batch_size!r}"
            )
        self.store = store
        self.interval = float(interval)
        self.rescue_after = float(rescue_after)
        self.prune = bool(prune)
        self.max_age = float(max_age)
        self.debug_log_max_age = debug_log_max_age
        self.batch_size = batch_size
        self.lease_ttl = max(60.0, 2 * self.interval)
        self._broker: dramatiq.Broker | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def holder(self) -> str:
        """Names this process in the lease; new after a fork."""
        return process_name()

    # -- worker lifecycle -------------------------------------------------------------

    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        self._broker = broker
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="baton-sweeper", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _loop(self) -> None:
        # spread the first sweeps of processes that booted together
        while not self._stop.wait(self.interval * random.uniform(0.5, 1.0)):
            try:
                self.sweep_once()
            except Exception:
                logger.exception("Sweep failed; the next one tries again")

    # -- one sweep --------------------------------------------------------------------

    def sweep_once(
        self,
        broker: dramatiq.Broker | None = None,
        *,
        bus: EventBus | None = None,
        rescue: bool = True,
    ) -> SweepReport:
        """Run one sweep now, unless another process is sweeping.

        Parameters:
          broker(Broker|None): where to re-enqueue; the broker this middleware was added
            to, else the global one.
          bus(EventBus|None): where to publish missing finishes; else the bus of the
            broker's WorkflowMiddleware.
          rescue(bool): re-enqueue overdue steps (off for a process, like `baton prune`,
            whose broker has no workers' queues).
        """
        if rescue or bus is None:
            broker = broker or self._broker or dramatiq.get_broker()
        if bus is None and broker is not None:
            middleware = find_middleware(broker)
            bus = middleware.events if middleware is not None else None
        if not self.store.acquire_lease(LEASE, self.holder, self.lease_ttl):
            now = _now()
            return SweepReport(ran=False, holder=self.holder, started_at=now, finished_at=now)
        started = _now()  # inside the lease: started_at..finished_at never overlap another's
        try:
            counts = {
                "rescued": self._rescue(broker) if rescue and broker is not None else 0,
                "published": self._publish_finishes(bus),
            }
            if self.prune:
                counts.update(self._prune())
            if self.debug_log_max_age is not None:
                cutoff = _now() - dt.timedelta(seconds=self.debug_log_max_age)
                counts["pruned_debug_logs"] = self.store.delete_debug_logs(cutoff, self.batch_size)
            report = SweepReport(
                ran=True, holder=self.holder, started_at=started, finished_at=_now(), **counts
            )
        finally:
            self.store.release_lease(LEASE, self.holder)
        if any(counts.values()):
            logger.info("Sweep %s", report)
        return report

    def _renew(self) -> None:
        self.store.acquire_lease(LEASE, self.holder, self.lease_ttl)

    def _rescue(self, broker: dramatiq.Broker) -> int:
        overdue_before = _now() - dt.timedelta(seconds=self.rescue_after)
        rescued = 0
        while True:
            messages = self.store.rescue_steps(overdue_before=overdue_before, limit=self.batch_size)
            # in batches, as a completion sends what it made ready (but all of them
            # whole: no step waits here for the first): on Redis, a round trip a batch,
            # and idle consumers woken
            for start in range(0, len(messages), ENQUEUE_BATCH):
                batch = messages[start : start + ENQUEUE_BATCH]
                try:
                    enqueue_steps(broker, batch, new_ids=True, first_batch=ENQUEUE_BATCH)
                    rescued += len(batch)
                except Exception:
                    # marked as rescued now: the next sweep past rescue_after tries again
                    logger.exception(
                        "Could not re-enqueue %d steps, among them %r",
                        len(batch),
                        first_steps(batch),
                    )
            if len(messages) < self.batch_size:
                return rescued
            self._renew()

    def _publish_finishes(self, bus: EventBus | None) -> int:
        published = 0
        while True:  # workflows whose last step settled but whose finish went unrecorded
            recorded = self.store.finish_orphans(self.batch_size)
            published += self._publish(bus, recorded)
            if len(recorded) < self.batch_size:
                break
            self._renew()
        if bus is None:
            return published
        before = _now() - dt.timedelta(seconds=self.rescue_after)
        while True:  # finishes recorded but never published
            finishes = self.store.unpublished_finishes(before=before, limit=self.batch_size)
            published += self._publish(bus, finishes)
            if len(finishes) < self.batch_size:
                return published
            self._renew()

    def _publish(self, bus: EventBus | None, finishes: list[dict[str, Any]]) -> int:
        if bus is None:
            return 0  # a later sweep with a bus publishes them
        if not finishes:
            return 0
        # published, then marked: a crash between the two repeats the events, which
        # subscribers drop; the reverse order could lose them
        bus.publish_many([(p["workflow_id"], [Event(WORKFLOW_FINISHED, p)]) for p in finishes])
        self.store.mark_published(*(p["workflow_id"] for p in finishes))
        return len(finishes)

    def _prune(self) -> dict[str, int]:
        cutoff = _now() - dt.timedelta(seconds=self.max_age)
        workflows = rows = transactions = 0
        per_batch = max(1, self.batch_size // 10)  # workflows per batch; their rows chunked
        while ids := self.store.finished_before(cutoff, per_batch):
            for table in self.store.per_workflow_tables():
                deleted, batches = self.store.delete_rows(table, ids, self.batch_size)
                rows, transactions = rows + deleted, transactions + batches
            workflows += self.store.delete_workflow_rows(ids)
            transactions += 1
            self._renew()
        return {"pruned_workflows": workflows, "pruned_rows": rows, "transactions": transactions}


def _positive(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise ConfigurationError(f"Sweeper {name} must be a number of seconds > 0, got {value!r}")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
