"""Start worker processes, wait until they are ready, stop them; all bounded in time.

A worker process is ``python -m <module>`` with the contender's settings in BENCH_*
environment variables. It prints ``ready`` on stdout once it consumes messages, and
stops on SIGTERM. Its stderr goes to a log file under bench/results/logs/, whose tail is
shown when it fails to start.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import dramatiq

ROOT = Path(__file__).resolve().parents[1]
LOG_DIR = ROOT / "bench" / "results" / "logs"


class WorkerError(RuntimeError):
    """A worker process did not start or died."""


class Workers:
    """`count` processes of ``python -m module``; a context manager that always stops them.

    Parameters:
      module: the worker module, e.g. ``bench.contenders.baton_app``.
      env: extra environment variables (the contender's BENCH_* settings).
      count: how many processes.
      label: names the log files.
    """

    def __init__(
        self, module: str, env: dict[str, str], *, count: int = 1, label: str = ""
    ) -> None:
        self.module = module
        self.env = dict(os.environ, **env, PYTHONUNBUFFERED="1")
        self.count = count
        self.label = label or module.rsplit(".", 1)[-1]
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    def start(self, timeout: float = 60.0) -> Workers:
        """Spawn every process, then wait for each one's ``ready`` line."""
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        try:
            for i in range(self.count):
                log = LOG_DIR / f"{self.label}-{i}.log"
                self.logs.append(log)
                with open(log, "wb") as err:
                    proc = subprocess.Popen(
                        [sys.executable, "-m", self.module],
                        cwd=ROOT,
                        env=self.env,
                        stdout=subprocess.PIPE,
                        stderr=err,
                        start_new_session=True,  # a Ctrl-C of the harness is ours to pass on
                    )
                self.procs.append(proc)
            deadline = time.monotonic() + timeout
            for proc, log in zip(self.procs, self.logs, strict=True):
                self._await_ready(proc, log, deadline)
        except BaseException:
            self.stop()
            raise
        return self

    @staticmethod
    def _await_ready(proc: subprocess.Popen[bytes], log: Path, deadline: float) -> None:
        assert proc.stdout is not None
        buffer = b""
        while b"ready" not in buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WorkerError(f"worker {proc.args} not ready in time; log {log}:\n{_tail(log)}")
            readable, _, _ = select.select([proc.stdout], [], [], min(left, 0.5))
            if readable:
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:  # EOF: it exited
                    code = proc.wait()
                    raise WorkerError(
                        f"worker exited with {code} before ready; log {log}:\n{_tail(log)}"
                    )
                buffer += chunk

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def check_alive(self) -> None:
        for proc, log in zip(self.procs, self.logs, strict=False):
            if proc.poll() is not None:
                raise WorkerError(f"worker {proc.pid} died with {proc.returncode}:\n{_tail(log)}")

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM every process, wait up to `timeout`, then SIGKILL what is left.

        SIGKILL goes to the process group: it takes a Celery pool's children too.
        """
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
            else:
                _signal_group(proc, signal.SIGKILL)  # children left behind, if any
            if proc.stdout is not None:
                proc.stdout.close()
        self.procs.clear()

    def __enter__(self) -> Workers:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    """Signal the process and its children (a Celery prefork pool): they share its group."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def serve_dramatiq(broker: dramatiq.Broker, *, threads: int, worker_timeout_ms: int) -> None:
    """The body of a Dramatiq worker process: boot, say ``ready``, stop on SIGTERM.

    The same for every Dramatiq-based contender: one `dramatiq.Worker` with `threads`
    threads and the given consumer back-off cap (the dramatiq CLI has no option for it).
    """
    stopping = False

    def on_term(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    broker.emit_after("process_boot")
    worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=worker_timeout_ms)
    worker.start()
    print("ready", flush=True)
    while not stopping:
        time.sleep(0.1)
    worker.stop(timeout=5000)
