"""baton_dramatiq: DAG workflows for Dramatiq.

import baton_dramatiq as baton

run = (baton.Workflow(name="brief")
       .add("fetch", fetch.message(topic))
       .add("summarize", summarize.message(), deps=["fetch"])
       .insert())
"""

from . import debug, events, migrations, query, stats
from .actor import WorkflowActor, workflow_actor
from .context import StepContext, current_step, get_all_results, get_result
from .errors import (
    BatonError,
    ConfigurationError,
    CycleError,
    DependencyFailed,
    DuplicateStepError,
    DuplicateWorkflowError,
    InvalidStepError,
    MissingDependencyError,
    NotInWorkflow,
    ResultError,
    SchemaOutOfDate,
    Snooze,
    StoreError,
    UnknownDependency,
    WaitTimeout,
    WorkflowError,
    WorkflowNotFound,
)
from .events import Event, EventBus, MemoryEventBus
from .middleware import WorkflowMiddleware
from .query import StepView, WorkflowView
from .redis_events import RedisEventBus
from .run import WorkflowRun
from .store import Store
from .sweeper import Sweeper, SweepReport
from .workflow import Workflow

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # `baton.llm` without importing it up front: it is optional, and litellm loads only
    # on its first call anyway
    if name == "llm":
        import importlib

        return importlib.import_module(".llm", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    # setup
    "Store",
    "WorkflowMiddleware",
    "MemoryEventBus",
    "RedisEventBus",
    "EventBus",
    "Sweeper",
    "SweepReport",
    "migrations",
    # steps
    "workflow_actor",
    "WorkflowActor",
    "get_result",
    "get_all_results",
    "current_step",
    "StepContext",
    "Snooze",
    # workflows
    "Workflow",
    "WorkflowRun",
    # reading
    "query",
    "events",
    "stats",
    "debug",
    "Event",
    "WorkflowView",
    "StepView",
    # errors
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
]
