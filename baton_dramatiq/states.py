"""Step states and the transitions the store allows between them.

Every transition is one guarded UPDATE in `store.sql` (``... WHERE state IN
(<allowed sources>)``), so two workers can never both make the same move.
"""

from __future__ import annotations

PENDING = "pending"  # waiting on dependencies
AVAILABLE = "available"  # enqueued, no worker on it yet
EXECUTING = "executing"
SNOOZED = "snoozed"
RETRYABLE = "retryable"
WAITING = "waiting"  # on a sub-workflow
COMPLETED = "completed"
DISCARDED = "discarded"
CANCELLED = "cancelled"

STATES = (
    PENDING,
    AVAILABLE,
    EXECUTING,
    SNOOZED,
    RETRYABLE,
    WAITING,
    COMPLETED,
    DISCARDED,
    CANCELLED,
)
TERMINAL = frozenset({COMPLETED, DISCARDED, CANCELLED})
#: states a worker may claim a step from (executing only when its claim went stale)
CLAIMABLE = (AVAILABLE, RETRYABLE, SNOOZED)
#: states that are never published as events
UNPUBLISHED = frozenset({PENDING, AVAILABLE})

#: target state -> the states it may be reached from
TRANSITIONS: dict[str, frozenset[str]] = {
    AVAILABLE: frozenset({PENDING}),
    EXECUTING: frozenset({AVAILABLE, RETRYABLE, SNOOZED, EXECUTING}),  # executing: stale claim
    SNOOZED: frozenset({EXECUTING}),
    RETRYABLE: frozenset({EXECUTING}),
    COMPLETED: frozenset({EXECUTING}),
    DISCARDED: frozenset({AVAILABLE, EXECUTING, RETRYABLE, SNOOZED}),
    CANCELLED: frozenset({PENDING, AVAILABLE, EXECUTING, SNOOZED, RETRYABLE, WAITING}),
}

#: workflow outcomes
RUNNING = "running"
OUTCOMES = (COMPLETED, "failed", CANCELLED)
