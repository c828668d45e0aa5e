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
"""A training process killed (SIGKILL) while it saves a new best ``model.pt`` never loses the previous weights.

The child process runs an ignite engine whose every epoch is a new best, saved by the bundle's
``dast_components.training.AtomicCheckpointSaver`` exactly as ``train.json`` configures it (``save_key_metric`` with a
fixed ``key_metric_filename``), with a 32 MB state so that a save takes a while. The parent kills it at moments spread
over the duration of a save, again and again, and after every kill the file must load with ``weights_only=True`` and
hold one complete save (the weights and the record written together) no older than the last save reported done.
A temporary file left beside it after a kill shows that the kill landed in the middle of a write.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.bad_inputs.helpers import REPO

__all__: list[str] = []

_CHILD = r"""
import sys
import torch
from ignite.engine import Engine, Events
from dast_components import training

save_dir, start, epochs, saver_name = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
if saver_name == "monai":
    from monai.handlers import CheckpointSaver as Saver
else:
    Saver = training.AtomicCheckpointSaver


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(8_000_000))


net, record = Net(), training.CheckpointRecord(version=start)
engine = Engine(lambda e, b: None)


@engine.on(Events.EPOCH_COMPLETED)
def new_best(e):
    version = start + e.state.epoch
    with torch.no_grad():
        net.w.fill_(version)
    record.values["version"] = version
    e.state.metrics["score"] = version
    print(f"saving {version}", flush=True)


Saver(save_dir, {"model": net, "bundle": record}, save_key_metric=True, key_metric_name="score",
      key_metric_filename="model.pt").attach(engine)
engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: print(f"saved {start + e.state.epoch}", flush=True))
engine.run([0], max_epochs=epochs)
"""


def _start(script: Path, folder: Path, start: int, epochs: int, saver: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen([sys.executable, str(script), str(folder), str(start), str(epochs), saver], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def _read(proc: subprocess.Popen, prefix: str) -> int:
    for line in proc.stdout:
        if line.startswith(prefix):
            return int(line.split()[1])
    raise AssertionError(f"the child ended (status {proc.wait()}) before printing {prefix!r}")


def _check(path: Path, done: int) -> int:
    state = torch.load(path, map_location="cpu", weights_only=True)
    version = int(state["bundle"]["version"])
    assert version >= done, f"model.pt holds save {version}, older than the last finished save {done}"
    assert torch.all(state["model"]["w"] == version), "weights and record come from different saves"
    return version


def kill_during_saves(folder: Path, script: Path, kills: int, saver: str = "atomic") -> int:
    """Kill a saving child ``kills`` times at spread moments; returns how many kills left a temporary file."""
    mid_write, start = 0, 0
    for k in range(kills):
        proc = _start(script, folder, start, 10_000, saver)
        try:
            done = _read(proc, "saved")  # one complete save of this process
            began = time.monotonic()
            _read(proc, "saving")
            _read(proc, "saved")
            duration = time.monotonic() - began  # one save, roughly
            _read(proc, "saving")
            time.sleep(duration * (k + 0.5) / kills)  # a different moment of the save each time
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
        mid_write += bool(list(folder.glob(".model.pt.*")))
        start = _check(folder / "model.pt", done + 1) + 1000
    return mid_write


@pytest.mark.slow
def test_sigkill_during_checkpoint_save_keeps_the_previous_file(tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    folder = tmp_path / "models"
    mid_write = kill_during_saves(folder, script, kills=6)
    assert mid_write >= 2, f"only {mid_write} of 6 kills landed during a write"
    proc = _start(script, folder, 10**6, 2, "atomic")  # a clean run: no temporary file left, old ones swept
    assert proc.wait(timeout=120) == 0
    assert sorted(p.name for p in folder.iterdir()) == ["model.pt"]
    assert _check(folder / "model.pt", 10**6 + 2) == 10**6 + 2


def test_saver_leaves_no_temporary_file_and_removes_old_files_after_saving(tmp_path: Path) -> None:
    from ignite.engine import Engine, Events

    from dast_components.training import AtomicCheckpointSaver, AtomicDiskSaver, handlers_for_rank

    net = torch.nn.Linear(2, 2)
    engine = Engine(lambda e, b: None)

    @engine.on(Events.EPOCH_COMPLETED)
    def score(e: Engine) -> None:
        e.state.metrics["score"] = e.state.epoch

    fixed = AtomicCheckpointSaver(str(tmp_path / "fixed"), {"model": net}, save_key_metric=True,
                                  key_metric_name="score", key_metric_filename="model.pt")
    kept = AtomicCheckpointSaver(str(tmp_path / "kept"), {"model": net}, save_key_metric=True,
                                 key_metric_name="score", key_metric_n_saved=2)
    fixed.attach(engine)
    kept.attach(engine)
    engine.run([0], max_epochs=4)
    assert sorted(p.name for p in (tmp_path / "fixed").iterdir()) == ["model.pt"]
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == ["model_key_metric=3.pt", "model_key_metric=4.pt"]
    assert handlers_for_rank([fixed], rank=1) == [] and handlers_for_rank([fixed], rank=0) == [fixed]

    saver = AtomicDiskSaver(tmp_path / "order")
    saver({"w": torch.ones(1)}, "a.pt")
    saver.remove("a.pt")  # ignite asks first ...
    assert (tmp_path / "order" / "a.pt").is_file()  # ... but the old file stays until its successor is saved
    saver({"w": torch.ones(2)}, "b.pt")
    assert sorted(p.name for p in (tmp_path / "order").iterdir()) == ["b.pt"]
