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
"""Shared fixtures of the data tests: tiny synthetic datasets in both layouts, written under tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest

from dast_components.data.synthetic import write_dataset
from tests.data.utils import SMALL_SHAPE

__all__ = ["kits_dir", "msd_dir"]


@pytest.fixture
def msd_dir(tmp_path: Path) -> Path:
    """An MSD-layout dataset of 6 tiny phantoms."""
    return write_dataset(tmp_path / "msd", layout="msd", num_cases=6, seed=1, shape=SMALL_SHAPE)


@pytest.fixture
def kits_dir(tmp_path: Path) -> Path:
    """A KiTS19-layout dataset of 5 tiny phantoms."""
    return write_dataset(tmp_path / "kits19", layout="kits19", num_cases=5, seed=2, shape=SMALL_SHAPE)
