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
"""Small CT-like abdominal phantoms with kidney/tumor labels, written in the MSD or the KiTS19 layout.

Real CT cannot be downloaded here, so every workflow can run end to end on these instead.
A phantom is an axial body cross-section extruded along the slices: air (-1000 HU), subcutaneous fat (-100 HU),
soft tissue (~40 HU), a spine posterior (cancellous ~400 HU inside a cortical ~900 HU shell, discs ~90 HU),
two kidneys left and right of the spine (~150 HU, label 1) and a tumor (80-120 HU, label 2) inside or at the edge
of at least one kidney, plus Gaussian noise. Sizes, positions and intensities are jittered per seed; geometry is
defined in fractions of the field of view so any grid of at least 16 voxels per axis holds every structure.

Examples::

    image, label = make_phantom(shape=(64, 64, 48), spacing=(0.8, 0.8, 2.5), seed=0)
    write_dataset("/tmp/phantom_msd", layout="msd", num_cases=8)
    # python -m dast_components.data.synthetic --layout kits19 --num_cases 8 --out /tmp/phantom_kits19
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from dast_components.data.checks import KITS19_IMAGE, KITS19_LABEL, write_json_atomic
from dast_components.errors import InputError
from dast_components.utils import atomic_path

__all__ = ["LABEL_NAMES", "kits19_affine", "make_phantom", "msd_affine", "to_kits19_array", "write_dataset"]

logger = logging.getLogger(__name__)

LABEL_NAMES = {"0": "background", "1": "kidney", "2": "tumor"}
_MIN_SIZE = 16
_AIR, _FAT, _SOFT, _DISC, _CANCELLOUS, _CORTICAL = -1000.0, -100.0, 40.0, 90.0, 400.0, 900.0


def make_phantom(
    shape: Sequence[int] = (64, 64, 48), spacing: Sequence[float] = (0.8, 0.8, 2.5), seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Make one CT-like phantom and its label.

    Array axes follow RAS voxel order: axis 0 runs to the patient's right, axis 1 to anterior, axis 2 to superior
    (:func:`msd_affine` is the matching affine). ``spacing`` only sets the disc period along the slices; structure
    sizes are fractions of the field of view.

    Args:
        shape: grid size ``(H, W, D)``, each >= 16. Defaults to ``(64, 64, 48)``.
        spacing: voxel size in mm ``(sx, sy, sz)``. Defaults to ``(0.8, 0.8, 2.5)``.
        seed: seed of the size/position/intensity jitter and of the noise. Defaults to 0.

    Returns:
        ``(image, label)``: image float32 in HU of shape ``shape``; label uint8 of shape ``shape`` with values
        0 background, 1 kidney, 2 tumor (both kidneys and at least one tumor are always present).
    """
    shape = _check_triple(shape, "shape", int)
    spacing = _check_triple(spacing, "spacing", float)
    if min(shape) < _MIN_SIZE:
        raise InputError(f"shape must be >= {_MIN_SIZE} voxels per axis to hold kidneys and a tumor, got {shape}.")
    if min(spacing) <= 0:
        raise InputError(f"spacing must be positive (mm), got {spacing}.")
    rng = np.random.default_rng(seed)
    # normalised voxel-centre coordinates in [-0.5, 0.5] per axis, broadcastable to `shape`
    x, y, z = np.meshgrid(*[(np.arange(n) + 0.5) / n - 0.5 for n in shape], indexing="ij", sparse=True)
    min_radius = [2.0 / n for n in shape]  # two voxels, so small grids still show every structure

    image = np.full(shape, _AIR, dtype=np.float32)
    label = np.zeros(shape, dtype=np.uint8)

    # body: elliptic cross-section, slightly narrower towards the ends of the slab
    cx, cy = rng.uniform(-0.02, 0.02, size=2)
    rx, ry = rng.uniform(0.40, 0.46), rng.uniform(0.30, 0.36)
    taper = 1.0 - 0.08 * (2 * z) ** 2
    body = ((x - cx) / (rx * taper)) ** 2 + ((y - cy) / (ry * taper)) ** 2 <= 1.0
    fat = rng.uniform(0.03, 0.05)
    inner = ((x - cx) / (rx * taper - fat)) ** 2 + ((y - cy) / (ry * taper - fat)) ** 2 <= 1.0
    image[body] = _FAT
    image[inner] = _SOFT + rng.uniform(-10, 10)

    # kidneys: left and right of the spine, at slightly different heights
    spine_x, spine_y = cx + rng.uniform(-0.01, 0.01), cy - 0.5 * ry
    kidneys = []
    for side in (1.0, -1.0):
        centre = (spine_x + side * rng.uniform(0.19, 0.24), spine_y + rng.uniform(0.05, 0.09), rng.uniform(-0.08, 0.08))
        radii = (rng.uniform(0.06, 0.08), rng.uniform(0.08, 0.10), rng.uniform(0.25, 0.32))
        radii = tuple(max(r, m) for r, m in zip(radii, min_radius))
        kidneys.append((centre, radii))
        mask = _ellipsoid(x, y, z, centre, radii)
        image[mask] = rng.uniform(140, 170)
        label[mask] = 1

    # tumor in one kidney (chosen at random), and with probability 0.5 in the other too
    first = int(rng.integers(2))
    for k in (first, 1 - first):
        if k != first and rng.random() < 0.5:
            continue
        (kx, ky, kz), kr = kidneys[k]
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        offset = rng.uniform(0.3, 0.9) * direction * np.asarray(kr)  # inside the kidney up to near its edge
        centre = (kx + offset[0], ky + offset[1], kz + offset[2])
        radii = tuple(max(rng.uniform(0.4, 0.7) * r, m) for r, m in zip(kr, min_radius))
        mask = _ellipsoid(x, y, z, centre, radii) & inner
        image[mask] = rng.uniform(80, 120)
        label[mask] = 2

    # spine: vertebral body plus posterior element; bone overrides everything, discs between vertebral bodies
    radius = max(rng.uniform(0.05, 0.065), min_radius[0])
    centred = (x - spine_x) ** 2 + (y - spine_y) ** 2
    posterior = ((x - spine_x) / (0.4 * radius)) ** 2 + ((y - spine_y + 1.3 * radius) / (0.5 * radius)) ** 2 <= 1.0
    period_mm = rng.uniform(25.0, 32.0)
    slice_mm = (np.arange(shape[2]) * spacing[2]).reshape(1, 1, -1) + rng.uniform(0, period_mm)
    disc = np.mod(slice_mm, period_mm) < 0.18 * period_mm
    vertebra = np.broadcast_to((centred <= radius**2) | posterior, shape) & inner
    image[vertebra] = _CORTICAL + rng.uniform(-100, 100)
    image[vertebra & (centred <= (0.7 * radius) ** 2)] = _CANCELLOUS + rng.uniform(-50, 50)
    image[vertebra & (centred <= radius**2) & disc] = _DISC
    label[vertebra] = 0

    image += rng.normal(0.0, rng.uniform(8.0, 20.0), size=shape).astype(np.float32)
    np.clip(image, -1024.0, 3071.0, out=image)
    return image, label


def msd_affine(shape: Sequence[int], spacing: Sequence[float]) -> np.ndarray:
    """RAS affine of a :func:`make_phantom` array: diagonal ``spacing``, volume centred on the world origin.

    Args:
        shape: array shape ``(H, W, D)``.
        spacing: voxel size in mm.

    Returns:
        a 4x4 affine whose nibabel axis codes are ``('R', 'A', 'S')``.
    """
    affine = np.diag([*map(float, spacing), 1.0])
    affine[:3, 3] = -0.5 * (np.asarray(shape, dtype=float) - 1) * np.asarray(spacing, dtype=float)
    return affine


def to_kits19_array(array: np.ndarray) -> np.ndarray:
    """Reorder a RAS-ordered ``(x, y, z)`` array into KiTS19 storage order ``(slices, H, W)`` = axis codes I, P, L."""
    return np.ascontiguousarray(array[::-1, ::-1, ::-1].transpose(2, 1, 0))


def kits19_affine(shape: Sequence[int], spacing: Sequence[float]) -> np.ndarray:
    """KiTS19-style affine for :func:`to_kits19_array` of an array with RAS ``shape`` and ``spacing``.

    Like the real KiTS19 files the matrix is permuted with a negative diagonal (array axes point to inferior,
    posterior, left). The translation is chosen so that the volume occupies the same world positions as with
    :func:`msd_affine`, so reorienting to RAS gives back the original array.

    Args:
        shape: RAS array shape ``(H, W, D)`` before reordering.
        spacing: RAS voxel size ``(sx, sy, sz)`` in mm.

    Returns:
        a 4x4 affine whose nibabel axis codes are ``('I', 'P', 'L')``.
    """
    ras = msd_affine(shape, spacing)
    sx, sy, sz = map(float, spacing)
    affine = np.zeros((4, 4))
    affine[0, 2], affine[1, 1], affine[2, 0], affine[3, 3] = -sx, -sy, -sz, 1.0
    affine[:3, 3] = ras[:3, 3] + (np.asarray(shape, dtype=float) - 1) * np.asarray([sx, sy, sz])
    return affine


def write_dataset(
    out_dir: str | os.PathLike,
    layout: str = "msd",
    num_cases: int = 8,
    seed: int = 0,
    shape: Sequence[int] = (64, 64, 48),
    spacing: Sequence[float] | None = None,
) -> Path:
    """Write ``num_cases`` phantoms as a dataset in the MSD or the KiTS19 layout.

    ``msd``: ``imagesTr/case_XXX.nii.gz``, ``labelsTr/case_XXX.nii.gz`` and a ``dataset.json`` (name, modality,
    labels, numTraining, training with ``./``-relative paths), RAS affines. ``kits19``:
    ``case_XXXXX/imaging.nii.gz`` and ``segmentation.nii.gz`` stored KiTS19-style (array axes (slices, H, W), axis
    codes ('I', 'P', 'L')). Images are int16 HU, labels uint8. Case ``i`` depends only on ``seed`` and ``i``, so a
    larger ``num_cases`` adds cases without changing the first ones. Existing files of the same names are replaced.

    Args:
        out_dir: dataset folder to create or fill.
        layout: ``"msd"`` or ``"kits19"``. Defaults to ``"msd"``.
        num_cases: number of cases, >= 1. Defaults to 8.
        seed: dataset seed. Defaults to 0.
        shape: RAS grid size of each phantom ``(H, W, D)``. Defaults to ``(64, 64, 48)`` (about 0.35 MB per case).
        spacing: voxel size in mm for every case; ``None`` (default) draws per case 0.7-1.0 mm in-plane and
            1.5-3.0 mm between slices.

    Returns:
        ``out_dir`` as a ``Path``.
    """
    if layout not in ("msd", "kits19"):
        raise InputError(f"layout must be 'msd' or 'kits19', got {layout!r}.")
    if int(num_cases) < 1:
        raise InputError(f"num_cases must be >= 1, got {num_cases}.")
    out_dir = Path(out_dir)
    case_seeds = np.random.default_rng(seed).integers(0, 2**31 - 1, size=int(num_cases))
    training = []
    for index, case_seed in enumerate(case_seeds):
        case_rng = np.random.default_rng(int(case_seed))
        if spacing is None:
            in_plane = round(float(case_rng.uniform(0.7, 1.0)), 3)
            case_spacing = (in_plane, in_plane, round(float(case_rng.uniform(1.5, 3.0)), 2))
        else:
            case_spacing = _check_triple(spacing, "spacing", float)
        image, label = make_phantom(shape, case_spacing, seed=int(case_rng.integers(2**31 - 1)))
        image = np.round(image).astype(np.int16)
        if layout == "msd":
            affine = msd_affine(image.shape, case_spacing)
            name = f"case_{index:03d}.nii.gz"
            _save_nifti(image, affine, out_dir / "imagesTr" / name)
            _save_nifti(label, affine, out_dir / "labelsTr" / name)
            training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
        else:
            affine = kits19_affine(image.shape, case_spacing)
            case_dir = out_dir / f"case_{index:05d}"
            _save_nifti(to_kits19_array(image), affine, case_dir / KITS19_IMAGE)
            _save_nifti(to_kits19_array(label), affine, case_dir / KITS19_LABEL)
    if layout == "msd":
        write_json_atomic(
            out_dir / "dataset.json",
            {
                "name": "DASTPhantom",
                "description": "Synthetic CT-like abdominal phantoms with kidney and tumor labels (dast_components)",
                "reference": "generated by dast_components.data.synthetic",
                "licence": "Apache-2.0",
                "tensorImageSize": "3D",
                "modality": {"0": "CT"},
                "labels": dict(LABEL_NAMES),
                "numTraining": len(training),
                "numTest": 0,
                "training": training,
                "test": [],
            },
        )
    logger.info("wrote %d %s phantom cases of shape %s to %s", len(case_seeds), layout, tuple(shape), out_dir)
    return out_dir


def _ellipsoid(
    x: np.ndarray, y: np.ndarray, z: np.ndarray, centre: Sequence[float], radii: Sequence[float]
) -> np.ndarray:
    return sum(((c - m) / r) ** 2 for c, m, r in zip((x, y, z), centre, radii)) <= 1.0


def _check_triple(values: Sequence, name: str, kind: type) -> tuple:
    values = tuple(values)
    if len(values) != 3:
        raise InputError(f"{name} must have 3 values (H, W, D), got {values}.")
    return tuple(kind(v) for v in values)


def _save_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = nib.Nifti1Image(array, affine)
    image.header.set_xyzt_units("mm", "sec")
    with atomic_path(path) as tmp:
        nib.save(image, tmp)


def _parse_shape(text: str) -> tuple[int, int, int]:
    values = json.loads(text) if text.strip().startswith("[") else [v for v in text.split(",") if v.strip()]
    return _check_triple(values, "--shape", int)


def main(argv: Sequence[str] | None = None) -> Path:
    """Command line: ``python -m dast_components.data.synthetic --layout msd|kits19 --num_cases N --out DIR``."""
    parser = argparse.ArgumentParser(
        prog="python -m dast_components.data.synthetic",
        description="Write synthetic CT-like kidney/tumor phantoms as an MSD or KiTS19 dataset.",
    )
    parser.add_argument("--out", required=True, help="[REQUIRED] dataset folder; same-named files in it are replaced")
    parser.add_argument("--layout", choices=("msd", "kits19"), default="msd", help="[OPTIONAL] folder layout (msd)")
    parser.add_argument("--num_cases", type=int, default=8, help="[OPTIONAL] number of cases (8)")
    parser.add_argument("--seed", type=int, default=0, help="[OPTIONAL] dataset seed (0)")
    parser.add_argument(
        "--shape", type=_parse_shape, default=(64, 64, 48), help='[OPTIONAL] phantom grid "[H,W,D]" ([64,64,48])'
    )
    args = parser.parse_args(argv)
    out = write_dataset(args.out, layout=args.layout, num_cases=args.num_cases, seed=args.seed, shape=args.shape)
    files = sorted(p for p in out.rglob("*") if p.is_file() and not p.name.startswith("."))
    size_mb = sum(p.stat().st_size for p in files) / 2**20
    print(f"wrote {args.num_cases} {args.layout} cases ({len(files)} files, {size_mb:.1f} MB) to {out}")
    return out


def cli(argv: Sequence[str] | None = None) -> int:
    """Console script ``dast-synthetic``: :func:`main`, exit status 0 (an input error exits 1 with its message)."""
    main(argv)
    return 0


if __name__ == "__main__":
    main()
