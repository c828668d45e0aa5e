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
"""
Side-by-side benchmarks of DAST, DiNTS and the 3D segmentation networks users would pick instead (issue 7).

Run from the repository root, e.g. ``python -m benchmarks.search_step --device cpu``; each script writes
``benchmarks/results/<name>_<device>.json`` and a markdown table next to it. See ``benchmarks/README.md``.
"""

from __future__ import annotations

__all__: list[str] = []
