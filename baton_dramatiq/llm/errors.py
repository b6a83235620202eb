"""The LLM toolkit's errors, all `baton.BatonError`s::

    BatonError
     └── LLMError
          ├── BudgetExceeded      a call could cost more than is left: the step is discarded
          ├── StepNotRunning      the step was cancelled (or finished) while it ran
          ├── NotEnoughOutputs    a MultiModel synthesize step got fewer than min_successes
          └── ReplayError         a step cannot be replayed from what was captured

The first three have ``retryable = False``: raised inside a step, they discard it at
once, spending no retry.
"""

from __future__ import annotations

from ..errors import BatonError


class LLMError(BatonError):
    """The root of the LLM toolkit's errors."""


class BudgetExceeded(LLMError):
    """A call's worst-case cost exceeds what is left of the step's or workflow's budget.

    Raised before anything is sent; the step is discarded without a retry.
    """

    retryable = False


class StepNotRunning(LLMError):
    """The step is no longer executing (it was cancelled): no further calls are paid."""

    retryable = False


class NotEnoughOutputs(LLMError):
    """Fewer models than `min_successes` succeeded for a MultiModel synthesize step."""

    retryable = False


class ReplayError(LLMError):
    """A step cannot be replayed: unknown, still running, or nothing usable was captured."""
