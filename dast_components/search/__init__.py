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
"""The bi-level architecture search: one step (:mod:`.engine`), the loop (:mod:`.workflow`), memory budgets."""

from __future__ import annotations

from dast_components.search.budget import BudgetDecode, budget_to_lambda, decode_within_budget, export_arch
from dast_components.search.engine import (
    BiLevelSearchEngine,
    arch_parameters,
    entropy_terms,
    ramp_factor,
    weight_parameters,
)
from dast_components.search.workflow import SearchWorkflow, check_patch_size, check_search_settings, prepare_data

__all__ = [
    "BiLevelSearchEngine",
    "BudgetDecode",
    "SearchWorkflow",
    "arch_parameters",
    "budget_to_lambda",
    "check_patch_size",
    "check_search_settings",
    "decode_within_budget",
    "entropy_terms",
    "export_arch",
    "prepare_data",
    "ramp_factor",
    "weight_parameters",
]
