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
"""Loaded by Python at start-up when this folder is on ``PYTHONPATH`` (test MONAI Label server processes only).

Registers the torchvision placeholder of ``monailabel_driver.ensure_torchvision`` (see its docstring) when no working
torchvision is installed, so that ``monailabel start_server`` can import ``monailabel.transform.post`` in the CPU
test environment. Never put this folder on the path of a real installation.
"""

from __future__ import annotations

import sys
from pathlib import Path

__all__: list[str] = []

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from monailabel_driver import ensure_torchvision  # noqa: E402

ensure_torchvision()
sys.path.pop(0)
