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
"""The console scripts of setup.cfg: each names a module with ``main(argv=None)``, and ``--help`` exits 0."""

from __future__ import annotations

import configparser
import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = {
    "dast-verify": "dast_components.verify",
    "dast-release": "dast_components.release",
    "dast-sweep": "dast_components.search.sweep",
    "dast-synthetic": "dast_components.data.synthetic",
    "dast-datalist": "dast_components.data.datalist",
    "dast-intensity": "dast_components.data.intensity",
    "dast-visualize": "dast_components.visualize.__main__",
}


def _entry_points() -> dict[str, str]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg", encoding="utf-8")
    lines = cfg.get("options.entry_points", "console_scripts").strip().splitlines()
    return dict((part.strip() for part in line.split("=", 1)) for line in lines if line.strip())


def test_setup_cfg_lists_the_scripts():
    points = _entry_points()
    assert {name: target.split(":")[0] for name, target in points.items()} == SCRIPTS


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_help_exits_zero(name, capsys):
    module_name, attr = _entry_points()[name].split(":")
    module = importlib.import_module(module_name)
    assert list(inspect.signature(module.main).parameters) == ["argv"]
    assert inspect.signature(module.main).parameters["argv"].default is None
    for fn in {module.main, getattr(module, attr)}:
        with pytest.raises(SystemExit) as exc:
            fn(["--help"])
        assert exc.value.code == 0
        assert "usage:" in capsys.readouterr().out


def test_script_exit_status_is_zero_on_success(tmp_path):
    """``cli`` returns 0 where ``main`` returns a result (a console script would exit with it)."""
    synthetic = importlib.import_module("dast_components.data.synthetic")
    assert synthetic.cli(["--out", str(tmp_path / "msd"), "--num_cases", "1", "--shape", "16,16,16"]) == 0
    assert (tmp_path / "msd" / "dataset.json").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_python_m_help(name):
    module = SCRIPTS[name].removesuffix(".__main__")
    proc = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "usage:" in proc.stdout
    assert "RuntimeWarning" not in proc.stderr  # runpy: the package __init__ must not import the module it runs
