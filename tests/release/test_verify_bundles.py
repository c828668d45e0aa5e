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
"""``python -m dast_components.verify`` on the two shipped bundles, with their quick overlays (as CI runs it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dast_components.verify import verify_bundle
from tests.release.bundle_utils import REPO, make_tiny_kits19_bundle

__all__: list[str] = []


@pytest.mark.slow
def test_verify_kits19_bundle(tmp_path: Path) -> None:
    # a copy with weights, so that the TorchScript check goes through ckpt_export with models/model.pt
    bundle, tiny = make_tiny_kits19_bundle(tmp_path)
    results = verify_bundle(bundle, schema=REPO / "bundles" / "schemas" / "bundle_meta_schema.json",
                            overlays=[bundle / "configs" / "quick.json", tiny])
    assert [r.line() for r in results if r.status != "PASS"] == []
    by_name = {r.name: r for r in results}
    assert "kidney=1, tumor=2" in by_name["monailabel"].detail
    assert "ckpt_export (no key_in_ckpt) with model.pt" in by_name["torchscript"].detail


@pytest.mark.slow
def test_verify_search_bundle_cli() -> None:
    bundle = REPO / "bundles" / "dast_search"
    quick = bundle / "configs" / "quick.json"
    cmd = [sys.executable, "-m", "dast_components.verify", str(bundle), "--overlay", str(quick)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=REPO)
    lines = [line for line in proc.stdout.splitlines() if line.split(" ", 1)[0] in ("PASS", "FAIL", "SKIP")]
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert [line.split(":")[0] for line in lines] == [
        "PASS files", "PASS configs", "PASS metadata", "PASS changelog", "SKIP large_files", "SKIP monailabel",
        "PASS net_in_out", "PASS torchscript",
    ]
