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
"""A small, runnable copy of ``bundles/dast_kits19_seg`` for release and MONAI Label tests.

The copy keeps every file of the bundle, adds a random (untrained) ``models/model.pt`` of the bundle's
architecture at a small ``channel_mul`` in the format ``train.json`` writes (a plain state dict, and the intensity
window in ``models/model.json`` next to it), and an overlay ``tiny.json`` that sets the same ``channel_mul``. Used with
``configs/quick.json`` (32^3 patches, 1.5 mm) it runs on a CPU in seconds.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

__all__ = ["BUNDLE", "INTENSITY", "REPO", "TINY_CHANNEL_MUL", "make_tiny_kits19_bundle"]

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "dast_kits19_seg"
TINY_CHANNEL_MUL = 0.125
INTENSITY = {"lower": -100.0, "upper": 300.0}


def _ignore(folder: str, names: list[str]) -> set[str]:
    skipped = {n for n in names if n in ("eval", "__pycache__") or n.endswith((".pt", ".ts"))
               or n in ("model.json",) or (n.startswith("model_fold") and n.endswith(".json"))}
    return skipped


def make_tiny_kits19_bundle(parent: Path, seed: int = 0) -> tuple[Path, Path]:
    """Copy ``bundles/dast_kits19_seg`` to ``parent/dast_kits19_seg`` with small random weights.

    The architecture is the committed ``models/arch_code.json``; while a bundle has none yet (during development),
    a random topology-consistent architecture of the bundle's op pool stands in for it.

    Args:
        parent: folder to copy into (the copy keeps the bundle's folder name, which is the bundle name).
        seed: seed of the random weights.

    Returns:
        ``(bundle_copy, tiny_overlay)``: the copied bundle root and the path of ``tiny.json`` (next to the copy,
        outside it) setting ``channel_mul``.
    """
    dst = parent / BUNDLE.name
    shutil.copytree(BUNDLE, dst, ignore=_ignore)
    (dst / "models").mkdir(exist_ok=True)
    from dast_components.networks import DASTNet, random_arch, save_arch

    arch = dst / "models" / "arch_code.json"
    if not arch.is_file():
        ops = json.loads((BUNDLE / "configs" / "inference.json").read_text())["ops"]
        save_arch(arch, random_arch(num_blocks=3, num_depths=3, ops=ops, seed=seed, grid=2, num_heads=2))
    torch.manual_seed(seed)
    net = DASTNet(arch, in_channels=1, num_classes=3, channel_mul=TINY_CHANNEL_MUL)
    record = {"weights": "model.pt", "intensity": dict(INTENSITY), "pixdim": [1.5, 1.5, 1.5], "fold": 0,
              "arch": net.arch.to_dict()}
    torch.save(net.state_dict(), dst / "models" / "model.pt")
    (dst / "models" / "model.json").write_text(json.dumps(record, indent=4) + "\n")
    overlay = parent / "tiny.json"
    overlay.write_text(json.dumps({"channel_mul": TINY_CHANNEL_MUL}, indent=4) + "\n")
    return dst, overlay
