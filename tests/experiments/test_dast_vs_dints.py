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
from __future__ import annotations

import json

import pytest

from experiments import dast_vs_dints as dvd


def test_curve_summary_final_best_and_normalised_area():
    s = dvd.curve_summary([10, 20, 40], [0.2, 0.6, 0.4])
    assert s["final_dice"] == 0.4 and s["best_dice"] == 0.6
    # trapezoids: 10 * 0.4 + 20 * 0.5 = 14 over 30 iterations
    assert s["auc_dice"] == pytest.approx(14 / 30)
    assert dvd.curve_summary([5], [0.3])["auc_dice"] == 0.3
    with pytest.raises(ValueError):
        dvd.curve_summary([], [])


def test_compare_pairs_the_seeds_both_pools_have():
    def rec(pool, seed, d):
        return {"pool": pool, "seed": seed, "final_dice": d, "best_dice": d + 0.1, "auc_dice": d / 2}

    out = dvd.compare([rec("dast", 0, 0.5), rec("dints", 0, 0.3), rec("dast", 1, 0.7), rec("dints", 1, 0.6),
                       rec("dast", 2, 0.9)])
    assert out["paired"]["seeds"] == [0, 1]
    assert out["paired"]["final_dice"]["per_seed"] == pytest.approx([0.2, 0.1])
    assert out["paired"]["final_dice"]["mean"] == pytest.approx(0.15)
    assert out["per_pool"]["dast"]["final_dice"]["mean"] == pytest.approx(0.7)
    assert out["per_pool"]["dints"]["seeds"] == [0, 1]


def test_training_log_keeps_only_validated_epochs_for_dice(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("epoch,iteration,train_loss,learning_rate,val_composite_dice\n1,4,1.5,0.1,\n2,8,1.2,0.1,0.25\n"
                    "3,12,1.0,0.1,\n4,16,0.9,0.1,0.5\n")
    log = dvd.read_training_log(path)
    assert log["iteration"] == [4, 8, 12, 16] and log["train_loss"] == [1.5, 1.2, 1.0, 0.9]
    assert log["val_iteration"] == [8, 16] and log["val_dice"] == [0.25, 0.5]
    (tmp_path / "bad.csv").write_text("epoch,iteration,train_loss\n1,4,1.5\n")
    with pytest.raises(SystemExit, match="val_composite_dice"):
        dvd.read_training_log(tmp_path / "bad.csv")


def test_commands_use_one_budget_and_one_schedule(tmp_path):
    a = " ".join(dvd.search_command(tmp_path, tmp_path, "dast", 24.0, 80, "cpu", False))
    b = " ".join(dvd.search_command(tmp_path, tmp_path, "dints", 24.0, 80, "cpu", False))
    assert a.replace("--ops dast", "--ops dints") == b
    assert "--memory_budget_gib 24.0" in a and "--train_patch_size [160, 160, 160]" in a
    t = " ".join(dvd.train_command(tmp_path / "r", tmp_path / "d", tmp_path / "arch.json", "dints", 2, 800, 50,
                                        "cpu"))
    assert "--seed 2" in t and "--num_iterations 800" in t and "--val_interval 50" in t
    assert "--channel_mul 0.125" in t and "--ops dints" in t


def test_bad_schedule_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="val_interval"):
        dvd.main(["--out", str(tmp_path), "--train_iterations", "10", "--val_interval", "20"])


@pytest.mark.slow
def test_tiny_end_to_end_run_and_resume(tmp_path):
    """Both searches and both retrainings of one seed through the bundle CLIs, then a second call that finds every
    record and runs nothing."""
    args = ["--out", str(tmp_path), "--seeds", "0", "--search_iterations", "6", "--train_iterations", "8",
            "--val_interval", "4", "--jobs", "2",
            "--search_args", "--num_blocks 2 --num_depths 2 --grid 2 --warmup_iterations 3 --val_interval 3",
            "--train_args", "--grid 2"]
    first = dvd.main(args)
    assert set(first["searches"]) == {"dast", "dints"}
    assert first["comparison"]["paired"]["seeds"] == [0]
    runs = {r["pool"]: r for r in first["runs"]}
    assert set(runs) == {"dast", "dints"} and all(0 <= r["final_dice"] <= 1 for r in runs.values())
    stamp = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "records").iterdir()}
    second = dvd.main(args)
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "records").iterdir()} == stamp
    assert json.dumps(second["comparison"]) == json.dumps(first["comparison"])
    assert (tmp_path / "dast_vs_dints.png").stat().st_size > 0
