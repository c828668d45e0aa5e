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
"""Helpers of the lambda sweep command (the searches themselves run in tests/bundles)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from dast_components.networks import ArchCode, estimate_memory
from dast_components.search.sweep import depth_counts, final_memory_ratio, format_table, main, search_command, summarise

__all__: list[str] = []


def _arch() -> ArchCode:
    # 2 blocks x 2 depths; MONAI's path order is (in -> out depth) 0 -> 0, 1 -> 0, 0 -> 1, 1 -> 1.
    # Block 1 has transformers on paths 0, 1 (ending at depth 0) and 3 (ending at depth 1).
    return ArchCode(
        ops=("skip_connect", "conv_3x3x3", "transformer"),
        node_a=[[1, 1], [1, 1], [1, 1]],
        arch_code_a=[[1, 0, 0, 1], [1, 1, 1, 1]],
        arch_code_c=[[1, 0, 0, 0], [2, 2, 0, 2]],
        num_blocks=2, num_depths=2, channel_mul=0.125, grid=2,
        provenance={"train_patch_size": [16, 16, 16], "train_batch_size": 2, "val_dice": 0.5},
    )


def test_depth_counts_by_output_resolution():
    arch = _arch()
    assert depth_counts(arch) == [2, 1]
    assert depth_counts(arch, "conv_3x3x3") == [1, 0]
    assert depth_counts(arch, "conv_1x3x3") == [0, 0]


def test_summary_row_and_table(tmp_path):
    (tmp_path / "metrics.csv").write_text("iteration,memory_ratio\n1,0.3\n2,0.41\n")
    assert final_memory_ratio(tmp_path) == pytest.approx(0.41)
    assert final_memory_ratio(tmp_path / "none") is None
    row = summarise(_arch(), 0.5, 12.0, 0.41)
    assert row["transformers"] == 3 and row["paths"] == 6
    assert row["memory_gib"] == pytest.approx(estimate_memory(_arch(), [16, 16, 16], 2) / 1024**3)
    table = format_table([row])
    assert "| 0.5 | 0.410 |" in table and "[2, 1]" in table and table.count("\n") == 2


def test_command_passes_lambda_and_overrides():
    cmd = search_command(Path("/b"), ["search", "quick.json"], Path("/o/l"), "/d", 0.2, ["--num_iterations", "40"])
    assert cmd[:5] == [sys.executable, "-m", "monai.bundle", "run", "search"]
    assert "['/b/configs/search.json','/b/configs/quick.json']" in cmd
    assert cmd[-4:] == ["--memory_lambda", "0.2", "--num_iterations", "40"]


def test_bad_bundle_folder(tmp_path):
    with pytest.raises(SystemExit, match="no configs"):
        main([str(tmp_path), "--out", str(tmp_path / "o"), "--bundle", str(tmp_path)])


def test_cost_by_depth_transformer_cheaper_than_conv_at_high_resolution_only():
    """The cost relation the memory term acts on (paper setting: 12 x 4 grid, width 1.0, grid 8, 160^3): a
    transformer keeps one output-sized tensor plus a token part that does not grow with the feature map, a 3x3x3 conv
    keeps two output-sized tensors. So the transformer is the cheaper op at the highest resolution and by far the
    costlier one at the lowest, and the ratio grows monotonically with depth."""
    from dast_components.networks import random_arch
    from dast_components.search.sweep import cost_by_depth, format_cost_table

    arch = random_arch(12, 4, "dast", seed=0, channel_mul=1.0, grid=8)
    rows = cost_by_depth(arch, [160, 160, 160])
    ratios = [r["ratio"] for r in rows]
    assert ratios[0] < 1.0 < ratios[-1]
    assert ratios == sorted(ratios)
    assert [r["size"] for r in rows] == [[80] * 3, [40] * 3, [20] * 3, [10] * 3]
    assert "transformer / conv" in format_cost_table(rows)
