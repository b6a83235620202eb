"""Finding the WorkflowMiddleware, store and bus that a module-level call should use."""

from __future__ import annotations

import dataclasses
import os
import socket
import uuid
from typing import TYPE_CHECKING

import dramatiq

from .errors import ConfigurationError

if TYPE_CHECKING:
    from .events import EventBus
    from .middleware import WorkflowMiddleware
    from .store import Store

#: the message option that marks a message as a workflow step: [workflow_id, step_name]
STEP_OPTION = "baton_step"

HOW_TO_ADD = (
    "Add one to the broker: broker.add_middleware(baton.WorkflowMiddleware(store)), "
    "then dramatiq.set_broker(broker); or pass store= (and bus=) explicitly."
)


_process: tuple[int, str] = (-1, "")


def process_name() -> str:
    """``host:pid:random``: names this process in step claims and the sweep lease.

    Made anew after a fork, so that a child never passes for its parent.
    """
    global _process
    pid = os.getpid()
    if _process[0] != pid:
        _process = (pid, f"{socket.gethostname()}:{pid}:{uuid.uuid4().hex[:8]}")
    return _process[1]


@dataclasses.dataclass(frozen=True, slots=True)
class Setup:
    broker: dramatiq.Broker | None
    store: Store
    bus: EventBus | None
    middleware: WorkflowMiddleware | None


def find_middleware(broker: dramatiq.Broker) -> WorkflowMiddleware | None:
    from .middleware import WorkflowMiddleware

    for middleware in broker.middleware:
        if isinstance(middleware, WorkflowMiddleware):
            return middleware
    return None


def resolve(
    *,
    broker: dramatiq.Broker | None = None,
    store: Store | None = None,
    bus: EventBus | None = None,
    need_broker: bool = False,
) -> Setup:
    """The explicit arguments, else those of the broker's WorkflowMiddleware.

    The global broker is looked up only when something is missing (or `need_broker`):
    `dramatiq.get_broker()` creates a default broker when none was set.

    Raises:
      ConfigurationError: neither is there.
    """
    if broker is None and (store is None or need_broker):
        broker = dramatiq.get_broker()
    middleware = find_middleware(broker) if broker is not None else None
    if middleware is not None:
        store = store or middleware.store
        bus = bus or middleware.events
    if store is None:
        raise ConfigurationError(f"No baton WorkflowMiddleware on broker {broker!r}. {HOW_TO_ADD}")
    return Setup(broker=broker, store=store, bus=bus, middleware=middleware)
