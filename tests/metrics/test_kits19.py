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
"""The KiTS19 metric on volumes whose Dice values are known by construction."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dast_components.metrics import KiTS19Metric, kits19_case_dice, kits19_case_dice_tensor, summarize_kits19

__all__: list[str] = []

SHAPE = (4, 5, 6)


def _volume(kidney: slice, tumor: slice | None) -> np.ndarray:
    """A (4, 5, 6) label map whose flattened voxels ``kidney`` are 1 and ``tumor`` are 2."""
    flat = np.zeros(int(np.prod(SHAPE)), dtype=np.uint8)
    flat[kidney] = 1
    if tumor is not None:
        flat[tumor] = 2
    return flat.reshape(SHAPE)


# reference: kidney+tumor = voxels 0..13 (14), tumor = 10..13 (4)
LABEL = _volume(slice(0, 10), slice(10, 14))
# prediction: kidney+tumor = 2..15 (14), overlap 2..13 = 12 -> 24/28; tumor = 12..15, overlap 12..13 = 2 -> 4/8
PRED = _volume(slice(2, 12), slice(12, 16))
KIDNEY, TUMOR = 24 / 28, 4 / 8


def test_known_dice() -> None:
    scores = kits19_case_dice(PRED, LABEL)
    assert scores["kidney"] == pytest.approx(KIDNEY, abs=1e-12)
    assert scores["tumor"] == pytest.approx(TUMOR, abs=1e-12)
    assert kits19_case_dice(LABEL, LABEL) == {"kidney": 1.0, "tumor": 1.0}


def test_kidney_counts_tumor_voxels() -> None:
    # predicting the whole foreground as kidney is a perfect kidney score and a zero tumor score
    all_kidney = (LABEL > 0).astype(np.uint8)
    scores = kits19_case_dice(all_kidney, LABEL)
    assert scores == {"kidney": 1.0, "tumor": 0.0}


def test_empty_cases() -> None:
    no_tumor = _volume(slice(0, 10), None)
    assert kits19_case_dice(no_tumor, no_tumor)["tumor"] == 1.0
    assert math.isnan(kits19_case_dice(no_tumor, no_tumor, empty_score=float("nan"))["tumor"])
    # one side empty is a miss, whatever the convention
    assert kits19_case_dice(no_tumor, LABEL, empty_score=float("nan"))["tumor"] == 0.0
    assert kits19_case_dice(LABEL, no_tumor)["tumor"] == 0.0


def test_summary_means_over_cases_and_skips_nan() -> None:
    cases = [{"kidney": KIDNEY, "tumor": TUMOR}, {"kidney": 1.0, "tumor": float("nan")}]
    s = summarize_kits19(cases)
    assert s["kidney"] == pytest.approx((KIDNEY + 1.0) / 2)
    assert s["tumor"] == pytest.approx(TUMOR)
    assert s["composite"] == pytest.approx(((KIDNEY + 1.0) / 2 + TUMOR) / 2)
    assert s["num_cases"] == 2
    with pytest.raises(ValueError, match="tumor"):
        summarize_kits19([{"kidney": 1.0}])


def test_tensor_layouts_agree() -> None:
    pred = torch.from_numpy(np.stack([PRED, LABEL]))[:, None]  # (2, 1, 4, 5, 6) label maps
    label = torch.from_numpy(np.stack([LABEL, LABEL]))[:, None]
    expected = torch.tensor([[KIDNEY, TUMOR], [1.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(kits19_case_dice_tensor(pred, label), expected)
    onehot = F.one_hot(pred[:, 0].long(), 3).permute(0, 4, 1, 2, 3).float()  # (2, 3, 4, 5, 6)
    torch.testing.assert_close(kits19_case_dice_tensor(onehot, label.float()), expected)


def test_cumulative_metric() -> None:
    pred = torch.from_numpy(PRED)[None, None]
    label = torch.from_numpy(LABEL)[None, None]
    results = {}
    for component in ("kidney", "tumor", "composite"):
        metric = KiTS19Metric(component)
        metric(y_pred=pred, y=label)
        metric(y_pred=label, y=label)
        results[component] = metric.aggregate().item()
    assert results["kidney"] == pytest.approx((KIDNEY + 1) / 2)
    assert results["tumor"] == pytest.approx((TUMOR + 1) / 2)
    assert results["composite"] == pytest.approx((results["kidney"] + results["tumor"]) / 2)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="same shape"):
        kits19_case_dice(PRED[:2], LABEL)
    with pytest.raises(ValueError, match="component"):
        KiTS19Metric("liver")
    with pytest.raises(ValueError, match="numpy array or a torch tensor"):
        kits19_case_dice(PRED.tolist(), LABEL)
