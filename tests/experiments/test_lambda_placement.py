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
from pathlib import Path

import pytest

from dast_components.networks import random_arch, save_arch
from dast_components.networks.memory import filter_nums, op_saved_elements
from dast_components.search.sweep import depth_counts
from experiments import lambda_placement as lp


def _fake_run(root: Path, seeds_per_interval: list[int], iterations: int = 30) -> None:
    """A bundle root whose search decoded ``random_arch(seed=s)`` at intervals 10, 20, ... and the last one at the
    end, as the search bundle writes them."""
    models = root / "models"
    for i, s in enumerate(seeds_per_interval):
        save_arch(models / f"arch_code_iter{10 * (i + 1):06d}.json", random_arch(3, 3, seed=s))
    save_arch(models / "arch_code.json", random_arch(3, 3, seed=seeds_per_interval[-1]), val_dice=0.5,
              iteration=iterations)


def test_last_change_is_the_last_interval_whose_decode_differs():
    a, b = random_arch(3, 3, seed=0), random_arch(3, 3, seed=1)
    assert lp._path_ops(a) != lp._path_ops(b)
    assert lp.last_change([(10, a), (20, b), (30, b), (40, b)]) == 20
    assert lp.last_change([(10, a), (20, b), (30, a)]) == 30
    assert lp.last_change([(10, a), (20, a)]) is None
    assert lp.last_change([(10, a)]) is None


def test_record_reads_the_bundle_root(tmp_path):
    _fake_run(tmp_path, [0, 1, 1])
    rec = lp.make_record(tmp_path, 0.5, 2, 30, 12.34)
    final = random_arch(3, 3, seed=1)
    assert rec["lambda"] == 0.5 and rec["seed"] == 2 and rec["seconds"] == 12.3
    assert rec["decode_intervals"] == [10, 20, 30] and rec["last_change_iteration"] == 20
    assert rec["transformers_by_depth"] == depth_counts(final)
    assert rec["transformers"] == final.op_counts()["transformer"] == sum(rec["transformers_by_depth"])
    assert rec["est_memory_gib"] > 0 and rec["val_dice"] == 0.5
    json.dumps(rec)  # a record is plain JSON


def test_aggregate_gives_mean_and_sd_over_seeds():
    recs = [{"lambda": 0.2, "seed": s, "iterations": 60, "est_memory_gib": m, "transformers": t,
             "transformers_by_depth": d, "active_paths": 10, "last_change_iteration": c}
            for s, m, t, d, c in [(0, 1.0, 3, [1, 2], 40), (1, 3.0, 5, [3, 2], None)]]
    recs.append({**recs[0], "lambda": 0.8, "seed": 0})
    rows = lp.aggregate(recs)
    assert [r["lambda"] for r in rows] == [0.2, 0.8]
    low = rows[0]
    assert low["est_memory_gib_mean"] == 2.0 and low["est_memory_gib_sd"] == pytest.approx(2 ** 0.5)
    assert low["transformers_by_depth_mean"] == [2, 2] and low["transformers_by_depth_sd"][1] == 0
    assert low["last_change_iterations"] == [40, None] and rows[1]["est_memory_gib_sd"] == 0.0


def test_search_command_sets_the_experiment_settings(tmp_path):
    cmd = lp.search_command(tmp_path / "root", tmp_path / "data", 0.2, 1, 60, "cpu", False, ["--num_workers", "0"])
    text = " ".join(cmd)
    assert "--memory_lambda 0.2" in text and "--seed 1" in text and "--num_iterations 60" in text
    assert "--num_blocks 12" in text and "--grid 8" in text and "--train_patch_size [160, 160, 160]" in text
    # booleans as Python literals: the bundle CLI reads the string "false" as true
    assert "--tensorboard False" in text and "--resume False" in text
    assert cmd[-2:] == ["--num_workers", "0"]


def test_memory_term_prices_transformers_cheap_at_high_resolution_and_dear_at_low():
    """The relation the docs' mechanism rests on: where the experiment's memory term prices ops (width 1.0 at
    160^3), a transformer keeps less for backward than the 3x3x3 conv it would replace at the two highest
    resolutions and more at the two lowest, by a factor that grows with depth; so a tighter budget (lower lambda)
    removes low-resolution transformers first, against the paper's Fig. 3."""
    channels = filter_nums(lp.SETTINGS["arch_channel_mul"], lp.SETTINGS["num_depths"])
    size = lp.SETTINGS["train_patch_size"][0]
    ratios = []
    for d in range(lp.SETTINGS["num_depths"]):
        c, edge = channels[d + 1], size // 2 ** (d + 1)
        tr = op_saved_elements("transformer", c, [edge] * 3, {"grid": lp.SETTINGS["grid"]})
        ratios.append(tr / op_saved_elements("conv_3x3x3", c, [edge] * 3))
    assert ratios[0] < ratios[1] < 1 < ratios[2] < ratios[3]


def test_report_only_aggregates_existing_records_and_resumes_nothing(tmp_path):
    out = tmp_path / "out"
    for lam, seeds in ((0.2, [0, 1]), (0.8, [2, 2])):
        root = tmp_path / f"run{lam}"
        _fake_run(root, seeds)
        rec = lp.make_record(root, lam, 0, 30, 1.0)
        (out / "records").mkdir(parents=True, exist_ok=True)
        (out / "records" / f"{lp.run_name(lam, 0)}.json").write_text(json.dumps(rec))
    pytest.importorskip("matplotlib")
    payload = lp.main(["--out", str(out), "--lambdas", "0.2", "0.8", "--seeds", "0", "--report_only"])
    assert [r["lambda"] for r in payload["per_lambda"]] == [0.2, 0.8]
    md = (out / "lambda_placement.md").read_text()
    assert "| 0.2 | 1 |" in md and "| 0.8 | 1 |" in md and "transformer / conv" in md
    assert (out / "lambda_placement.png").stat().st_size > 0
    assert not (out / "work" / "runs").exists()


def test_bad_iterations_are_refused(tmp_path):
    with pytest.raises(SystemExit, match="warm-up"):
        lp.main(["--out", str(tmp_path), "--iterations", "10"])


@pytest.mark.slow
def test_tiny_end_to_end_run_and_resume(tmp_path):
    """Two tiny searches through the bundle CLI; a second call finds both records and searches nothing."""
    args = ["--out", str(tmp_path), "--lambdas", "0.2", "0.8", "--seeds", "0", "--iterations", "22", "--jobs", "2",
            "--", "--num_blocks", "2", "--num_depths", "2", "--grid", "2", "--val_interval", "11"]
    first = lp.main(args)
    assert len(first["records"]) == 2
    assert all(r["decode_intervals"] == [11, 22] for r in first["records"])
    stamp = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "records").iterdir()}
    second = lp.main(args)
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "records").iterdir()} == stamp
    assert second["per_lambda"] == first["per_lambda"]
