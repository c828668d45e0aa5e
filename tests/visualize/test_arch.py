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

from dast_components.networks import random_arch, save_arch
from dast_components.visualize import draw_architecture, path_endpoints
from dast_components.visualize.__main__ import main


@pytest.mark.parametrize(
    "num_blocks,num_depths,ops,seed",
    [(3, 3, "dast", 0), (4, 2, "dast", 1), (5, 4, "dast", 2), (3, 3, "dints", 3), (2, 1, "dast", 4)],
)
def test_drawn_paths_match_file_counts(tmp_path, num_blocks, num_depths, ops, seed):
    arch = random_arch(num_blocks, num_depths, ops, seed=seed, channel_mul=0.125, grid=2)
    path = save_arch(tmp_path / "arch_code.json", arch)
    out = tmp_path / "sub" / "arch.png"
    counts = draw_architecture(path, out, dpi=50)
    expected = json.loads(path.read_text())["op_counts"]
    assert counts == expected
    assert sum(counts.values()) == sum(map(sum, arch.arch_code_a)) > 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.parent.glob(".*tmp*"))  # atomic write left no temporary file


def test_no_active_path_draws_no_arrow(tmp_path):
    arch = random_arch(3, 3, "dast", seed=5, grid=2)
    arch.arch_code_a = [[0] * len(row) for row in arch.arch_code_a]  # nothing active: nothing drawn
    assert draw_architecture(arch, tmp_path / "empty.png") == {op: 0 for op in arch.ops}


def test_path_endpoints_follow_monai_numbering():
    assert path_endpoints(3) == [(0, 0), (1, 0), (0, 1), (1, 1), (2, 1), (1, 2), (2, 2)]
    assert path_endpoints(1) == [(0, 0)]
    with pytest.raises(ValueError, match="num_depths"):
        path_endpoints(0)


def test_cli_with_memory_title(tmp_path, capsys):
    arch = random_arch(2, 2, "dast", seed=6, channel_mul=0.125, grid=2)
    path = save_arch(tmp_path / "arch_code.json", arch, **{"lambda": 0.5})
    out = tmp_path / "arch.png"
    argv = ["arch", "--arch_file", str(path), "--out", str(out), "--patch_size", "32", "--batch_size", "1"]
    counts = main(argv + ["--dpi", "50"])
    assert counts == arch.op_counts()
    assert out.is_file()
    assert "wrote" in capsys.readouterr().out


def test_bad_arguments(tmp_path):
    arch = random_arch(2, 2, "dast", seed=7, grid=2)
    with pytest.raises(ValueError, match="batch_size"):
        draw_architecture(arch, tmp_path / "a.png", batch_size=0)
    with pytest.raises(ValueError, match="patch_size"):
        draw_architecture(arch, tmp_path / "a.png", patch_size=(32, 32))
    with pytest.raises(FileNotFoundError):
        draw_architecture(tmp_path / "missing.json", tmp_path / "a.png")
