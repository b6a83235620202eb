"""The contenders: one module per system, each both a worker app and a client.

``python -m bench.contenders.<name>`` is a worker process (started by `bench.workers`);
``running(services, settings)`` in the same module is a context manager that creates a
fresh environment, starts the workers, yields a client that submits work, and tears it
all down, also on error.

Every contender of the diamond scenario runs the same research-brief diamond of no-op
steps (``fetch_sources`` -> ``summarize``, ``keywords``, ``credibility`` ->
``compile_brief``); each step returns a small dict, and the fan-in step records its
finish on the shared `bench.board.Board`.
"""

from __future__ import annotations

from typing import Protocol

from ..board import Board
from ..config import AppConfig, Settings
from ..services import Env
from ..workers import Workers

MIDDLE_STEPS = ("summarize", "keywords", "credibility")


class DiamondClient(Protocol):
    """What the diamond scenario needs of a contender."""

    name: str
    #: what the contender passes into the fan-in step (shown in the table)
    results_note: str
    board: Board
    workers: Workers

    def submit_diamond(self, key: str) -> None:
        """Start one diamond whose fan-in step records `key` on the board."""


def app_config(settings: Settings, env: Env) -> AppConfig:
    return AppConfig(
        redis_url=settings.redis_url,
        namespace=env.namespace,
        database_url=env.database_url,
        threads=settings.threads,
        worker_timeout_ms=settings.worker_timeout_ms,
        celery_pool=settings.celery_pool,
    )
