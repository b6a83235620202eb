"""Every error baton_dramatiq raises.

The tree::

    dramatiq.DramatiqError
     └── BatonError
          ├── ConfigurationError (ValueError)     the setup is wrong; the message says how to fix it
          │    └── SchemaOutOfDate (MiddlewareError)  the database needs `baton migrate`
          ├── StoreError                          the database failed; wraps the driver's error
          │    └── GateUnavailable (MiddlewareError)  a step could not be gated: Dramatiq retries it
          ├── WorkflowError                       a workflow was rejected; nothing was written
          │    ├── CycleError
          │    ├── MissingDependencyError
          │    ├── DuplicateStepError
          │    ├── InvalidStepError
          │    └── DuplicateWorkflowError
          ├── WorkflowNotFound (LookupError)
          ├── WaitTimeout (TimeoutError)
          ├── NotInWorkflow                       a step helper was called outside a step
          ├── UnknownDependency (KeyError)        get_result() of a step that is not a dependency
          ├── DependencyFailed                    get_result() of a dependency that did not complete
          └── ResultError                         a step returned something that cannot be stored

`Snooze` is not an error: a step raises it to run again later.
"""

from __future__ import annotations

from dramatiq import DramatiqError
from dramatiq.middleware import MiddlewareError


class BatonError(DramatiqError):
    """The root of every error raised by baton_dramatiq.

    Attributes:
      retryable(bool): False for an error raised inside a step that no retry can fix:
        the step is discarded at once instead of spending Dramatiq's retries.
    """

    message: str
    retryable: bool = True

    def __init__(self, message: str = "") -> None:
        super().__init__(message)  # type: ignore[no-untyped-call]
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[type, tuple[str]]:
        return (type(self), (self.message,))


class ConfigurationError(BatonError, ValueError):
    """The setup is wrong: a missing middleware, a bad option."""


class SchemaOutOfDate(ConfigurationError, MiddlewareError):
    """The database schema is missing or older than this code needs."""


class StoreError(BatonError):
    """The database failed; the driver's error is the cause."""


class GateUnavailable(StoreError, MiddlewareError):
    """The store could not be reached to gate a step as it started.

    A MiddlewareError, so Dramatiq does not run the step ungated: the message goes back
    to Retries instead.
    """


class WorkflowError(BatonError):
    """A workflow was rejected before anything was written or enqueued."""


class CycleError(WorkflowError):
    """The dependencies form a cycle."""


class MissingDependencyError(WorkflowError):
    """A step depends on a step the workflow does not have."""


class DuplicateStepError(WorkflowError):
    """Two steps share a name."""


class InvalidStepError(WorkflowError):
    """An empty workflow, a bad step name, or a message that is not a workflow step."""


class DuplicateWorkflowError(WorkflowError):
    """A workflow with this id was inserted already; nothing changed."""


class WorkflowNotFound(BatonError, LookupError):
    """No workflow has this id."""


class WaitTimeout(BatonError, TimeoutError):
    """A wait ran past its timeout."""


class NotInWorkflow(BatonError):
    """A step helper was called outside a running workflow step."""


class UnknownDependency(BatonError, KeyError):
    """`get_result(name)` where `name` is not a declared dependency."""

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message


class DependencyFailed(BatonError):
    """`get_result(name)` of a dependency that did not complete."""


class ResultError(BatonError):
    """A step returned a value that is not JSON or is too large to store."""


class Snooze(Exception):  # noqa: N818 - a signal, not an error
    """Raise inside a step to run it again after `seconds`, without spending a retry.

    Parameters:
      seconds(float): how long to wait before the step runs again.
    """

    def __init__(self, seconds: float = 0) -> None:
        if seconds < 0:
            raise ValueError(f"Snooze seconds must be >= 0, got {seconds!r}")
        super().__init__(seconds)
        self.seconds = float(seconds)
