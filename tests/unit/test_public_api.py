"""The public surface: names, error tree, and behaviour outside a running step."""

from __future__ import annotations

import pickle

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker

import baton_dramatiq as baton

EXPECTED = {
    "Store",
    "WorkflowMiddleware",
    "Sweeper",
    "SweepReport",
    "MemoryEventBus",
    "RedisEventBus",
    "EventBus",
    "migrations",
    "workflow_actor",
    "WorkflowActor",
    "get_result",
    "get_all_results",
    "current_step",
    "StepContext",
    "Snooze",
    "Workflow",
    "WorkflowRun",
    "query",
    "events",
    "stats",
    "debug",
    "Event",
    "WorkflowView",
    "StepView",
    "BatonError",
    "ConfigurationError",
    "SchemaOutOfDate",
    "StoreError",
    "WorkflowError",
    "CycleError",
    "MissingDependencyError",
    "DuplicateStepError",
    "InvalidStepError",
    "DuplicateWorkflowError",
    "WorkflowNotFound",
    "WaitTimeout",
    "NotInWorkflow",
    "UnknownDependency",
    "DependencyFailed",
    "ResultError",
}


def test_the_exports_are_exactly_the_public_names() -> None:
    assert set(baton.__all__) == EXPECTED
    assert len(baton.__all__) == len(EXPECTED)
    for name in baton.__all__:
        assert getattr(baton, name) is not None


def test_importing_the_package_loads_no_llm_or_web_code() -> None:
    import subprocess
    import sys

    code = (
        "import sys, baton_dramatiq; print(sorted(m for m in "
        "('litellm', 'tiktoken', 'starlette', 'baton_dramatiq.cli') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "cls",
    [
        getattr(baton, n)
        for n in sorted(EXPECTED)
        if isinstance(getattr(baton, n), type) and issubclass(getattr(baton, n), baton.BatonError)
    ],
)
def test_every_error_derives_from_baton_and_dramatiq_errors_and_pickles(cls: type) -> None:
    assert issubclass(cls, baton.BatonError) and issubclass(cls, dramatiq.DramatiqError)
    error = cls("what went wrong")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is cls and str(copy) == "what went wrong"


def test_errors_have_their_natural_python_bases() -> None:
    assert issubclass(baton.WaitTimeout, TimeoutError)
    assert issubclass(baton.ConfigurationError, ValueError)
    assert issubclass(baton.WorkflowNotFound, LookupError)
    assert issubclass(baton.SchemaOutOfDate, dramatiq.middleware.MiddlewareError)


def test_step_helpers_outside_a_step_raise_not_in_workflow() -> None:
    for call in (baton.current_step, baton.get_all_results, lambda: baton.get_result("x")):
        with pytest.raises(baton.NotInWorkflow, match="Not inside a workflow step"):
            call()


def test_module_level_calls_without_the_middleware_say_how_to_add_it() -> None:
    broker = StubBroker()
    with pytest.raises(baton.ConfigurationError, match="add_middleware"):
        baton.query.list_workflows(broker=broker)
    with pytest.raises(baton.ConfigurationError, match="WorkflowMiddleware"):
        baton.WorkflowRun.get("x", broker=broker)


def test_a_workflow_actor_called_directly_is_an_ordinary_function() -> None:
    broker = StubBroker()

    @baton.workflow_actor(broker=broker)
    def double(x: int) -> int:
        return 2 * x

    @baton.workflow_actor(broker=broker, queue_name="other", max_retries=1)
    def named(x: int) -> int:
        return x

    assert double(21) == 42
    assert isinstance(double, baton.WorkflowActor) and named.queue_name == "other"
    assert named.options["max_retries"] == 1


def test_bad_configuration_is_refused_at_construction(tmp_path: object) -> None:
    with pytest.raises(baton.ConfigurationError, match="Unsupported database 'mysql'"):
        baton.Store("mysql://localhost/x")
    with pytest.raises(baton.ConfigurationError, match="Not a database URL"):
        baton.Store("::::")
    store = baton.Store("sqlite://")
    with pytest.raises(baton.ConfigurationError, match="max_result_bytes"):
        baton.WorkflowMiddleware(store, max_result_bytes=0)
    with pytest.raises(baton.ConfigurationError, match="needs a baton.Store"):
        baton.WorkflowMiddleware("sqlite://")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Snooze seconds"):
        baton.Snooze(-1)
    with pytest.raises(baton.WorkflowError, match="workflow id"):
        baton.Workflow(name="x", id="")
    with pytest.raises(baton.ConfigurationError, match="Unknown workflow state"):
        baton.query.list_workflows(state="done", store=store)


def test_the_workflow_id_is_known_before_insert() -> None:
    wf = baton.Workflow(name="early")
    assert len(wf.id) == 36 and baton.Workflow(name="given", id="abc").id == "abc"
    assert wf.id != baton.Workflow(name="early").id


def test_a_workflow_for_an_explicit_broker_is_checked_against_it_at_insert() -> None:
    broker, store = StubBroker(), baton.Store("sqlite://")
    baton.migrations.upgrade(store)
    broker.add_middleware(baton.WorkflowMiddleware(store))

    @baton.workflow_actor(broker=broker, actor_name="only_on_the_explicit_broker")
    def step() -> None: ...

    @dramatiq.actor(broker=broker, actor_name="plain_on_the_explicit_broker")
    def plain() -> None: ...

    wf = baton.Workflow(name="explicit").add("a", step.message())
    run = wf.insert(broker=broker)
    assert baton.query.get_workflow(run.id, store=store).state == "running"
    assert broker.queues["default"].qsize() == 1
    bad = baton.Workflow(name="explicit").add("a", plain.message())
    with pytest.raises(baton.InvalidStepError, match="not a workflow actor"):
        bad.insert(broker=broker)


def test_a_step_the_store_cannot_gate_is_retried_not_run_ungated() -> None:
    # Given a store that fails when the step starts
    broker, store = StubBroker(), baton.Store("sqlite://")
    baton.migrations.upgrade(store)
    broker.add_middleware(baton.WorkflowMiddleware(store))
    ran: list[int] = []

    @baton.workflow_actor(broker=broker, max_retries=1, min_backoff=10, max_backoff=10)
    def gated() -> None:
        ran.append(1)

    run = baton.Workflow(name="gate").add("gated", gated.message()).insert(broker=broker)

    def down(*args: object, **kwargs: object) -> None:
        raise baton.StoreError("OperationalError: the server closed the connection")

    store.claim = down  # type: ignore[method-assign]
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=10)
    worker.start()
    try:
        broker.join("default", fail_fast=False)
        broker.join("default.DQ", fail_fast=False)
    finally:
        worker.stop()
    # Then the body never ran, the message was retried and, out of retries, dead-lettered
    assert ran == []
    assert len(broker.dead_letters) == 1
    # and, when the message failed for good, the store recorded why
    [step] = baton.query.get_workflow_steps(run.id, store=store)
    assert step.state == "discarded" and step.attempt == 0
    assert step.error is not None and step.error.startswith("GateUnavailable: Could not gate")
