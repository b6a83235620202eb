"""WorkflowMiddleware: gates each step on its dependencies and records how it ends.

Hooks stay thin: each asks the store for one guarded transition, then publishes what
changed and enqueues what became ready. The store is the record; a hook that fails
(Dramatiq logs and swallows it) leaves a state the Sweeper reconciles.

Outcomes arrive through the hooks Dramatiq gives them:
  before_process_message   claim the step (``executing``), or drop the message
  after_process_message    success -> ``completed``; snooze -> ``snoozed``;
                           an exception Retries will retry -> ``retryable``
  after_nack               the message failed for good -> ``discarded``
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from typing import Any

import dramatiq
from dramatiq.common import compute_backoff
from dramatiq.middleware import Middleware, Retries, SkipMessage
from dramatiq.middleware.retries import DEFAULT_MAX_BACKOFF

from . import faults, migrations, wakeup
from .actor import Discarded, Snoozed
from .context import RunningStep, StepContext, _running
from .errors import (
    ConfigurationError,
    GateUnavailable,
    ResultError,
    SchemaOutOfDate,
    StoreError,
)
from .events import WORKFLOW_FINISHED, Event, EventBus, MemoryEventBus, step_event
from .publisher import Publisher
from .setup import STEP_OPTION, process_name
from .store import Claim, Store, Transition
from .workflow import enqueue_steps, first_steps

logger = logging.getLogger("baton_dramatiq")

ATTEMPT_OPTION = "baton_attempt"


class WorkflowMiddleware(Middleware):
    """The middleware that runs workflows; the only one baton_dramatiq requires.

    Messages that are not workflow steps pass through untouched.

    Parameters:
      store(Store): where workflow state lives.
      events(EventBus|None): where transitions are published; a MemoryEventBus if None.
      max_result_bytes(int): the largest step result, as UTF-8 JSON (default 1 MiB).
      claim_timeout(float): seconds after which an executing step whose worker stopped
        renewing its claim may be taken over by a redelivery.
      check_schema(bool): refuse to boot a worker on an unmigrated database.
    """

    def __init__(
        self,
        store: Store,
        *,
        events: EventBus | None = None,
        max_result_bytes: int = 1 << 20,
        claim_timeout: float = 30.0,
        check_schema: bool = True,
    ) -> None:
        if not isinstance(store, Store):
            raise ConfigurationError(
                f"WorkflowMiddleware needs a baton.Store, got {type(store).__name__}"
            )
        if max_result_bytes <= 0:
            raise ConfigurationError(f"max_result_bytes must be > 0, got {max_result_bytes}")
        if claim_timeout <= 0:
            raise ConfigurationError(f"claim_timeout must be > 0 seconds, got {claim_timeout}")
        self.store = store
        self.events: EventBus = events if events is not None else MemoryEventBus()
        self._publisher = Publisher(
            self.events, sent_finishes=lambda ids: self.store.mark_published(*ids)
        )
        self.max_result_bytes = max_result_bytes
        self.claim_timeout = claim_timeout
        self.check_schema = check_schema
        self._heartbeat: _Heartbeat | None = None
        # steps this process is running now, by message id: only these get their claims
        # renewed, so a claim leaked by a failed hook goes stale and can be rescued
        self._in_flight: dict[str, tuple[str, str]] = {}
        self._in_flight_lock = threading.Lock()

    @property
    def worker_id(self) -> str:
        """Names this process's claims; new after a fork."""
        return process_name()

    # -- worker lifecycle -------------------------------------------------------------

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        # A worker process started by the dramatiq CLI. Dramatiq swallows exceptions from
        # this hook, and one from before_worker_boot would leave the process hanging on
        # the threads other middleware started, so refuse here, with one line.
        if self.check_schema:
            try:
                migrations.check(self.store)
            except SchemaOutOfDate as exc:
                raise SystemExit(f"baton_dramatiq: {exc}") from None

    def before_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        if self.check_schema:
            migrations.check(self.store)  # SchemaOutOfDate is a MiddlewareError: boot stops
        self._heartbeat = _Heartbeat(self, self.claim_timeout / 3)
        self._heartbeat.start()
        wakeup.wake_consumers(broker)

    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        wakeup.calm_idle_threads(worker)

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        wakeup.stop_waking(broker)
        if self._heartbeat is not None:
            self._heartbeat.stop()
            self._heartbeat = None
        self._publisher.stop()

    # -- the gate ---------------------------------------------------------------------

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        ident = message.options.get(STEP_OPTION)
        if ident is None or message.failed:
            return
        workflow_id, step_name = ident
        stale = _now() - dt.timedelta(seconds=self.claim_timeout)
        try:
            claim = self.store.claim(
                workflow_id, step_name, worker_id=self.worker_id, stale_before=stale
            )
        except StoreError as exc:
            # Dramatiq would log and swallow this and run the step ungated
            raise GateUnavailable(f"Could not gate step {step_name!r}: {exc}") from exc
        if not isinstance(claim, Claim):
            # pending: the dependency that finishes last enqueues it; finished or busy: a
            # duplicate delivery. Either way this message has nothing to do.
            logger.debug("Dropping message for step %r of %s: %s", step_name, workflow_id, claim)
            raise SkipMessage(f"workflow step {step_name!r} is {claim}")
        message.options[ATTEMPT_OPTION] = claim.attempt
        context = StepContext(
            workflow_id=workflow_id,
            workflow_name=claim.workflow_name,
            step_name=step_name,
            attempt=claim.attempt,
            deps=claim.deps,
        )
        _running.set(
            RunningStep(
                context,
                message.message_id,
                claim.actor_name,
                self.store,
                message.kwargs,
                claim.results,
                claim.dependents,
            )
        )
        with self._in_flight_lock:
            self._in_flight[message.message_id] = (workflow_id, step_name)
        # no waiting: whatever this process publishes next about the step follows it
        self._publisher.post(workflow_id, [step_event(claim.change)], wait=False)

    def in_flight(self) -> list[tuple[str, str]]:
        """``(workflow_id, step_name)`` of every step this process is executing."""
        with self._in_flight_lock:
            return list(self._in_flight.values())

    def _release(self, message: Any) -> RunningStep | None:
        running = _running.get()
        if running is None or running.message_id != message.message_id:
            return None
        _running.set(None)
        with self._in_flight_lock:
            self._in_flight.pop(message.message_id, None)
        return running

    # -- outcomes ---------------------------------------------------------------------

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: Any,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        running = self._release(message)
        if running is None:
            return
        ctx = running.context
        try:
            if exception is not None:
                if will_retry(broker, message, exception):
                    due = _now() + dt.timedelta(milliseconds=_max_backoff(broker, message))
                    self.apply(
                        broker,
                        self.store.retryable(
                            ctx.workflow_id, ctx.step_name, ctx.attempt, describe(exception), due
                        ),
                    )
                # otherwise Retries fails the message and after_nack discards the step
            elif message.failed:
                return  # another middleware failed it before it ran: after_nack follows
            elif isinstance(running.outcome, Snoozed):
                self._snooze(broker, message, ctx, running.outcome.seconds)
            elif isinstance(running.outcome, Discarded):
                self._discard(broker, ctx, running.outcome.error)
            else:
                self._complete(broker, running, running.outcome)
        except Exception:
            logger.exception(
                "Could not record the end of step %r of workflow %s; the Sweeper will reconcile it",
                ctx.step_name,
                ctx.workflow_id,
            )

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        # Reached for a step only when its body raised SkipMessage: the step will not
        # run again, so it is discarded rather than left executing.
        running = self._release(message)
        if running is not None:
            error = getattr(message, "_exception", None) or SkipMessage("skipped")
            self._discard(broker, running.context, error)

    def after_nack(self, broker: dramatiq.Broker, message: Any) -> None:
        ident = message.options.get(STEP_OPTION)
        if ident is None:
            return
        workflow_id, step_name = ident
        exception = getattr(message, "_exception", None)
        error = describe(exception) if exception else "the message was rejected"
        self.apply(
            broker,
            self.store.discard(
                workflow_id, step_name, error, attempt=message.options.get(ATTEMPT_OPTION)
            ),
            lazy_events=True,
        )

    # -- applying a transition --------------------------------------------------------

    def apply(
        self, broker: dramatiq.Broker, transition: Transition, *, lazy_events: bool = False
    ) -> None:
        """Publish a transition's events, then enqueue what it made ready, then finish.

        A step's events go out before its dependents are enqueued, so on one topic a
        dependent's events always follow its dependencies'. Whoever sends the events
        enqueues the dependents right after: this thread when nobody else is sending,
        else the thread that is, and this one does not wait for it. A finishing
        transition's events go out with its `workflow_finished`, and whoever sends that
        records it as published. With `lazy_events` (a worker recording how a step
        ended), nothing waits: the events go out with the process's next batch, still
        ahead of anything the process posts later.
        """
        if not transition:
            return
        faults.point("after_commit")
        finished = transition.finished
        if transition.changes:
            workflow_id = transition.changes[0].workflow_id
            events = [step_event(c) for c in transition.changes]
            if transition.ready:
                ready = transition.ready
                self._publisher.post(
                    workflow_id,
                    events,
                    wait=False,
                    eager=True,
                    then=lambda: self._enqueue(broker, ready),
                )
            elif finished is None and not lazy_events:
                self._publisher.post(workflow_id, events)
            else:
                # sent now if nobody is sending, else by whoever is; a finish takes them
                # along with its own event
                self._publisher.post(workflow_id, events, wait=False, eager=finished is None)
        elif transition.ready:
            self._enqueue(broker, transition.ready)
        if finished is not None:
            faults.point("before_finished")
            self._publisher.post(
                finished["workflow_id"],
                [Event(WORKFLOW_FINISHED, finished)],
                wait=not lazy_events,
                eager=True,
            )

    @staticmethod
    def _enqueue(broker: dramatiq.Broker, ready: list[dict[str, Any]]) -> None:
        try:
            enqueue_steps(broker, ready)
        except Exception:
            # the steps stay `available` in the store; the Sweeper re-enqueues them
            logger.exception(
                "Could not enqueue %d ready steps, among them %r", len(ready), first_steps(ready)
            )

    def _complete(self, broker: dramatiq.Broker, running: RunningStep, result: Any) -> None:
        ctx = running.context
        try:
            encoded = json.dumps(result, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            self._discard(
                broker,
                ctx,
                ResultError(f"Step {ctx.step_name!r} returned a result that is not JSON: {exc}"),
            )
            return
        size = len(encoded.encode())
        if size > self.max_result_bytes:
            self._discard(
                broker,
                ctx,
                ResultError(
                    f"Step {ctx.step_name!r} returned {size} bytes of JSON; the limit is "
                    f"{self.max_result_bytes} (WorkflowMiddleware max_result_bytes)"
                ),
            )
            return
        transition = self.store.complete(
            ctx.workflow_id,
            ctx.step_name,
            ctx.attempt,
            result,
            encoded=encoded,
            dependents=running.dependents,
        )
        self.apply(broker, transition, lazy_events=True)

    def _discard(self, broker: dramatiq.Broker, ctx: StepContext, error: BaseException) -> None:
        """Discard the running step now, spending no retry."""
        transition = self.store.discard(
            ctx.workflow_id, ctx.step_name, describe(error), attempt=ctx.attempt
        )
        self.apply(broker, transition, lazy_events=True)

    def _snooze(
        self, broker: dramatiq.Broker, message: Any, ctx: StepContext, seconds: float
    ) -> None:
        due = _now() + dt.timedelta(seconds=seconds)
        transition = self.store.snooze(ctx.workflow_id, ctx.step_name, ctx.attempt, due)
        self.apply(broker, transition)
        if transition.changes:
            again = message.copy(
                message_id=dramatiq.message.generate_unique_id(),
                message_timestamp=int(time.time() * 1000),
            )
            broker.enqueue(again, delay=int(seconds * 1000) or None)


def describe(exception: BaseException) -> str:
    """A short error string that starts with the exception's class name."""
    text = str(exception).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exception).__name__}: {first}"[:500] if first else type(exception).__name__


def will_retry(broker: dramatiq.Broker, message: Any, exception: BaseException) -> bool:
    """Whether Dramatiq's Retries middleware will run this message again.

    Our after_process_message runs before Retries decides (after-hooks run in reverse),
    so the same rules are applied here: `throws`, `retry_when`, `max_retries`.
    """
    retries = next((m for m in broker.middleware if isinstance(m, Retries)), None)
    if retries is None:
        return False
    actor = broker.get_actor(message.actor_name)
    throws = message.options.get("throws") or actor.options.get("throws")
    if throws and isinstance(exception, throws):
        return False
    count = message.options.get("retries", 0)
    retry_when = actor.options.get("retry_when", retries.retry_when)
    if retry_when is not None:
        return bool(retry_when(count, exception))
    max_retries = message.options.get(
        "max_retries", actor.options.get("max_retries", retries.max_retries)
    )
    return max_retries is None or count < max_retries


def _max_backoff(broker: dramatiq.Broker, message: Any) -> int:
    """The longest delay Retries may pick for this retry, in milliseconds."""
    retries = next(m for m in broker.middleware if isinstance(m, Retries))
    actor = broker.get_actor(message.actor_name)
    min_backoff = message.options.get(
        "min_backoff", actor.options.get("min_backoff", retries.min_backoff)
    )
    max_backoff = min(
        message.options.get("max_backoff", actor.options.get("max_backoff", retries.max_backoff)),
        DEFAULT_MAX_BACKOFF,
    )
    _, delay = compute_backoff(
        message.options.get("retries", 0), factor=min_backoff, jitter=False, max_backoff=max_backoff
    )
    return int(delay)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class _Heartbeat(threading.Thread):
    """Renews the claims of the steps this process runs, so a redelivery leaves them be."""

    def __init__(self, middleware: WorkflowMiddleware, interval: float) -> None:
        super().__init__(name="baton-heartbeat", daemon=True)
        self.middleware, self.interval = middleware, interval
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            steps = self.middleware.in_flight()
            if not steps:
                continue
            try:
                self.middleware.store.heartbeat(self.middleware.worker_id, steps)
            except Exception:
                logger.warning("Could not renew step claims", exc_info=True)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)
