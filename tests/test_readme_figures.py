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
"""Every figure the README's results table quotes is in the results file that row cites.

A row of the table is ``| what | value | source |``. The source names one or more committed files (results written
by a benchmark or a search, e.g. ``benchmarks/results/search_step_cpu.md``, or the module that derives a model's
figure) or says "paper". Each number of the
value cell must appear in one of the cited files, at the precision the README prints it (``22.9`` matches
``22.868``; ``0.80x`` matches ``0.8``). The markdown results files are written by the same run as their JSON; the
test also regenerates them from the JSON where the benchmark module can, so a hand edit of either shows up.

Limits: a figure is looked up among all numbers of its file, not at its place in a table, so a wrong figure that
happens to equal another number of the same file passes; settings in the ``what`` column are not checked.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

__all__: list[str] = []

ROOT = Path(__file__).resolve().parents[1]
FILE_RE = re.compile(
    r"(?:benchmarks/results/[\w.]+\.(?:md|json)|experiments/results/[\w/.]+\.(?:md|json)|bundles/[\w/]+\.(?:md|json)"
    r"|dast_components/[\w/]+\.py)"
)
NUMBER_RE = re.compile(r"(?<![\w.])-?\d[\d,]*(?:\.\d+)?")


def _results_rows(readme: str) -> list[tuple[str, str, str]]:
    section = readme.split("\n## Results", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0] not in ("what", "---") and not set(cells[0]) <= {"-"}:
            rows.append((cells[0], cells[1], cells[2]))
    return rows


def _numbers(text: str) -> list[str]:
    return [n.replace(",", "") for n in NUMBER_RE.findall(text)]


def _decimals(number: str) -> int:
    return len(number.split(".")[1]) if "." in number else 0


def _matches(quoted: str, candidates: list[str]) -> bool:
    """``quoted`` is ``candidate`` rounded to the decimals the README prints; a candidate must carry at least those
    decimals (``1.000`` does not match a bare ``1``) and an integer quote matches only the same integer."""
    decimals = _decimals(quoted)
    target = float(quoted)
    for c in candidates:
        if decimals == 0:
            if _decimals(c) == 0 and float(c) == target:
                return True
        elif _decimals(c) >= decimals and round(float(c), decimals) == target:
            return True
    return False


def test_matching_is_strict_about_precision():
    assert _matches("21.0", ["21.0178"]) and _matches("7.85", ["7.8458"]) and _matches("5040", ["5040"])
    assert not _matches("1.000", ["1", "0.976"])
    assert not _matches("12", ["12.3"])
    assert not _matches("0.81", ["0.823"])


README_ROWS = _results_rows((ROOT / "README.md").read_text())


def test_the_results_table_is_found():
    assert len(README_ROWS) >= 5


@pytest.mark.parametrize("what, value, source", README_ROWS, ids=[r[0][:40] for r in README_ROWS])
def test_each_quoted_figure_is_in_its_results_file(what, value, source):
    files = FILE_RE.findall(source)
    if not files:
        assert "paper" in source.lower(), f"row {what!r} cites no results file and is not a paper figure: {source!r}"
        return
    candidates: list[str] = []
    for name in files:
        path = ROOT / name
        assert path.is_file(), f"row {what!r} cites {name}, which does not exist"
        candidates += _numbers(path.read_text())
    missing = [n for n in _numbers(value) if not _matches(n, candidates)]
    assert not missing, f"row {what!r}: {missing} not found in {files}"


@pytest.mark.parametrize("name", ["search_step", "memory_estimate", "cpu_runtimes"])
def test_markdown_results_are_the_json_results(name):
    """The committed markdown tables are what the benchmark writes from the committed JSON."""
    import importlib

    module = importlib.import_module(f"benchmarks.{name}")
    payload = json.loads((ROOT / "benchmarks" / "results" / f"{name}_cpu.json").read_text())
    md = (ROOT / "benchmarks" / "results" / f"{name}_cpu.md").read_text()
    if name in ("search_step", "cpu_runtimes"):
        body = module._markdown(payload)
    else:
        body = module._markdown(payload["architectures"], payload["summary"], payload["settings"])
    assert body.strip() in md
