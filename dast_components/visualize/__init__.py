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
"""Pictures of a DAST search and its networks: architecture diagrams, attention maps, training curves.

- :func:`draw_architecture`: the searched grid, active paths coloured by op (paper Fig. 3).
- :func:`write_attention_maps`: segmentation-attention weights of every transformer op over a CT volume, as NIfTI
  and PNG panels (paper Fig. 4).
- :func:`draw_curves`: loss and validation Dice against iteration of one or more runs.

matplotlib is optional (``pip install 'dast_components[plot]'``); it is imported only when a picture is drawn.
Command line: ``python -m dast_components.visualize {arch,attention,curves} --help``.
"""

from __future__ import annotations

from dast_components.visualize.arch import OP_COLORS, draw_architecture, path_endpoints
from dast_components.visualize.attention import (
    capture_attention,
    find_intensity,
    foreground_attention,
    load_bundle_network,
    preprocess_image,
    transformer_ops,
    write_attention_maps,
)
from dast_components.visualize.curves import draw_curves, parse_run_spec, read_metrics

__all__ = [
    "OP_COLORS",
    "capture_attention",
    "draw_architecture",
    "draw_curves",
    "find_intensity",
    "foreground_attention",
    "load_bundle_network",
    "parse_run_spec",
    "path_endpoints",
    "preprocess_image",
    "read_metrics",
    "transformer_ops",
    "write_attention_maps",
]
