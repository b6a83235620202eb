"""Settings of one benchmark run, and the environment handed to worker processes."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping


@dataclasses.dataclass
class Settings:
    """Everything a run is parameterised by; printed with the results.

    The defaults are the full run; `quick()` shrinks the sizes for a smoke run.
    """

    redis_url: str = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/0")
    pg_admin_url: str = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
    #: worker processes per contender, and threads (Celery: pool concurrency) per process
    processes: int = 1
    threads: int = 8
    #: Dramatiq's consumer back-off cap (ms), the same for every Dramatiq-based contender
    worker_timeout_ms: int = 10
    #: Celery's pool: "prefork" (Celery's default) or "threads"
    celery_pool: str = "prefork"
    quick: bool = False

    # 1. overhead: 1 -> width -> 1 against width + 2 bare messages
    overhead_width: int = 500
    overhead_rounds: int = 3
    # 2. diamonds at once, per contender
    diamonds: int = 300
    diamond_rounds: int = 3
    # 3. fan-in latency: diamonds submitted one every `paced_interval_s`
    fanin_diamonds: int = 200
    paced_interval_s: float = 0.1
    # 5. event latency: diamonds submitted the same way, one subscriber process
    event_diamonds: int = 100
    # 4. scale
    scale_sizes: tuple[int, ...] = (100, 1_000, 10_000, 50_000)
    #: the largest size of each shape that is also run (bigger ones are inserted only)
    scale_run_max: dict[str, int] = dataclasses.field(
        default_factory=lambda: {"wide": 50_000, "chain": 50_000}
    )
    #: the longest a scale run may take before it is cancelled and reported as such
    scale_run_timeout_s: float = 900.0
    #: the longest any one batch of workflows may take
    timeout_s: float = 180.0

    def quick_sizes(self) -> Settings:
        """The same settings with the small sizes of a smoke run (< 1 min per scenario)."""
        return dataclasses.replace(
            self,
            quick=True,
            overhead_width=100,
            overhead_rounds=1,
            diamonds=50,
            diamond_rounds=1,
            fanin_diamonds=30,
            event_diamonds=20,
            scale_sizes=(100, 1_000),
            scale_run_max={"wide": 1_000, "chain": 1_000},
            scale_run_timeout_s=60.0,
            timeout_s=60.0,
        )

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class AppConfig:
    """What a worker process (or the harness's client side) of one contender needs.

    Passed to worker processes as BENCH_* environment variables.
    """

    redis_url: str
    namespace: str
    database_url: str = ""
    threads: int = 8
    worker_timeout_ms: int = 10
    celery_pool: str = "prefork"

    def to_env(self) -> dict[str, str]:
        return {
            "BENCH_REDIS_URL": self.redis_url,
            "BENCH_NAMESPACE": self.namespace,
            "BENCH_DATABASE_URL": self.database_url,
            "BENCH_THREADS": str(self.threads),
            "BENCH_WORKER_TIMEOUT_MS": str(self.worker_timeout_ms),
            "BENCH_CELERY_POOL": self.celery_pool,
        }

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> AppConfig:
        return cls(
            redis_url=env["BENCH_REDIS_URL"],
            namespace=env["BENCH_NAMESPACE"],
            database_url=env.get("BENCH_DATABASE_URL", ""),
            threads=int(env.get("BENCH_THREADS", "8")),
            worker_timeout_ms=int(env.get("BENCH_WORKER_TIMEOUT_MS", "10")),
            celery_pool=env.get("BENCH_CELERY_POOL", "prefork"),
        )
