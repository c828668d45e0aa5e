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
"""
The bi-level architecture search as a MONAI trainer.

- :mod:`.step`: one bi-level step (:class:`BiLevelStep`): a weight step, then an architecture step.
- :mod:`.trainer`: :class:`DASTSearchTrainer`, a ``monai.engines.Trainer`` whose ``_iteration`` is that step.
- :mod:`.handlers`: the search's own handlers (:class:`ArchitectureExport`, :class:`SearchProgress`).
- :mod:`.budget`: absolute memory budgets (GiB) and the budget-constrained decode.
- :mod:`.prepare`: the data split and the start-up settings check of the bundle.
- :mod:`.sweep`: a lambda sweep over several searches.
"""

from __future__ import annotations

from dast_components.search.budget import BudgetDecode, budget_to_lambda, decode_within_budget, export_arch
from dast_components.search.handlers import ArchitectureExport, SearchProgress, resume_from
from dast_components.search.prepare import check_search_settings, prepare_data
from dast_components.search.step import (
    BiLevelStep,
    arch_lr_factor,
    arch_parameters,
    entropy_terms,
    ramp_factor,
    weight_parameters,
)
from dast_components.search.trainer import DASTSearchTrainer, cycle

__all__ = [
    "ArchitectureExport",
    "BiLevelStep",
    "BudgetDecode",
    "DASTSearchTrainer",
    "SearchProgress",
    "arch_lr_factor",
    "arch_parameters",
    "budget_to_lambda",
    "check_search_settings",
    "cycle",
    "decode_within_budget",
    "entropy_terms",
    "export_arch",
    "prepare_data",
    "ramp_factor",
    "resume_from",
    "weight_parameters",
]
