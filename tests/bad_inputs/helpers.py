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
"""Builders of small bad inputs and the assertions every bad-input test makes.

Every case asserts three things:

- the run stops on an :class:`~dast_components.errors.InputError` (in-process: found in the chain of the exception
  the bundle workflow raised; as a command: exit status 1 and the last line ``error: <message>``), so the process
  reports it as one line (``dast_components.errors``);
- the message names the file, key or value (the words each test expects);
- nothing was written: no weights, logs, predictions, architecture files (:func:`written`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch

from dast_components.errors import InputError, find_input_error
from dast_components.networks import DASTNet
from tests.bundles.kits19_utils import REPO, config_path, write_kits19, write_tiny_arch

__all__ = [
    "REPO",
    "assert_input_error",
    "assert_one_line",
    "config_path",
    "copy_dataset",
    "edit_image",
    "run_command",
    "search_config_path",
    "write_kits19",
    "write_tiny_arch",
    "write_weights",
    "written",
]

#: files a failed run may leave: the dataset caches written next to the data (split, intensity)
_CACHES = ("dast_search_split.json", "dast_kits19_folds.json")


def search_config_path(name: str) -> str:
    """Absolute path of ``bundles/dast_search/configs/<name>.json``."""
    return str(REPO / "bundles" / "dast_search" / "configs" / f"{name}.json")


def copy_dataset(source: Path, dest: Path) -> Path:
    """A private copy of a shared synthetic dataset (tests change files in it)."""
    return Path(shutil.copytree(source, dest))


def edit_image(path: Path, change: Any) -> None:
    """Rewrite a NIfTI image with ``change(array) -> array`` (float32), keeping its affine."""
    image = nib.load(str(path))
    data = np.asarray(image.dataobj).astype(np.float32)
    nib.save(nib.Nifti1Image(change(data), image.affine), str(path))


def write_weights(path: Path, arch_file: Path) -> Path:
    """A plain state dict of the quick-config network of ``arch_file`` (random weights)."""
    net = DASTNet(arch=str(arch_file), in_channels=1, num_classes=3, channel_mul=None, ops="dast", grid=None)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return path


def written(root: Path) -> list[str]:
    """Files under ``root`` (relative paths), ignoring the dataset caches a run may make next to the data."""
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name not in _CACHES
                  and not p.name.startswith("dast_intensity_"))


def assert_input_error(run: Any, *words: str) -> str:
    """Call ``run()``; it must raise with an InputError in the chain whose message holds ``words``; returns it."""
    with pytest.raises(Exception) as info:
        run()
    found = find_input_error(info.value)
    assert isinstance(found, InputError), f"not reported as an input error: {info.value!r}"
    message = str(found)
    assert "\n" not in message.strip(), message
    for word in words:
        assert word in message, f"{word!r} not in: {message}"
    return message


def run_command(args: Sequence[str], timeout: float = 300, env: dict[str, str] | None = None,
                module: str = "monai.bundle") -> subprocess.CompletedProcess:
    """``python -m MODULE ARGS`` (``python ARGS`` when ``module`` is empty) from the repository root, stdout and
    stderr merged (in output order); ``DAST_TRACEBACK`` is unset unless ``env`` sets it."""
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO),
                **(env or {})}
    if "DAST_TRACEBACK" not in (env or {}):
        full_env.pop("DAST_TRACEBACK", None)
    command = [sys.executable, "-m", module, *args] if module else [sys.executable, *args]
    return subprocess.run(command, cwd=REPO, env=full_env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout, check=False)


def assert_one_line(proc: subprocess.CompletedProcess, *words: str, max_lines_before: int = 1) -> str:
    """Exit status 1, last line ``error: <message>`` holding ``words``, no traceback before it; returns the line."""
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert proc.returncode == 1, f"exit status {proc.returncode}:\n" + "\n".join(lines[-30:])
    last = lines[-1]
    assert last.startswith("error: "), "\n".join(lines[-30:])
    for word in words:
        assert word in last, f"{word!r} not in the last line: {last}"
    assert "Traceback" not in proc.stdout, "\n".join(lines[-40:])
    before = lines[-1 - max_lines_before:-1]
    assert all(line.startswith(("dast_components: stopped", "20")) for line in before), before
    return last
