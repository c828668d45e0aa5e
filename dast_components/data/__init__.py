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
"""Data preparation: synthetic phantoms, datalists and splits, foreground intensity statistics, input checks.

The bundles call the preparers from their configs, e.g.
``"$dast_components.data.prepare_search_data(@dataset_dir, cache_dir=@output_dir)"``.

Names are imported from their modules on first access, so that ``python -m dast_components.data.<module>`` does not
import the module twice (runpy warns when a package ``__init__`` has already imported the module it runs).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "DataError",
    "as_window",
    "check_batch_size",
    "check_device",
    "check_image_file",
    "check_intensity_window",
    "check_writable_dir",
    "fold_split",
    "foreground_percentiles",
    "kfold_split",
    "kits19_items",
    "load_dataset_items",
    "make_phantom",
    "msd_items",
    "prepare_kits19_data",
    "prepare_search_data",
    "prepare_search_datalist",
    "read_datalist_file",
    "search_split",
    "warn_uncovered_classes",
    "write_dataset",
]

_MODULE_OF = {
    "DataError": "checks",
    "as_window": "intensity",
    "check_batch_size": "datalist",
    "check_device": "checks",
    "check_image_file": "checks",
    "check_intensity_window": "checks",
    "check_writable_dir": "checks",
    "fold_split": "datalist",
    "foreground_percentiles": "intensity",
    "kfold_split": "datalist",
    "kits19_items": "items",
    "load_dataset_items": "items",
    "make_phantom": "synthetic",
    "msd_items": "items",
    "prepare_kits19_data": "datalist",
    "prepare_search_data": "datalist",
    "prepare_search_datalist": "datalist",
    "read_datalist_file": "datalist",
    "search_split": "datalist",
    "warn_uncovered_classes": "intensity",
    "write_dataset": "synthetic",
}


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
