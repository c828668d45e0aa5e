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
"""Fast tests of experiments.lambda_placement / experiments.common: aggregation, resume, outputs, cost relation."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from dast_components.networks.arch_io import ArchCode
from experiments import common
from experiments import lambda_placement as lp

ROOT = Path(__file__).resolve().parents[2]


def _arch(transformer_paths: int, ops_index: int = 2) -> ArchCode:
    """12 x 4 architecture: every path active, the first ``transformer_paths`` paths of block 0 transformers."""
    blocks, depths = 12, 4
    paths = 3 * depths - 2
    code_c = [[1] * paths for _ in range(blocks)]
    for p in range(transformer_paths):
        code_c[0][p] = ops_index
    return ArchCode(ops=("skip_connect", "conv_3x3x3", "transformer"), node_a=[[1] * depths] * (blocks + 1),
                    arch_code_a=[[1] * paths] * blocks, arch_code_c=code_c, num_blocks=blocks, num_depths=depths,
                    channel_mul=0.125)


def _record(lam: float, seed: int, memory: float, by_depth: list[int], arch: ArchCode | None = None) -> dict:
    return {"memory_lambda": lam, "seed": seed, "memory_gib": memory, "transformers_by_depth": by_depth,
            "active_paths": 120, "final_val_dice": 0.1, "iterations": 24, "last_change_iteration": 16,
            "arch": (arch or _arch(3)).to_dict(), "memory_patch": [160] * 3}


def test_depth_counts_by_output_level():
    # paths 0,1 -> output depth 0; path 2 -> output depth 1
    assert lp.depth_counts(_arch(3)) == [2, 1, 0, 0]
    assert sum(lp.depth_counts(_arch(0), "conv_3x3x3")) == 12 * 10


def test_last_change():
    assert lp.last_change([(4, "a"), (8, "a"), (12, "b"), (16, "b")]) == 12
    assert lp.last_change([(4, "a"), (8, "a")]) is None
    assert lp.last_change([(4, "a")]) is None


def test_mean_sd():
    s = common.mean_sd([1.0, 2.0, 3.0, None])
    assert s["n"] == 3 and s["mean"] == pytest.approx(2.0) and s["sd"] == pytest.approx(1.0)
    assert common.mean_sd([5.0])["sd"] is None
    assert common.mean_sd([])["mean"] is None


def test_aggregate_and_table():
    recs = [_record(0.2, 0, 10.0, [1, 2, 0, 0]), _record(0.2, 1, 12.0, [3, 2, 0, 0]),
            _record(0.8, 0, 40.0, [0, 0, 5, 1])]
    rows = lp.aggregate(recs)
    assert [r["memory_lambda"] for r in rows] == [0.2, 0.8]
    assert rows[0]["memory_gib"]["mean"] == pytest.approx(11.0)
    assert rows[0]["transformers_by_depth"][0]["mean"] == pytest.approx(2.0)
    assert rows[0]["seeds"] == [0, 1]
    table = lp.format_table(rows)
    assert "| 0.2 | 2 | 11.00 ± 1.41 |" in table and "| 0.8 | 1 | 40.00 |" in table


def test_search_command_rejects_unknown_ids():
    cmd = common.search_command(Path("r"), {"memory_lambda": 0.5, "patch_size": [32, 32, 32], "amp": False})
    assert cmd[cmd.index("--patch_size") + 1] == "[32, 32, 32]" and cmd[cmd.index("--amp") + 1] == "False"
    # why: the bundle CLI (fire) reads "False" as the boolean and keeps "false" as a non-empty, truthy string
    from fire.parser import DefaultParseValue

    assert DefaultParseValue("False") is False and DefaultParseValue("false") == "false"
    with pytest.raises(ValueError, match="not_an_id"):
        common.search_command(Path("r"), {"not_an_id": 1})


def test_search_finished(tmp_path):
    assert not common.search_finished(tmp_path, 4)
    (tmp_path / "eval").mkdir()
    (tmp_path / "models").mkdir()
    (tmp_path / "eval" / "metrics.csv").write_text("iteration,val_dice\n1,\n2,0.1\n")
    (tmp_path / "models" / "arch_code.json").write_text("{}")
    assert not common.search_finished(tmp_path, 4)
    assert common.search_finished(tmp_path, 2)


def test_resume_skips_completed_records_and_writes_outputs(tmp_path, monkeypatch):
    """Records present (e.g. committed under experiments/results) are runs done: no search is started."""
    out = tmp_path / "res"
    for lam in (0.2, 0.8):
        common.write_json(out / "records" / f"lambda{lam:g}_seed0.json", _record(lam, 0, 10 * lam, [1, 0, 0, 0]))
    (out / "work" / "data").mkdir(parents=True)
    (out / "work" / "data" / "dataset.json").write_text("{}")

    def fail(*a, **k):
        raise AssertionError("a completed run was started again")

    monkeypatch.setattr(lp, "subprocess", types.SimpleNamespace(run=fail))
    pytest.importorskip("matplotlib")
    rows = lp.main(["--out", str(out), "--lambdas", "0.2", "0.8", "--seeds", "0"])
    assert len(rows) == 2
    data = json.loads((out / "results.json").read_text())
    assert {"environment", "summary", "cost_by_depth", "runs"} <= set(data)
    assert data["environment"]["torch"]
    assert (out / "architectures.png").stat().st_size > 1000
    assert "lambda" in (out / "results.md").read_text()


def test_unreadable_record_is_redone(tmp_path):
    path = tmp_path / "r.json"
    path.write_text("{trunc")
    assert common.load_record(path) is None


def test_transformer_cost_relative_to_conv_falls_with_depth():
    """The relation the mechanism in experiments/README.md relies on: at the 160^3 patch the memory term is computed
    for, a transformer keeps less for backward than the 3x3x3 conv it replaces at the two highest resolutions and
    more at the two lowest, and its cost relative to the conv rises monotonically towards low resolution (at any
    channel_mul: both costs scale linearly with the channels)."""
    for channel_mul in (0.125, 0.5, 1.0):
        arch = _arch(0)
        arch.channel_mul = channel_mul
        ratios = [r["ratio"] for r in lp.cost_by_depth(arch, [160, 160, 160])]
        assert ratios[0] < ratios[1] < 1.0 < ratios[2] < ratios[3], ratios


def test_cli_help():
    proc = subprocess.run([sys.executable, "-m", "experiments.lambda_placement", "--help"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "--dataset_dir" in proc.stdout


def test_full_weight_from_reads_the_schedule():
    cmd = "python -m monai.bundle run search --num_iterations 64 --warmup_iterations 8 --ramp_iterations 24 --seed 0"
    assert lp.full_weight_from(cmd) == 33
    assert lp.full_weight_from(cmd.replace(" --ramp_iterations 24", "")) == 64
    assert lp.full_weight_from("python -m monai.bundle run search") is None


def test_decode_changes_counts_paths():
    a = ((0, 1, -1), (2, -1, 1))
    b = ((0, 2, -1), (2, 1, 1))  # one op changed, one path switched on
    history = [(8, a), (16, a), (24, b)]
    assert lp.decode_changes(history) == [{"iteration": 16, "paths_changed": 0}, {"iteration": 24, "paths_changed": 2}]
    assert lp.decode_changes(history[:1]) == []


def test_last_interval_changes_name_the_change_and_its_tie_gap():
    a = ((0, 1, -1), (2, -1, 1))
    b = ((0, 2, -1), (2, 1, 1))  # block 0 path 1 conv -> transformer, block 1 path 1 switched on
    ops = ("skip_connect", "conv_3x3x3", "transformer")
    logits = [[[0.0, 0.0, 0.0], [0.8650, 1.0700, 1.0704], [0.0, 0.0, 0.0]], [[0.0] * 3] * 3]
    changes = lp.last_interval_changes([(8, a), (16, a), (24, b)], logits, ops)
    assert [(c["block"], c["path"], c["kind"], c["from"], c["to"]) for c in changes] == [
        (0, 1, "op", "conv_3x3x3", "transformer"), (1, 1, "path on", None, "conv_3x3x3")]
    assert changes[0]["probability_gap"] == pytest.approx(0.0001, abs=0.00005)  # a near tie
    assert changes[1]["probability_gap"] is None
    assert lp.last_interval_changes([(8, a), (16, b), (24, b)], logits, ops) == []
    assert lp.last_interval_changes([(8, a), (16, b)])[0]["probability_gap"] is None  # no logits: no gap
    off = lp.last_interval_changes([(8, b), (16, a)], logits, ops)[1]  # block 1 path 1 switched off again
    assert (off["kind"], off["from"], off["to"]) == ("path off", "conv_3x3x3", None)
    assert "| 0.5 | 1 | 1 | 1 | path off (conv_3x3x3) | n/a |" in lp.format_last_changes(
        [{"memory_lambda": 0.5, "seed": 1, "last_interval_changes": [off]}])
    rec = {"memory_lambda": 0.5, "seed": 1, "last_interval_changes": changes}
    old = {"memory_lambda": 0.8, "seed": 0, "changes_by_interval": [{"iteration": 24, "paths_changed": 2}]}
    table = lp.format_last_changes([rec, old, {**old, "seed": 1, "last_interval_changes": []}])
    assert "| 0.5 | 1 | 0 | 1 | conv_3x3x3 -> transformer | 0.0001 |" in table
    assert "| 0.5 | 1 | 1 | 1 | path on (conv_3x3x3) | n/a |" in table
    assert "| 0.8 | 0 | n/a | n/a | 2 places | n/a |" in table  # an older record: only the count is known
    assert "(none" in lp.format_last_changes([{**old, "last_interval_changes": []}])


def test_full_weight_from_edge_cases():
    cmd = "run --num_iterations 64 --warmup_iterations 8 --ramp_iterations {}"
    assert lp.full_weight_from(cmd.format(0)) == 64  # 0: the CLI's "ramp to the last iteration"
    assert lp.full_weight_from(cmd.format(55)) == 64 and lp.full_weight_from(cmd.format(56)) is None


def test_ramp_that_cannot_finish_is_refused_at_the_command_line(capsys):
    with pytest.raises(SystemExit):
        lp.main(["--num_iterations", "2", "--warmup_iterations", "1", "--report_only"])
    assert "--ramp_iterations 24 must be in [1, 0]" in capsys.readouterr().err


def test_arch_lr_anneal_from_reads_the_schedule(capsys):
    cmd = "run --num_iterations 64 --warmup_iterations 8 --ramp_iterations 24 --arch_lr_anneal_iterations 32"
    assert lp.arch_lr_anneal_from(cmd) == 33
    assert lp.arch_lr_anneal_from(cmd.replace(" --arch_lr_anneal_iterations 32", "")) is None  # constant rate
    rows = [{"memory_lambda": 0.5, "seeds": [0], "memory_gib": {"mean": 1.0, "sd": None},
             "transformers_by_depth": [{"mean": 1.0, "sd": None}], "transformers": {"mean": 1.0, "sd": None},
             "active_paths": {"mean": 3.0, "sd": None}, "last_change_iteration": [40], "iterations": [64],
             "paths_changed_last": [0], "full_weight_from": [33], "arch_lr_anneal_from": [33]}]
    assert lp.format_table(rows).splitlines()[-1].endswith("| [33] | [33] |")
    rows[0]["arch_lr_anneal_from"] = [None]
    assert lp.format_table(rows).splitlines()[-1].endswith("| [33] | constant |")
    with pytest.raises(SystemExit):
        lp.main(["--num_iterations", "64", "--warmup_iterations", "8", "--arch_lr_anneal_iterations", "57",
                 "--report_only"])
    assert "--arch_lr_anneal_iterations 57 must be in [1, 56]" in capsys.readouterr().err
