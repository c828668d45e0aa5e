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
"""Fast tests of experiments.dast_vs_dints: curve area, paired comparison, resume, outputs, hard phantoms."""

from __future__ import annotations

import json
import types
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from experiments import common
from experiments import dast_vs_dints as dv


def _log(dice: list[float]) -> list[dict]:
    return [{"epoch": str(i + 1), "iteration": str(10 * (i + 1)), "train_loss": str(1.0 - 0.1 * i),
             "val_composite_dice": str(d)} for i, d in enumerate(dice)]


def _records() -> list[dict]:
    return [
        {"ops": "dast", "seed": 0, "log": _log([0.1, 0.3, 0.2])},
        {"ops": "dast", "seed": 1, "log": _log([0.1, 0.5, 0.4])},
        {"ops": "dints", "seed": 0, "log": _log([0.2, 0.2, 0.1])},
        {"ops": "dints", "seed": 1, "log": _log([0.0, 0.1, 0.2])},
    ]


def test_curve_area_is_mean_height():
    assert dv.curve_area([0, 10], [0.2, 0.4]) == pytest.approx(0.3)
    assert dv.curve_area([0, 10, 30], [0.0, 1.0, 1.0]) == pytest.approx((5 + 20) / 30)
    assert dv.curve_area([5], [0.5]) is None


def test_aggregate_and_paired():
    agg = dv.aggregate(_records())
    assert agg["per_ops"]["dast"]["final"]["mean"] == pytest.approx(0.3)
    assert agg["per_ops"]["dast"]["best"]["mean"] == pytest.approx(0.4)
    assert agg["paired"]["seeds"] == [0, 1]
    assert agg["paired"]["final"]["differences"] == pytest.approx([0.1, 0.2])
    assert agg["paired"]["final"]["mean"] == pytest.approx(0.15)
    table = dv.format_table(agg)
    assert "| dast | 2 | 0.3000 ± 0.1414 |" in table and "DAST - DiNTS" in table


def test_train_command_rejects_unknown_ids():
    cmd = dv.train_command(Path("r"), {"seed": 1, "num_iterations": 5})
    assert cmd[cmd.index("--seed") + 1] == "1"
    with pytest.raises(ValueError, match="bogus"):
        dv.train_command(Path("r"), {"bogus": 1})


def test_resume_from_records_writes_outputs(tmp_path, monkeypatch):
    out = tmp_path / "res"
    for ops in dv.OPS:
        common.write_json(out / "records" / f"search_{ops}.json", {"ops": ops, "arch": {}})
    for r in _records():
        common.write_json(out / "records" / f"train_{r['ops']}_seed{r['seed']}.json", r)
    for name in ("data_msd", "data_kits19"):
        (out / "work" / name).mkdir(parents=True)
        (out / "work" / name / ".experiment_phantoms_done").write_text("")

    def fail(*a, **k):
        raise AssertionError("a completed run was started again")

    monkeypatch.setattr(dv, "subprocess", types.SimpleNamespace(run=fail))
    pytest.importorskip("matplotlib")
    agg = dv.main(["--out", str(out), "--seeds", "0", "1"])
    assert agg["paired"]["seeds"] == [0, 1]
    data = json.loads((out / "results.json").read_text())
    assert data["environment"]["loadavg_1_5_15"] is not None and len(data["runs"]) == 4
    assert (out / "curves.png").stat().st_size > 1000


def test_hard_phantoms_lower_tumor_contrast(tmp_path):
    plain = dv.write_hard_phantoms(tmp_path / "a", "kits19", 1, noise_sd=0.0, tumor_contrast=1.0, shape=(32, 32, 24))
    hard = dv.write_hard_phantoms(tmp_path / "b", "kits19", 1, noise_sd=0.0, tumor_contrast=0.0, shape=(32, 32, 24))

    def gap(root: Path) -> float:
        img = np.asarray(nib.load(str(root / "case_00000" / "imaging.nii.gz")).dataobj, dtype=float)
        lab = np.asarray(nib.load(str(root / "case_00000" / "segmentation.nii.gz")).dataobj)
        return abs(img[lab == 2].mean() - img[lab == 1].mean())

    assert gap(hard) < 1.0 < gap(plain)
