"""`WorkflowRun`: a handle on an inserted workflow."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from . import states as S
from .errors import WaitTimeout
from .setup import Setup, resolve
from .stats import CostReport, workflow_cost

if TYPE_CHECKING:
    import dramatiq

    from .store import Store


class WorkflowRun:
    """An inserted workflow: its status, its results, its end.

    Attributes:
      id(str), name(str)
    """

    def __init__(self, id: str, name: str, setup: Setup) -> None:  # noqa: A002
        self.id = id
        self.name = name
        self._setup = setup

    def __repr__(self) -> str:
        return f"WorkflowRun(id={self.id!r}, name={self.name!r})"

    @classmethod
    def get(
        cls,
        id: str,
        *,
        store: Store | None = None,
        broker: dramatiq.Broker | None = None,  # noqa: A002
    ) -> WorkflowRun:
        """The run of the workflow with this id.

        Raises:
          WorkflowNotFound: no workflow has this id.
        """
        setup = resolve(broker=broker, store=store)
        row = setup.store.get_workflow(id)
        return cls(row.id, row.name, setup)

    def status(self) -> str:
        """``"running"``, ``"completed"``, ``"failed"`` or ``"cancelled"``."""
        return self._setup.store.get_workflow(self.id).outcome or S.RUNNING

    def wait(self, timeout: float | None = None) -> str:
        """Block until the workflow finishes; returns its outcome.

        Parameters:
          timeout(float|None): seconds; None waits for ever.

        Raises:
          WaitTimeout: the workflow was still running after `timeout` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.002
        while True:
            status = self.status()
            if status != S.RUNNING:
                return status
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(f"Workflow {self.id} still running after {timeout} s")
            time.sleep(
                pause if deadline is None else min(pause, max(0.0, deadline - time.monotonic()))
            )
            pause = min(pause * 1.5, 0.1)

    def results(self) -> dict[str, Any]:
        """``{step: result}`` of the steps that completed so far."""
        return self._setup.store.get_results(self.id)

    def cancel(self) -> CostReport:
        """Cancel every step not yet terminal. A finished workflow is left as it is.

        Returns:
          CostReport: what the workflow's LLM calls cost so far. A step that was
          executing keeps running until it returns, and whatever it pays meanwhile is
          still recorded (`baton.stats.workflow_cost` shows it), but its further LLM
          calls are refused.
        """
        transition = self._setup.store.cancel_workflow(self.id)
        if self._setup.middleware is not None and self._setup.broker is not None:
            self._setup.middleware.apply(self._setup.broker, transition)
        return workflow_cost(self.id, store=self._setup.store)
