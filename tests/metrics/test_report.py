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
"""KiTS19 report files and the evaluator handler that writes them."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from ignite.engine import Engine
from monai.data import MetaTensor

from dast_components.metrics import KiTS19ReportHandler, case_name, format_kits19_table, write_kits19_report

__all__: list[str] = []


def test_case_name() -> None:
    assert case_name("/data/kits19/case_00042/imaging.nii.gz") == "case_00042"
    assert case_name("/data/kits19/case_00042/segmentation.nii.gz") == "case_00042"
    assert case_name("/preds/prediction_00007.nii.gz") == "prediction_00007"
    assert case_name("/data/imagesTr/pancreas_001.nii") == "pancreas_001"


def test_write_report(tmp_path) -> None:
    cases = [{"case": "case_00001", "kidney": 0.5, "tumor": 0.25}, {"case": "case_00000", "kidney": 1.0, "tumor": 0.75}]
    csv_path, json_path = write_kits19_report(cases, tmp_path / "eval")
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    assert [r["case"] for r in rows] == ["case_00000", "case_00001"]
    assert float(rows[1]["kidney_dice"]) == 0.5 and float(rows[1]["tumor_dice"]) == 0.25
    summary = json.loads(json_path.read_text())
    assert summary["kidney"] == pytest.approx(0.75)
    assert summary["tumor"] == pytest.approx(0.5)
    assert summary["composite"] == pytest.approx(0.625)
    assert summary["num_cases"] == 2
    assert "composite" in format_kits19_table(cases)
    assert not [p for p in (tmp_path / "eval").iterdir() if p.name.endswith(".tmp")]
    with pytest.raises(ValueError, match="lacks keys"):
        write_kits19_report([{"case": "x", "kidney": 1.0}], tmp_path)


def test_handler_on_engine(tmp_path) -> None:
    label = torch.zeros(1, 4, 4, 4)
    label[0, :2] = 1
    label[0, 0] = 2  # kidney+tumor 32 voxels, tumor 16
    pred = torch.zeros_like(label)
    pred[0, :2] = 1  # kidney perfect, tumor missed
    def item(p: torch.Tensor, case: str) -> list[dict]:
        ref = MetaTensor(label, meta={"filename_or_obj": f"/d/{case}/segmentation.nii.gz"})
        return [{"pred": MetaTensor(p), "label": ref}]

    batches = [item(label.clone(), "case_00000"), item(pred, "case_00001")]
    engine = Engine(lambda e, batch: batch)
    handler = KiTS19ReportHandler(tmp_path, prefix="val")
    handler.attach(engine)
    engine.run(batches, max_epochs=1)
    summary = json.loads((tmp_path / "val_summary.json").read_text())
    assert summary["kidney"] == pytest.approx(1.0)
    assert summary["tumor"] == pytest.approx(0.5)
    assert summary["num_cases"] == 2
    rows = list(csv.DictReader(open(tmp_path / "val_per_case.csv")))
    assert [(r["case"], float(r["tumor_dice"])) for r in rows] == [("case_00000", 1.0), ("case_00001", 0.0)]
