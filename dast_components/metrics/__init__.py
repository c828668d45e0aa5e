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
"""Segmentation metrics: the KiTS19 challenge score and its report writer."""

from __future__ import annotations

from dast_components.metrics.kits19 import (
    KITS19_CLASSES,
    KiTS19Metric,
    dice_score,
    kits19_case_dice,
    kits19_case_dice_tensor,
    summarize_kits19,
)
from dast_components.metrics.report import KiTS19ReportHandler, case_name, format_kits19_table, write_kits19_report

__all__ = [
    "KITS19_CLASSES",
    "KiTS19Metric",
    "KiTS19ReportHandler",
    "case_name",
    "dice_score",
    "format_kits19_table",
    "kits19_case_dice",
    "kits19_case_dice_tensor",
    "summarize_kits19",
    "write_kits19_report",
]
