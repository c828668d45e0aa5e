# Copyright (c) DAST bundles contributors
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#     http://www.apache.org/licenses/LICENSE-2.0
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Running bundle CLI calls of an experiment a few at a time, each logging to its own folder."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Job", "loadavg", "run_jobs"]


@dataclass
class Job:
    """One bundle CLI call: ``command`` runs with its output in ``root/run.log``; when it exits with status 0,
    ``on_done(seconds)`` writes its record."""

    name: str
    command: Sequence[str]
    root: Path
    on_done: Callable[[float], None]


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages (empty where the OS has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def run_jobs(jobs: Sequence[Job], parallel: int = 1, tag: str = "experiment", poll_s: float = 2.0) -> None:
    """Run ``jobs`` in order, ``parallel`` at once, each with one intra-op thread unless ``OMP_NUM_THREADS`` is set.

    Raises:
        SystemExit: a job exited with a non-zero status; the message names it and quotes the end of its log.
    """
    todo = list(jobs)
    running: list[tuple[Job, subprocess.Popen, float]] = []
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    while todo or running:
        while todo and len(running) < max(1, int(parallel)):
            job = todo.pop(0)
            job.root.mkdir(parents=True, exist_ok=True)
            with open(job.root / "run.log", "a") as log:
                proc = subprocess.Popen(list(job.command), stdout=log, stderr=subprocess.STDOUT, env=env)
            print(f"[{tag}] start {job.name}", flush=True)
            running.append((job, proc, time.perf_counter()))
        time.sleep(poll_s)
        for item in list(running):
            job, proc, start = item
            if proc.poll() is None:
                continue
            running.remove(item)
            if proc.returncode != 0:
                log_path = job.root / "run.log"
                tail = log_path.read_text(errors="replace")[-2000:]
                raise SystemExit(f"{job.name} failed (exit code {proc.returncode}); log {log_path}:\n{tail}")
            job.on_done(time.perf_counter() - start)
