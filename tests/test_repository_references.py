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
"""Code and docs cite only files inside the repository: the design decisions are in docs/design.md."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# written in two parts so that this file does not match itself
FORBIDDEN = ("../" + "shared", "DESIGN" + ".md")
SUFFIXES = (".py", ".md", ".json")


def _repository_files() -> list[Path]:
    try:
        out = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the repository's file list is unknown")
    return [ROOT / name for name in out.splitlines() if name.endswith(SUFFIXES) and (ROOT / name).is_file()]


def test_no_references_outside_the_repository():
    files = _repository_files()
    assert any(f.name == "design.md" for f in files)
    found = []
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        found += [f"{path.relative_to(ROOT)}: {word}" for word in FORBIDDEN if word in text]
    assert not found, "cite docs/design.md (in the repository) instead:\n" + "\n".join(found)


def test_design_sections_cited_exist():
    """Every section of docs/design.md a module cites (docs/design.md, then the section title in quotes) exists."""
    sections = set(re.findall(r"^## (.+)$", (ROOT / "docs" / "design.md").read_text(encoding="utf-8"), re.M))
    cited = {}
    for path in _repository_files():
        if path.suffix == ".py":
            text = " ".join(path.read_text(encoding="utf-8", errors="replace").split())
            for name in re.findall(r'docs/design\.md, "([^"]+)"', text):
                cited.setdefault(name, path.relative_to(ROOT))
    assert cited, "no citation of docs/design.md found"
    unknown = {name: str(path) for name, path in cited.items() if name not in sections}
    assert not unknown, f"cited sections missing from docs/design.md {sorted(sections)}: {unknown}"
