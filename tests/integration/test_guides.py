"""Every code block in guides/ runs, in order, as a reader would run it.

A ``python`` block whose first line is ``# name.py`` is a file the reader saves; the
other ``python`` blocks run as one script, in order. A ``console`` block's ``$`` lines
are commands; a ``dramatiq`` command (after any ``NAME=value`` settings) is a worker,
started in the background.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.support import services

ROOT = Path(__file__).resolve().parents[2]
GUIDES = sorted((ROOT / "guides").glob("*.md"))
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)
WORKER = re.compile(r"(\w+=\S*\s+)*dramatiq\s")  # a worker, after any env settings
GUIDE_REDIS_DB = 11  # the guides use Dramatiq's default namespace: give them a db of their own


def blocks(path: Path) -> Iterator[tuple[str, str]]:
    for match in BLOCK.finditer(path.read_text()):
        yield match.group(1), match.group(2)


def test_every_guide_has_code_and_every_block_is_runnable_kind() -> None:
    assert {p.name for p in GUIDES} >= {"getting_started.md", "building_a_workflow.md"}
    for path in GUIDES:
        kinds = {kind for kind, _ in blocks(path)}
        assert kinds and kinds <= {"python", "console"}, f"{path.name}: {kinds}"


@pytest.mark.parametrize("guide", GUIDES, ids=lambda p: p.name)
def test_the_guide_runs(guide: Path, tmp_path: Path, pg_template: str) -> None:
    db = services.create_database(migrated=False)
    redis_url = services.REDIS_URL.rsplit("/", 1)[0] + f"/{GUIDE_REDIS_DB}"
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    env = dict(
        os.environ,
        BATON_DATABASE_URL=services.db_url(db),
        BATON_REDIS_URL=redis_url,
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        PYTHONPATH=str(tmp_path),
    )
    workers: list[subprocess.Popen[bytes]] = []
    script: list[str] = []

    def run_script() -> None:
        if script:
            path = tmp_path / f"step_{len(list(tmp_path.glob('step_*.py')))}.py"
            path.write_text("\n\n".join(script))
            script.clear()
            proc = subprocess.run(
                [sys.executable, str(path)],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert proc.returncode == 0, f"{guide.name} failed:\n{proc.stdout}\n{proc.stderr}"

    try:
        for kind, code in blocks(guide):
            first = code.splitlines()[0]
            if kind == "python" and re.fullmatch(r"# [\w/]+\.py", first):
                (tmp_path / first[2:]).write_text(code)
            elif kind == "python":
                script.append(code)
            else:
                run_script()
                for line in code.splitlines():
                    if not line.startswith("$ "):
                        continue
                    command = line[2:]
                    if WORKER.match(command):
                        workers.append(
                            subprocess.Popen(
                                ["bash", "-c", "exec env " + command], cwd=tmp_path, env=env
                            )
                        )
                    else:
                        proc = subprocess.run(
                            ["bash", "-c", command],
                            cwd=tmp_path,
                            env=env,
                            capture_output=True,
                            text=True,
                            timeout=120,
                        )
                        assert proc.returncode == 0, f"{line}: {proc.stdout}{proc.stderr}"
        run_script()
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                worker.kill()
        client.flushdb()
        client.close()
        services.drop_database(db)
