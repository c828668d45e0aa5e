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
"""DAST networks: the transformer op, the search space, the searched network, architecture files, memory model."""

from __future__ import annotations

from dast_components.networks.arch_io import ArchCode, check_topology, load_arch, save_arch
from dast_components.networks.cells import OP_POOLS, MixedOp, SearchCell, build_op, make_cell, resolve_ops
from dast_components.networks.costs import saved_tensor_bytes
from dast_components.networks.memory import estimate_memory, max_patch_size
from dast_components.networks.nets import DASTNet
from dast_components.networks.search_space import DASTInstance, DASTSearchSpace, random_arch
from dast_components.networks.transformer import TransformerOp3D

__all__ = [
    "ArchCode",
    "DASTInstance",
    "DASTNet",
    "DASTSearchSpace",
    "MixedOp",
    "OP_POOLS",
    "SearchCell",
    "TransformerOp3D",
    "build_op",
    "check_topology",
    "estimate_memory",
    "load_arch",
    "make_cell",
    "max_patch_size",
    "random_arch",
    "resolve_ops",
    "save_arch",
    "saved_tensor_bytes",
]
