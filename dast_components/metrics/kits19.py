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
"""The KiTS19 challenge metric: per-case kidney and tumor Dice, averaged over cases.

KiTS19 labels are 0 background, 1 kidney, 2 tumor. The challenge scores each case with two Dice coefficients,

- **kidney** Dice on ``label > 0`` (kidney and tumor together), and
- **tumor** Dice on ``label == 2``,

reports the mean over cases of each, and ranks by their average (here called **composite**).

The official evaluator leaves the case where both prediction and reference are empty undefined (every KiTS19
test case has a tumor). We define it with ``empty_score``: ``1.0`` (the default) counts agreement on "nothing there"
as a perfect score, ``float("nan")`` drops such cases from that class's mean. When exactly one of the two masks is
empty the Dice is ``0.0``. (docs/design.md, "Data and metric".)

Reference: Heller et al., "The state of the art in kidney and kidney tumor segmentation in contrast-enhanced CT
imaging: results of the KiTS19 challenge", Med. Image Anal. 67 (2021), https://doi.org/10.1016/j.media.2020.101821
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.metrics import CumulativeIterationMetric

__all__ = [
    "KITS19_CLASSES",
    "KiTS19Metric",
    "dice_score",
    "kits19_case_dice",
    "kits19_case_dice_tensor",
    "summarize_kits19",
]

KITS19_CLASSES: tuple[str, str] = ("kidney", "tumor")
"""Order of the per-case scores returned by :func:`kits19_case_dice_tensor` and :class:`KiTS19Metric`."""

_TUMOR_LABEL = 2
_COMPONENTS = ("kidney", "tumor", "composite")


def _as_tensor(x: Any, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.as_tensor() if hasattr(x, "as_tensor") else x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    raise ValueError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}.")


def dice_score(pred: torch.Tensor, ref: torch.Tensor, empty_score: float = 1.0) -> torch.Tensor:
    """Dice coefficient of two boolean masks of the same shape, per leading batch item.

    Args:
        pred: predicted mask, ``(B, ...)`` boolean.
        ref: reference mask, ``(B, ...)`` boolean, same shape as ``pred``.
        empty_score: value returned where both masks are empty. Defaults to 1.0.

    Returns:
        ``(B,)`` float64 tensor of Dice values in [0, 1] (or ``empty_score``).
    """
    if pred.shape != ref.shape:
        raise ValueError(
            f"prediction and reference must have the same shape, got {tuple(pred.shape)} and {tuple(ref.shape)}."
        )
    b = pred.shape[0]
    pred, ref = pred.reshape(b, -1), ref.reshape(b, -1)
    inter = torch.count_nonzero(pred & ref, dim=1).double()
    total = (torch.count_nonzero(pred, dim=1) + torch.count_nonzero(ref, dim=1)).double()
    empty = torch.full_like(total, float(empty_score))
    return torch.where(total > 0, 2.0 * inter / total.clamp(min=1.0), empty)


def kits19_case_dice_tensor(pred: torch.Tensor, label: torch.Tensor, empty_score: float = 1.0) -> torch.Tensor:
    """Kidney and tumor Dice of each case in a batch of label maps.

    Args:
        pred: predicted label map ``(B, 1, H, W, D)`` with values 0, 1, 2, or class scores / one-hot ``(B, 3, H, W, D)``
            (reduced with argmax over the channel dimension).
        label: reference with the same layout rules as ``pred`` and the same spatial shape.
        empty_score: Dice used when prediction and reference are both empty for a class. Defaults to 1.0;
            ``float("nan")`` excludes such cases from the means.

    Returns:
        ``(B, 2)`` float64 tensor; column 0 kidney Dice (``label > 0``), column 1 tumor Dice (``label == 2``).
    """
    pred = _to_label_map(_as_tensor(pred, "pred"), "pred")
    label = _to_label_map(_as_tensor(label, "label"), "label").to(pred.device)
    if pred.shape != label.shape:
        raise ValueError(
            f"prediction and label must have the same shape, got {tuple(pred.shape)} and {tuple(label.shape)}; "
            "score predictions in the label's geometry (invert the preprocessing first)."
        )
    kidney = dice_score(pred > 0, label > 0, empty_score)
    tumor = dice_score(pred == _TUMOR_LABEL, label == _TUMOR_LABEL, empty_score)
    return torch.stack([kidney, tumor], dim=1)


def _to_label_map(x: torch.Tensor, name: str) -> torch.Tensor:
    """``(B, C, *spatial)`` scores or label map -> ``(B, *spatial)`` integer label map."""
    if x.ndim < 3:
        raise ValueError(f"{name} must be batch-first and channel-first (B, C, H, W[, D]), got shape {tuple(x.shape)}.")
    if x.shape[1] == 1:
        return x[:, 0].round().long() if x.is_floating_point() else x[:, 0].long()
    return x.argmax(dim=1)


def kits19_case_dice(pred: Any, label: Any, empty_score: float = 1.0) -> dict[str, float]:
    """Kidney and tumor Dice of one case.

    Args:
        pred: predicted label map (numpy array or tensor, any spatial layout) with values 0, 1, 2.
        label: reference label map with exactly the same shape.
        empty_score: Dice used when prediction and reference are both empty for a class. Defaults to 1.0.

    Returns:
        ``{"kidney": float, "tumor": float}``.

    Example::

        >>> import numpy as np
        >>> ref = np.zeros((4, 4, 4), dtype=np.uint8); ref[:2] = 1; ref[0] = 2
        >>> kits19_case_dice(ref, ref)
        {'kidney': 1.0, 'tumor': 1.0}
    """
    p, r = _as_tensor(pred, "pred"), _as_tensor(label, "label")
    if p.shape != r.shape:
        raise ValueError(f"prediction and label must have the same shape, got {tuple(p.shape)} and {tuple(r.shape)}.")
    scores = kits19_case_dice_tensor(p.reshape(1, 1, -1), r.reshape(1, 1, -1), empty_score)[0]
    return {name: float(v) for name, v in zip(KITS19_CLASSES, scores.tolist())}


def summarize_kits19(cases: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Mean over cases of the kidney and tumor Dice, and their average (the KiTS19 ranking score).

    NaN entries (cases excluded by ``empty_score=nan``) are left out of their class's mean.

    Args:
        cases: one mapping per case with keys ``"kidney"`` and ``"tumor"``.

    Returns:
        ``{"kidney": mean, "tumor": mean, "composite": (kidney + tumor) / 2, "num_cases": n}``; means are NaN
        when no case contributes.
    """
    summary: dict[str, float] = {}
    for name in KITS19_CLASSES:
        values = []
        for i, case in enumerate(cases):
            if name not in case:
                raise ValueError(f"case {i} has no '{name}' score; expected keys {KITS19_CLASSES}, got {sorted(case)}.")
            if not math.isnan(float(case[name])):
                values.append(float(case[name]))
        summary[name] = float(np.mean(values)) if values else float("nan")
    summary["composite"] = (summary["kidney"] + summary["tumor"]) / 2.0
    summary["num_cases"] = len(cases)
    return summary


class KiTS19Metric(CumulativeIterationMetric):
    """KiTS19 kidney / tumor / composite Dice as a MONAI cumulative metric (works with ``IgniteMetricHandler``).

    Each call adds one ``(kidney, tumor)`` row per case to the buffer (gathered across ranks under
    ``torch.distributed``); :meth:`aggregate` returns the requested component of :func:`summarize_kits19`.

    Args:
        component: ``"kidney"``, ``"tumor"`` or ``"composite"``: what :meth:`aggregate` returns. Defaults to
            ``"composite"``.
        empty_score: Dice used when prediction and reference are both empty for a class. Defaults to 1.0.

    Example::

        >>> metric = KiTS19Metric("tumor")
        >>> metric(y_pred=pred_label_map, y=label)  # (B, 1, H, W, D) each
        >>> metric.aggregate()
    """

    def __init__(self, component: str = "composite", empty_score: float = 1.0) -> None:
        super().__init__()
        if component not in _COMPONENTS:
            raise ValueError(f"component must be one of {_COMPONENTS}, got {component!r}.")
        self.component = component
        self.empty_score = float(empty_score)

    def _compute_tensor(  # type: ignore[override]
        self, y_pred: torch.Tensor, y: torch.Tensor | None = None
    ) -> torch.Tensor:
        if y is None:
            raise ValueError("KiTS19Metric needs the reference label y.")
        return kits19_case_dice_tensor(y_pred, y, self.empty_score)

    def aggregate(self) -> torch.Tensor:  # type: ignore[override]
        """Mean over all buffered cases of the configured component (a 0-dim float64 tensor)."""
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor) or data.numel() == 0:
            raise ValueError("KiTS19Metric has no cases to aggregate; call it on predictions first.")
        rows = [dict(zip(KITS19_CLASSES, row)) for row in data.reshape(-1, 2).tolist()]
        return torch.tensor(summarize_kits19(rows)[self.component], dtype=torch.float64)
