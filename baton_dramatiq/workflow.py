"""`Workflow`: build a DAG of steps, validate it whole, insert it in one transaction."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
import unicodedata
import uuid
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

from . import states as S
from . import wakeup
from .actor import WorkflowActor
from .dispatch import can_pipeline, in_one_round_trip
from .errors import (
    CycleError,
    DuplicateStepError,
    InvalidStepError,
    MissingDependencyError,
    WorkflowError,
)
from .setup import STEP_OPTION, resolve

if TYPE_CHECKING:
    from .run import WorkflowRun
    from .store import Store

MAX_NAME = 255
#: ready steps sent to Redis in one round trip: a fan-out's first batch is out, and its
#: steps running, while the next is built
ENQUEUE_BATCH = 50
#: the first batch is smaller: building a message costs about as much as its share of a
#: round trip, so a first batch of 50 kept every step of the fan-out waiting for all 50
FIRST_BATCH = 8


@dataclasses.dataclass(frozen=True, slots=True)
class Step:
    name: str
    message: dramatiq.Message[Any]
    deps: tuple[str, ...]
    allow_failed_deps: bool


class Workflow:
    """A DAG of workflow steps, built with `add` and written with `insert`.

    Parameters:
      name(str): a label for people (lists, dashboards); need not be unique.
      id(str|None): the workflow's id; a new UUID when None. Known before `insert`.
      max_cost_usd(float|None): an LLM spending cap for the whole workflow.
    """

    def __init__(
        self, name: str, *, id: str | None = None, max_cost_usd: float | None = None
    ) -> None:  # noqa: A002
        if not isinstance(name, str) or not name:
            raise WorkflowError(f"A workflow name must be a non-empty string, got {name!r}")
        if id is not None and (not isinstance(id, str) or not 0 < len(id) <= 64):
            raise WorkflowError(f"A workflow id must be a string of 1-64 characters, got {id!r}")
        if max_cost_usd is not None and max_cost_usd < 0:
            raise WorkflowError(f"max_cost_usd must be >= 0, got {max_cost_usd!r}")
        self.name = name
        self.id = id or str(uuid.uuid4())
        self.max_cost_usd = max_cost_usd
        self._steps: dict[str, Step] = {}

    def __repr__(self) -> str:
        return f"Workflow(name={self.name!r}, id={self.id!r}, steps={len(self._steps)})"

    @property
    def steps(self) -> tuple[Step, ...]:
        return tuple(self._steps.values())

    def add(
        self,
        name: str,
        message: dramatiq.Message[Any],
        *,
        deps: Iterable[str] = (),
        allow_failed_deps: bool = False,
    ) -> Workflow:
        """Add a step; returns the workflow, so calls chain.

        Parameters:
          name(str): unique in the workflow, 1-255 characters, no control characters.
          message(Message): ``actor.message(...)`` of a `workflow_actor`.
          deps(list[str]): the steps that must finish first.
          allow_failed_deps(bool): run once every dependency is terminal, even failed.

        Raises:
          DuplicateStepError, InvalidStepError: at once; the rest waits for `insert`.
        """
        check_step_name(name)
        if name in self._steps:
            raise DuplicateStepError(f"Step {name!r} was added twice to workflow {self.name!r}")
        if isinstance(deps, str):
            raise InvalidStepError(
                f"deps of step {name!r} must be a list of step names, got the string {deps!r}"
            )
        dep_tuple = tuple(deps)
        for dep in dep_tuple:
            if not isinstance(dep, str):
                raise InvalidStepError(f"Dependency {dep!r} of step {name!r} is not a step name")
        if len(set(dep_tuple)) != len(dep_tuple):
            raise InvalidStepError(f"Step {name!r} lists a dependency twice: {list(dep_tuple)}")
        # the broker is known for sure only at insert; check now against the global one
        # if it has this actor (and without creating a default broker when none is set)
        broker = dramatiq.broker.global_broker
        if broker is None or getattr(message, "actor_name", None) not in broker.actors:
            broker = None
        check_step_message(name, message, broker)
        self._steps[name] = Step(name, message, dep_tuple, bool(allow_failed_deps))
        return self

    def validate(self, broker: dramatiq.Broker | None = None) -> list[str]:
        """Check the whole graph; returns the step names in topological order.

        Raises:
          InvalidStepError, MissingDependencyError, CycleError.
        """
        if not self._steps:
            raise InvalidStepError(f"Workflow {self.name!r} has no steps")
        if broker is not None:
            for step in self._steps.values():
                check_step_message(step.name, step.message, broker)
        for step in self._steps.values():
            for dep in step.deps:
                if dep not in self._steps:
                    raise MissingDependencyError(
                        f"Step {step.name!r} depends on {dep!r}, which workflow "
                        f"{self.name!r} does not have"
                    )
        return topological_order(self._steps)

    def insert(
        self, *, broker: dramatiq.Broker | None = None, store: Store | None = None
    ) -> WorkflowRun:
        """Validate, write every step in one transaction, then enqueue the ready ones.

        Raises:
          WorkflowError: (a subclass) with nothing written or enqueued.
        """
        from .run import WorkflowRun

        setup = resolve(broker=broker, store=store, need_broker=True)
        assert setup.broker is not None
        order = self.validate(setup.broker)
        workflow_row, node_rows = self._rows(order)
        setup.store.insert_workflow(workflow_row, node_rows)
        ready = [row["message"] for row in node_rows if row["state"] == S.AVAILABLE]
        enqueue_steps(setup.broker, ready)
        return WorkflowRun(self.id, self.name, setup)

    def _rows(self, order: list[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        now = dt.datetime.now(dt.UTC)
        dependents: dict[str, list[str]] = {name: [] for name in order}
        for step in self._steps.values():
            for dep in step.deps:
                dependents[dep].append(step.name)
        nodes = []
        for position, name in enumerate(order):
            step = self._steps[name]
            message = step.message.copy(options={STEP_OPTION: [self.id, name]}).asdict()
            nodes.append(
                {
                    "workflow_id": self.id,
                    "step_name": name,
                    "workflow_name": self.name,
                    "position": position,
                    "state": S.PENDING if step.deps else S.AVAILABLE,
                    "actor_name": step.message.actor_name,
                    "message": message,
                    "deps": list(step.deps),
                    "dependents": dependents[name],
                    "pending_deps": len(step.deps),
                    "allow_failed_deps": step.allow_failed_deps,
                    "attempt": 0,
                    "version": 0,
                    "has_result": False,
                    "inserted_at": now,
                    "due_at": None if step.deps else now,
                }
            )
        workflow = {
            "id": self.id,
            "name": self.name,
            "parent_id": None,
            "total_steps": len(nodes),
            "remaining": len(nodes),
            "cancelled": False,
            "max_cost_usd": self.max_cost_usd,
            "inserted_at": now,
        }
        return workflow, nodes


def enqueue_step(broker: dramatiq.Broker, message: dict[str, Any], *, new_id: bool = False) -> None:
    """Enqueue a stored step message, stamped now so that AgeLimit counts from here.

    A re-enqueue of a message that may still exist somewhere gets a new message id
    (`new_id`): brokers key messages by id, and the gate makes the copy harmless.
    """
    fields = dict(message, message_timestamp=int(time.time() * 1000))
    if new_id:
        fields["message_id"] = dramatiq.message.generate_unique_id()
    broker.enqueue(dramatiq.Message(**fields))


def first_steps(messages: Sequence[dict[str, Any]], count: int = 5) -> list[Any]:
    """The ``[workflow id, step name]`` of the first `count` stored step messages, to name
    a batch in a log line without naming every step of a fan-out."""
    return [message.get("options", {}).get(STEP_OPTION) for message in messages[:count]]


def enqueue_steps(
    broker: dramatiq.Broker,
    messages: Sequence[dict[str, Any]],
    *,
    new_ids: bool = False,
    first_batch: int = FIRST_BATCH,
) -> None:
    """Enqueue stored step messages, each as `enqueue_step` does (with `new_ids`, as
    `enqueue_step(..., new_id=True)` does).

    On a RedisBroker they go out `ENQUEUE_BATCH` to a round trip instead of one each
    (the first batch `first_batch`): a worker that waits for each of a fan-out's
    messages in turn holds back the very threads that would run them. Each batch also
    wakes idle consumers of its queues (`wakeup`). Raises what the broker raised; the
    steps of the batch that failed and of the batches after it may not have gone out
    (they stay available in the store, and the Sweeper enqueues them).
    """
    if not can_pipeline(broker):
        for message in messages:
            enqueue_step(broker, message, new_id=new_ids)
        return
    assert isinstance(broker, RedisBroker)
    start, size = 0, max(first_batch, 1)
    while start < len(messages):
        _enqueue_batch(broker, messages[start : start + size], new_ids)
        start, size = start + size, ENQUEUE_BATCH


def _enqueue_batch(broker: RedisBroker, batch: Sequence[dict[str, Any]], new_ids: bool) -> None:
    def calls(dispatching: RedisBroker, pipe: redis.client.Pipeline) -> None:
        for message in batch:
            enqueue_step(dispatching, message, new_id=new_ids)
        wakeup.publish_wakes(pipe, broker, batch)

    in_one_round_trip(broker, calls)


def check_step_name(name: object) -> None:
    if not isinstance(name, str):
        raise InvalidStepError(f"A step name must be a string, got {type(name).__name__} {name!r}")
    if not 1 <= len(name) <= MAX_NAME:
        raise InvalidStepError(
            f"A step name must have 1-{MAX_NAME} characters, got {len(name)}: {name[:40]!r}"
        )
    for char in name:
        if unicodedata.category(char) == "Cc":
            raise InvalidStepError(f"Step name {name!r} contains the control character {char!r}")


def check_step_message(name: str, message: object, broker: dramatiq.Broker | None) -> None:
    if not isinstance(message, dramatiq.Message):
        raise InvalidStepError(
            f"Step {name!r} needs a message such as my_actor.message(...), "
            f"got {type(message).__name__}"
        )
    if broker is None:
        return
    actor = broker.actors.get(message.actor_name)
    if actor is None:
        raise InvalidStepError(
            f"Step {name!r}: actor {message.actor_name!r} is not declared on broker {broker!r}"
        )
    if not isinstance(actor, WorkflowActor):
        raise InvalidStepError(
            f"Step {name!r}: actor {message.actor_name!r} is not a workflow actor; "
            "declare it with @baton.workflow_actor"
        )


def topological_order(steps: dict[str, Step]) -> list[str]:
    """Kahn's algorithm, stable in insertion order; CycleError names one cycle."""
    indegree = {name: len(step.deps) for name, step in steps.items()}
    dependents: dict[str, list[str]] = {name: [] for name in steps}
    for step in steps.values():
        for dep in step.deps:
            dependents[dep].append(step.name)
    order = [name for name, degree in indegree.items() if degree == 0]
    for name in order:  # the list grows while we walk it
        for child in dependents[name]:
            indegree[child] -= 1
            if indegree[child] == 0:
                order.append(child)
    if len(order) != len(steps):
        cycle = _find_cycle(steps, {n for n, d in indegree.items() if d > 0})
        raise CycleError("Workflow has a cycle: " + " -> ".join(repr(s) for s in cycle))
    return order


def _find_cycle(steps: dict[str, Step], candidates: set[str]) -> list[str]:
    # every candidate has a dependency among the candidates: walk deps until one repeats
    start = min(candidates, key=list(steps).index)
    path: list[str] = []
    seen: dict[str, int] = {}
    node = start
    while node not in seen:
        seen[node] = len(path)
        path.append(node)
        node = next(d for d in steps[node].deps if d in candidates)
    cycle = path[seen[node] :] + [node]
    cycle.reverse()  # dependency order: a -> b means b depends on a
    return cycle
