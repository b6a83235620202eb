"""`MultiModel`: the same step on several models, and a step that reads their answers.

    MultiModel.fan_out(wf, "summary", summarize, models=["openai/gpt-4o", "openai/gpt-4o-mini"],
                       synthesize=pick_best, min_successes=1)

adds ``summary:openai/gpt-4o`` and ``summary:openai/gpt-4o-mini`` (each
``summarize.message(model=...)``) and ``summary`` (``pick_best.message()``), which
depends on both with ``allow_failed_deps=True`` and calls `MultiModel.outputs()`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import dramatiq

from ..actor import WorkflowActor
from ..context import _current
from ..errors import ConfigurationError, DuplicateStepError, InvalidStepError
from ..workflow import Workflow, check_step_name
from .errors import NotEnoughOutputs

#: the synthesize step's message option that says which fan-out it reads
OPTION = "baton_multimodel"
_CACHE_KEY = "baton_dramatiq.llm.multimodel"


class MultiModel:
    """Fan a step out over several models and synthesize what they answered."""

    @staticmethod
    def fan_out(
        workflow: Workflow,
        name: str,
        actor: dramatiq.Actor[Any, Any],
        *,
        models: Sequence[str],
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        deps: Iterable[str] = (),
        synthesize: dramatiq.Actor[Any, Any] | None = None,
        min_successes: int = 1,
    ) -> Workflow:
        """Add one step per model, and a synthesize step when given; returns the workflow.

        Parameters:
          name(str): the fan-out's name: steps ``f"{name}:{model}"``, synthesize ``name``.
          actor: a workflow actor taking a ``model`` keyword argument.
          models(list[str]): litellm model names, at least one, no repeats.
          args, kwargs: the rest of each model step's arguments.
          deps(list[str]): what every model step depends on.
          synthesize: a workflow actor called with no arguments; inside it,
            `MultiModel.outputs()` returns the answers that arrived.
          min_successes(int): fewer successful models than this fails `synthesize`.

        Raises:
          DuplicateStepError, InvalidStepError: before any step is added.
        """
        kwargs = dict(kwargs or {})
        if "model" in kwargs:
            raise InvalidStepError(
                f"fan_out {name!r}: kwargs must not hold 'model'; each step gets its own"
            )
        if isinstance(models, str) or not models:
            raise InvalidStepError(f"fan_out {name!r} needs a list of model names, got {models!r}")
        for model in models:
            if not isinstance(model, str) or not model:
                raise InvalidStepError(f"fan_out {name!r}: {model!r} is not a model name")
        repeated = sorted({m for m in models if list(models).count(m) > 1})
        if repeated:
            raise DuplicateStepError(f"fan_out {name!r} lists model(s) twice: {repeated}")
        if isinstance(min_successes, bool) or not isinstance(min_successes, int):
            raise ConfigurationError(f"min_successes must be an int, got {min_successes!r}")
        if not 1 <= min_successes <= len(models):
            raise ConfigurationError(
                f"fan_out {name!r}: min_successes must be between 1 and {len(models)} "
                f"(the number of models), got {min_successes}"
            )
        if min_successes != 1 and synthesize is None:
            raise ConfigurationError(
                f"fan_out {name!r}: min_successes applies to a synthesize step; pass synthesize="
            )
        names = [f"{name}:{model}" for model in models] + ([name] if synthesize else [])
        for step_name in names:  # everything is checked before anything is added
            check_step_name(step_name)
            if step_name in {s.name for s in workflow.steps}:
                raise DuplicateStepError(
                    f"fan_out {name!r}: workflow {workflow.name!r} already has a step {step_name!r}"
                )
        if synthesize is not None and not isinstance(synthesize, WorkflowActor):
            raise InvalidStepError(
                f"fan_out {name!r}: synthesize must be a workflow actor, got {synthesize!r}"
            )
        deps = list(deps)
        for model, step_name in zip(models, names, strict=False):
            workflow.add(step_name, actor.message(*args, **kwargs, model=model), deps=deps)
        if synthesize is not None:
            message = synthesize.message_with_options(
                baton_multimodel={"models": list(models), "min_successes": min_successes}
            )
            workflow.add(name, message, deps=names[:-1], allow_failed_deps=True)
        return workflow

    @staticmethod
    def outputs() -> dict[str, Any]:
        """In a synthesize step: ``{model: result}`` of the model steps that completed.

        Raises:
          NotEnoughOutputs: fewer than `min_successes` completed; the step is discarded.
          NotInWorkflow: outside a step. ConfigurationError: not a synthesize step.
        """
        running = _current()
        ctx = running.context
        spec = running.extras.get(_CACHE_KEY)
        if spec is None:
            message = running.store.step_message(ctx.workflow_id, ctx.step_name) or {}
            spec = (message.get("options") or {}).get(OPTION)
            if not isinstance(spec, dict):
                raise ConfigurationError(
                    f"Step {ctx.step_name!r} is not the synthesize step of a "
                    "MultiModel.fan_out: MultiModel.outputs() works only there"
                )
            running.extras[_CACHE_KEY] = spec
        results = running.results()
        outputs: dict[str, Any] = {}
        failed: list[str] = []
        for model in spec["models"]:
            state, result = results.get(f"{ctx.step_name}:{model}", (None, None))
            if state == "completed":
                outputs[model] = result
            else:
                failed.append(model)
        needed = int(spec.get("min_successes", 1))
        if len(outputs) < needed:
            raise NotEnoughOutputs(
                f"Step {ctx.step_name!r}: {len(outputs)} of {len(spec['models'])} models "
                f"succeeded, fewer than min_successes={needed} (failed: {', '.join(failed)})"
            )
        return outputs
