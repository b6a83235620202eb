"""Bad workflows are rejected whole: a clear error, no rows, no messages."""

from __future__ import annotations

import types
from collections.abc import Iterator
from pathlib import Path

import dramatiq
import pytest
import redis
import sqlalchemy as sa
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker

import baton_dramatiq as baton
from tests.support import services
from tests.support.actors import declare


class Backend(types.SimpleNamespace):
    broker: dramatiq.Broker
    store: baton.Store
    actors: types.SimpleNamespace

    def rows(self) -> int:
        with self.store.connect() as conn:
            return sum(
                conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
                for t in (self.store.workflows, self.store.nodes)
            )

    def queued(self) -> int:
        if isinstance(self.broker, StubBroker):
            return sum(q.qsize() for q in self.broker.queues.values())
        client = redis.Redis.from_url(services.REDIS_URL)
        return sum(
            client.llen(k)
            for k in client.scan_iter(match=f"{self.broker.namespace}:*")
            if client.type(k) == b"list"
        )


@pytest.fixture(params=["embedded", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """A store and a broker with the test actors, and no worker: nothing may run."""
    if request.param == "embedded":
        store = baton.Store(f"sqlite:///{tmp_path / 'v.db'}")
        baton.migrations.upgrade(store)
        broker: dramatiq.Broker = StubBroker()
        cleanup = [store.dispose]
    else:
        request.getfixturevalue("pg_template")
        name, namespace = services.create_database(), services.new_namespace()
        store = baton.Store(services.db_url(name))
        broker = RedisBroker(url=services.REDIS_URL, namespace=namespace)
        cleanup = [
            store.dispose,
            lambda: services.drop_database(name),
            lambda: services.drop_namespace(namespace),
        ]
    broker.add_middleware(baton.WorkflowMiddleware(store))
    dramatiq.set_broker(broker)
    yield Backend(broker=broker, store=store, actors=declare(broker, lambda *_: None))
    for fn in cleanup:
        fn()


def rejected(backend: Backend, wf: baton.Workflow, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        wf.insert()
    assert backend.rows() == 0, "a rejected workflow left rows behind"
    assert backend.queued() == 0, "a rejected workflow enqueued messages"


def test_a_cycle_is_rejected_naming_its_steps(backend: Backend) -> None:
    e = backend.actors.echo
    wf = (
        baton.Workflow(name="loop")
        .add("start", e.message())
        .add("a", e.message(), deps=["start", "c"])
        .add("b", e.message(), deps=["a"])
        .add("c", e.message(), deps=["b"])
    )
    with pytest.raises(baton.CycleError) as info:
        wf.insert()
    message = str(info.value)
    assert all(f"'{name}'" in message for name in ("a", "b", "c")) and "'start'" not in message
    assert backend.rows() == 0 and backend.queued() == 0


def test_a_step_depending_on_itself_is_a_cycle(backend: Backend) -> None:
    wf = baton.Workflow(name="self").add("me", backend.actors.echo.message(), deps=["me"])
    rejected(backend, wf, baton.CycleError, "'me' -> 'me'")


def test_a_missing_dependency_is_rejected(backend: Backend) -> None:
    e = backend.actors.echo
    wf = (
        baton.Workflow(name="missing")
        .add("a", e.message())
        .add("b", e.message(), deps=["a", "ghost"])
    )
    rejected(backend, wf, baton.MissingDependencyError, "Step 'b' depends on 'ghost'")


def test_an_empty_workflow_is_rejected(backend: Backend) -> None:
    rejected(backend, baton.Workflow(name="empty"), baton.InvalidStepError, "has no steps")


def test_a_duplicate_workflow_id_changes_nothing(backend: Backend) -> None:
    e = backend.actors.echo
    first = baton.Workflow(name="once", id="wf-fixed-id").add("a", e.message(1)).insert()
    rows, queued = backend.rows(), backend.queued()
    assert (rows, queued) == (2, 1)  # the workflow, its step; the step's message
    again = (
        baton.Workflow(name="twice", id="wf-fixed-id").add("a", e.message(2)).add("b", e.message())
    )
    with pytest.raises(baton.DuplicateWorkflowError, match="wf-fixed-id"):
        again.insert()
    assert (backend.rows(), backend.queued()) == (rows, queued)
    assert baton.query.get_workflow(first.id).name == "once"


def test_add_rejects_at_once_what_it_can_tell(backend: Backend) -> None:
    e = backend.actors.echo
    wf = baton.Workflow(name="add").add("a", e.message())
    with pytest.raises(baton.DuplicateStepError, match="'a' was added twice"):
        wf.add("a", e.message())
    for bad in ("", "x" * 256, "tab\there", "nul\x00", 42):
        with pytest.raises(baton.InvalidStepError):
            wf.add(bad, e.message())  # type: ignore[arg-type]
    with pytest.raises(baton.InvalidStepError, match="not a workflow actor"):
        wf.add("plain", backend.actors.plain.message("x"))
    with pytest.raises(baton.InvalidStepError, match="needs a message"):
        wf.add("fn", e)  # type: ignore[arg-type]
    with pytest.raises(baton.InvalidStepError, match="list of step names"):
        wf.add("b", e.message(), deps="a")
    assert [s.name for s in wf.steps] == ["a"]
    assert backend.rows() == 0 and backend.queued() == 0


def test_step_names_may_be_any_unicode_up_to_255_characters(backend: Backend) -> None:
    e = backend.actors.echo
    names = ["日本語のステップ", "émoji 🚀 step", "x" * 255, "a:b/c[0]"]
    wf = baton.Workflow(name="unicode")
    for name in names:
        wf.add(name, e.message())
    wf.insert()
    assert [s.step_name for s in baton.query.get_workflow_steps(wf.id)] == names


def test_every_workflow_error_is_a_baton_and_dramatiq_error() -> None:
    for cls in (
        baton.CycleError,
        baton.MissingDependencyError,
        baton.DuplicateStepError,
        baton.InvalidStepError,
        baton.DuplicateWorkflowError,
    ):
        assert issubclass(cls, baton.WorkflowError)
        assert issubclass(cls, baton.BatonError)
        assert issubclass(cls, dramatiq.DramatiqError)
