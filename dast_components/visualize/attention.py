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
"""Segmentation-attention maps of a trained DAST network over a CT volume (paper Fig. 4).

Every transformer op of the network computes a segmentation attention ``A`` (query = one of the ``T`` decoder
tokens of its ``min(g, size)`` token grid, key = its input pooled to the ``min(16, size)`` key grid). For one volume
this module

1. preprocesses it as the KiTS19 bundle does: RAS orientation, resampling to 1 mm (or the spacing recorded with
   the weights), intensities scaled to [0, 1] by the training set's foreground percentiles (read from the training
   record next to the weights, ``models/model.json``, a bundle config or an intensity JSON; if none is found, the
   volume's min/max is used and a warning says so);
2. runs one forward pass with forward hooks that keep each transformer op's input, then asks the op for its
   attention weights on that input (:meth:`~dast_components.networks.TransformerOp3D.attention_maps`, averaged over
   heads, shape ``(T queries, k_h, k_w, k_d)``, 512 x 16^3 at the paper's setting);
3. averages over queries **inside the predicted foreground** (kidney or tumor): each query is weighted by the
   fraction of its token cell (the part of the op's field of view it stands for) that the network labels foreground,
   so fully-foreground tokens count 1, boundary tokens partially and background tokens not at all; if nothing is
   predicted, all queries count equally. This answers "where does the network look when it segments the organ";
4. resizes the ``(k_h, k_w, k_d)`` map trilinearly to the preprocessed volume and writes it as NIfTI (affine of the
   preprocessed image; values are attention weights, >= 0, a map sums to about 1 over the key grid) plus a PNG
   panel: CT slice | attention overlay | attention with the predicted mask contour, on the axial slice through the
   centre of the predicted mask (radiological view: patient right on the left, anterior at the top).

Field of view: with a window ``roi_size`` (by default the training patch recorded with the weights, e.g. 160^3,
when the volume is larger) the mask is first predicted with a sliding window, as the bundle's inference does, and
the attention is computed on one window centred on the mask: what the network saw in training; the maps are zero
outside it. When the volume fits in the window (or ``roi_size=None``), the whole padded volume is one forward pass
and each op's token and key grids span the whole volume.

Command line::

    python -m dast_components.visualize attention --bundle_root bundles/dast_kits19_seg --image case.nii.gz --out DIR
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dast_components.inference import read_record
from dast_components.networks.arch_io import ArchCode
from dast_components.networks.nets import DASTNet
from dast_components.networks.transformer import TransformerOp3D
from dast_components.utils import atomic_path
from dast_components.visualize._common import new_figure, save_figure
from dast_components.visualize.arch import path_endpoints

__all__ = [
    "capture_attention",
    "find_intensity",
    "foreground_attention",
    "load_bundle_network",
    "preprocess_image",
    "query_summary",
    "transformer_ops",
    "write_attention_maps",
]

logger = logging.getLogger(__name__)


def transformer_ops(net: nn.Module) -> dict[str, TransformerOp3D]:
    """The transformer ops of a DAST network, keyed by path (``"b03_p07"``: block 3, path 7), in block/path order.

    Args:
        net: a :class:`~dast_components.networks.DASTNet` (or any MONAI ``DiNTS`` whose ``dints_space.cell_tree``
            holds DAST cells).
    """
    cells = getattr(getattr(net, "dints_space", None), "cell_tree", None)
    if cells is None:
        raise ValueError(f"{type(net).__name__} has no dints_space.cell_tree; expected a DASTNet.")
    found = []
    for key, cell in cells.items():
        block, path = (int(v) for v in str(key).strip("()").split(","))
        for op in getattr(getattr(cell, "op", None), "ops", []):
            if isinstance(op, TransformerOp3D):
                found.append(((block, path), op))
    return {f"b{b:02d}_p{p:02d}": op for (b, p), op in sorted(found, key=lambda item: item[0])}


@torch.no_grad()
def capture_attention(net: nn.Module, image: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One forward pass that also returns the segmentation-attention weights of every transformer op.

    Forward hooks keep each op's input during the pass (nothing is stored on the modules); the weights are then
    computed from those inputs with ``op.attention_maps``.

    Args:
        net: a DAST network in eval mode.
        image: ``(B, C, H, W, D)`` input, each spatial size a multiple of the network's stride.

    Returns:
        ``(logits (B, num_classes, H, W, D), {path: (B, T, k_h, k_w, k_d) weights averaged over heads})``.
    """
    ops = transformer_ops(net)
    inputs: dict[str, torch.Tensor] = {}

    def keep(name: str, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        inputs[name] = args[0].detach()

    handles = [op.register_forward_hook(partial(keep, name)) for name, op in ops.items()]
    try:
        logits = net(image)
    finally:
        for handle in handles:
            handle.remove()
    missing = [name for name in ops if name not in inputs]
    if missing:
        raise RuntimeError(f"transformer op(s) {missing} did not run in the forward pass.")
    return logits, {name: ops[name].attention_maps(inputs[name]) for name in ops}


def query_summary(foreground_cells: float, num_queries: int) -> str:
    """The picture title's line saying which queries the map averages, in words a reader can take literally.

    Args:
        foreground_cells: second value of :func:`foreground_attention`: the sum over queries of the share of each
            query's token cell that is predicted foreground (the foreground volume in token cells, not a count).
        num_queries: number of query tokens.

    Returns:
        e.g. ``"mean over the 8 query tokens weighted by the share of each token's cell predicted kidney or tumor
        (the prediction fills 0.5 of the 8 cells)"``.
    """
    if foreground_cells <= 0:
        return f"no kidney or tumor predicted here: plain mean over all {num_queries} query tokens"
    return (f"mean over the {num_queries} query tokens weighted by the share of each token's cell predicted kidney "
            f"or tumor (the prediction fills {foreground_cells:.2g} of the {num_queries} cells)")


def foreground_attention(
    maps: torch.Tensor, foreground: torch.Tensor, token_grid: Sequence[int] | None = None
) -> tuple[torch.Tensor, float]:
    """Average attention maps over the queries inside a foreground mask.

    Query ``q`` stands for token cell ``q`` of the op's field of view (raster ``(i, j, k)`` order of the token grid).
    Its weight is the fraction of that cell covered by ``foreground`` (an adaptive average pool of the mask to the
    token grid), so the result is the mean over fully-foreground queries with boundary queries counted partially.
    An empty mask gives the plain mean over all queries.

    Args:
        maps: ``(T, k_h, k_w, k_d)`` attention weights of one image (``T`` queries, one map over the key grid each).
        foreground: ``(H, W, D)`` mask over the op's field of view (bool or fraction).
        token_grid: the op's token grid ``(t_h, t_w, t_d)`` with ``t_h t_w t_d = T``; defaults to the cube
            ``g^3 = T``.

    Returns:
        ``((k_h, k_w, k_d) averaged map, foreground share of the queries: the sum of their weights)``.
    """
    if maps.dim() != 4:
        raise ValueError(f"maps must have shape (T, k_h, k_w, k_d), got {list(maps.shape)}.")
    if token_grid is None:
        g = round(maps.shape[0] ** (1.0 / 3.0))
        token_grid = (g, g, g)
    token_grid = [int(t) for t in token_grid]
    if len(token_grid) != 3 or math.prod(token_grid) != maps.shape[0]:
        raise ValueError(
            f"maps have {maps.shape[0]} queries, which is not the token grid {token_grid} (T = t_h t_w t_d)."
        )
    if foreground.dim() != 3:
        raise ValueError(f"foreground must be a 3D mask (H, W, D), got shape {list(foreground.shape)}.")
    frac = F.adaptive_avg_pool3d(foreground.to(maps.device, torch.float32)[None, None], token_grid).flatten()
    total = float(frac.sum())
    weights = frac / total if total > 0 else torch.full_like(frac, 1.0 / frac.numel())
    return (weights.to(maps.dtype)[:, None, None, None] * maps).sum(0), total


def _state_dict(ckpt: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(ckpt, Mapping):
        for key in ("model", "network"):
            if isinstance(ckpt.get(key), Mapping):
                ckpt = ckpt[key]
                break
    if not isinstance(ckpt, Mapping) or not ckpt or not all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        keys = sorted(ckpt)[:8] if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise ValueError(f"{path} is not a state dict nor a dict with a 'model' or 'network' state dict (found "
                         f"{keys}).")
    prefix = "module."  # saved from a DistributedDataParallel wrapper
    if all(k.startswith(prefix) for k in ckpt):
        ckpt = {k[len(prefix):]: v for k, v in ckpt.items()}
    return dict(ckpt)


def load_bundle_network(
    bundle_root: str | os.PathLike,
    weights: str | os.PathLike | None = None,
    arch_file: str | os.PathLike | None = None,
    num_classes: int = 3,
    channel_mul: float | None = None,
    device: str | torch.device = "cpu",
) -> tuple[DASTNet, dict[str, Any]]:
    """The trained network of a KiTS19 bundle, in eval mode.

    Args:
        bundle_root: the bundle folder (``bundles/dast_kits19_seg``).
        weights: weight file; defaults to ``{bundle_root}/models/model.pt``. Read with
            ``torch.load(weights_only=True)``: a state dict, or a dict holding one under ``"model"``/``"network"``.
        arch_file: architecture; defaults to the one recorded with the weights (``record["arch"]``, written by the
            bundle's ``train.json``: exactly what was trained), else ``{bundle_root}/models/arch_code.json``.
        num_classes: output classes. Defaults to 3.
        channel_mul: channel multiplier if training overrode the architecture's (else the weight file's record or
            the architecture's value).
        device: where to put the network. Defaults to ``"cpu"``.

    Raises:
        FileNotFoundError: missing architecture or weight file.
        ValueError: unreadable weights, or weights that do not fit the architecture.

    Returns:
        ``(network, record)``; ``record`` is the training record stored next to the weights (``models/model.json``:
        intensity window, spacing, ...; :func:`dast_components.inference.read_record`), or ``{}``.
    """
    root = Path(bundle_root)
    weights = Path(weights) if weights is not None else root / "models" / "model.pt"
    if not weights.is_file():
        raise FileNotFoundError(
            f"no trained weights at {weights}: train the bundle first (python -m monai.bundle run training "
            f"--config_file {root}/configs/train.json --bundle_root {root} --dataset_dir ...) or pass --weights."
        )
    try:
        ckpt = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001  any unpickling failure means "not a weight file"
        raise ValueError(f"cannot read {weights} with torch.load(weights_only=True): {err}") from None
    record = read_record(weights)
    state = _state_dict(ckpt, weights)
    arch: ArchCode | Path
    if arch_file is not None:
        arch, source = Path(arch_file), str(arch_file)
    elif isinstance(record.get("arch"), Mapping):
        arch = ArchCode.from_dict(dict(record["arch"]), source=f"{weights} record")
        source = f"the record of {weights} (trained from {record.get('arch_file', 'an unnamed file')})"
    else:
        arch = root / "models" / "arch_code.json"
        source = str(arch)
    if channel_mul is None and isinstance(record.get("channel_mul"), (int, float)):
        channel_mul = float(record["channel_mul"])
    net = DASTNet(arch, in_channels=1, num_classes=num_classes, channel_mul=channel_mul)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = " ".join(str(err).splitlines()[:2])
        raise ValueError(
            f"the weights {weights} do not fit the network built from {source} (channel_mul "
            f"{net.arch.channel_mul if channel_mul is None else channel_mul}, {num_classes} classes); pass the "
            f"--arch_file and --channel_mul used in training. PyTorch says: {first}"
        ) from None
    logger.info("architecture from %s, weights %s (%d transformer ops)", source, weights, len(transformer_ops(net)))
    return net.to(device).eval(), record


def _window(value: Any) -> dict[str, float] | None:
    if isinstance(value, Mapping) and {"lower", "upper"} <= set(value):
        try:
            lower, upper = float(value["lower"]), float(value["upper"])
        except (TypeError, ValueError):
            return None
        if upper > lower:
            return {"lower": lower, "upper": upper}
    return None


def find_intensity(
    bundle_root: str | os.PathLike, record: Mapping[str, Any] | None = None
) -> tuple[dict[str, float] | None, str]:
    """The foreground intensity window ``{"lower", "upper"}`` (HU) the bundle's network was trained with.

    Looked up, first hit wins: the weight file's ``record["intensity"]``; a top-level ``"intensity"`` dict in a
    ``{bundle_root}/configs/*.json`` config; a ``*intensity*.json`` file with ``lower``/``upper`` in
    ``{bundle_root}/models`` or ``{bundle_root}``.

    Args:
        bundle_root: the bundle folder.
        record: the training record of the weight file (see :func:`load_bundle_network`).

    Returns:
        ``(window or None, where it was found)``.
    """
    window = _window((record or {}).get("intensity"))
    if window:
        return window, "the weight file's record"
    root = Path(bundle_root)
    candidates = [(p, "intensity") for p in sorted((root / "configs").glob("*.json"))]
    candidates += [(p, None) for folder in (root / "models", root) for p in sorted(folder.glob("*intensity*.json"))]
    for path, key in candidates:
        try:
            content = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        window = _window(content.get(key) if key and isinstance(content, Mapping) else content)
        if window:
            return window, str(path)
    return None, "nowhere"


def preprocess_image(
    image: str | os.PathLike,
    intensity: Mapping[str, float] | None = None,
    pixdim: Sequence[float] = (1.0, 1.0, 1.0),
) -> tuple[np.ndarray, np.ndarray]:
    """Load a CT volume and preprocess it like the bundle: RAS, resampling to ``pixdim``, window to [0, 1].

    Args:
        image: NIfTI file.
        intensity: ``{"lower", "upper"}`` HU window mapped to [0, 1] with clipping; ``None``: the volume's min/max
            after resampling.
        pixdim: output voxel size in mm. Defaults to 1 mm isotropic.

    Returns:
        ``(volume (H, W, D) float32 in [0, 1], 4x4 affine of the preprocessed volume)``.
    """
    from monai.transforms import EnsureChannelFirst, LoadImage, Orientation, Spacing

    path = Path(image)
    if not path.is_file():
        raise FileNotFoundError(f"image {path} does not exist.")
    img = EnsureChannelFirst()(LoadImage(image_only=True)(str(path)))
    if img.dim() != 4 or img.shape[0] != 1:
        raise ValueError(f"{path} must be a single-channel 3D volume, got shape {list(img.shape)} (channel first).")
    img = Orientation(axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))(img)
    img = Spacing(pixdim=tuple(float(p) for p in pixdim), mode="bilinear")(img)
    affine = np.asarray(img.affine, dtype=np.float64)
    vol = img[0].as_tensor().float() if hasattr(img, "as_tensor") else img[0].float()
    if intensity is None:
        lower, upper = float(vol.min()), float(vol.max())
        upper = upper if upper > lower else lower + 1.0
    else:
        lower, upper = float(intensity["lower"]), float(intensity["upper"])
    vol = ((vol - lower) / (upper - lower)).clamp(0.0, 1.0)
    return vol.numpy().astype(np.float32), affine


def _save_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    image = nib.Nifti1Image(array, affine)
    image.header.set_xyzt_units("mm", "sec")
    with atomic_path(path) as tmp:
        nib.save(image, tmp)
    return path


def _axial(volume: np.ndarray, z: int) -> np.ndarray:
    """Axial slice ``z`` of a RAS volume in radiological view: patient right on the left, anterior on top."""
    return volume[:, :, z].T[::-1, ::-1]


def _draw_panel(
    ct: np.ndarray, attention: np.ndarray, pred: np.ndarray, z: int, title: str, out_path: Path, dpi: int
) -> Path:
    from matplotlib import patheffects
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    ct_s, pred_s = _axial(ct, z), _axial(pred, z)
    att_s = np.ma.masked_equal(_axial(attention, z), 0.0)  # outside a roi window: transparent, not "low"
    inside = attention[attention > 0]  # outside a roi window the map is 0 and carries no weight
    vmin, vmax = (float(inside.min()), float(inside.max())) if inside.size else (0.0, 1.0)
    vmax = vmax if vmax > vmin else vmin + 1e-12
    fig = new_figure(13.5, 4.9, dpi=dpi)
    axes = [fig.add_subplot(1, 3, i + 1) for i in range(3)]
    axes[0].imshow(ct_s, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    axes[0].set_title("CT (preprocessed)", fontsize=9)
    axes[0].text(0.02, 0.5, "R", transform=axes[0].transAxes, color="yellow", fontsize=9, va="center")
    axes[0].text(0.96, 0.5, "L", transform=axes[0].transAxes, color="yellow", fontsize=9, va="center")
    axes[1].imshow(ct_s, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    axes[1].imshow(att_s, cmap="jet", alpha=0.45, vmin=vmin, vmax=vmax, interpolation="bilinear")
    axes[1].set_title("attention overlay", fontsize=9)
    axes[2].imshow(ct_s, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    axes[2].imshow(att_s, cmap="jet", alpha=0.8, vmin=vmin, vmax=vmax, interpolation="bilinear")
    outline = [patheffects.withStroke(linewidth=2.6, foreground="black")]
    for level, color, name in ((0.5, "white", "kidney + tumor"), (1.5, "magenta", "tumor")):
        if (pred_s > level).any() and (pred_s <= level).any():
            contours = axes[2].contour(pred_s, levels=[level], colors=color, linewidths=1.3)
            contours.set(path_effects=outline)
        axes[2].plot([], [], color=color, linewidth=1.3, path_effects=outline, label=f"predicted {name}")
    axes[2].legend(loc="lower right", fontsize=7, framealpha=0.6)
    axes[2].set_title("attention + predicted mask", fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    scale = ScalarMappable(norm=Normalize(vmin=vmin, vmax=vmax), cmap="jet")  # opaque colours in the bar
    bar = fig.colorbar(scale, ax=axes, fraction=0.02, pad=0.01)
    bar.set_label("attention weight (colours span the map's min..max)", fontsize=8)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, out_path)


def _crop_labels(labels: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """``labels`` of the padded volume with the padding set to background (predictions there mean nothing)."""
    labels = labels.clone()
    labels[shape[0]:] = 0
    labels[:, shape[1]:] = 0
    labels[:, :, shape[2]:] = 0
    return labels


def _padded_shape(shape: Sequence[int], stride: int, roi: Sequence[int] | None) -> list[int]:
    sizes = [int(math.ceil(s / stride) * stride) for s in shape]
    return [max(s, int(r)) for s, r in zip(sizes, roi)] if roi is not None else sizes


def write_attention_maps(
    bundle_root: str | os.PathLike,
    image: str | os.PathLike,
    out_dir: str | os.PathLike,
    weights: str | os.PathLike | None = None,
    arch_file: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    intensity: Mapping[str, float] | None = None,
    roi_size: Sequence[int] | int | str | None = "auto",
    num_classes: int = 3,
    channel_mul: float | None = None,
    dpi: int = 100,
) -> dict[str, Any]:
    """Attention maps of every transformer op of a trained bundle over one volume, as NIfTI files and PNG panels.

    Args:
        bundle_root: the KiTS19 bundle folder.
        image: CT volume (NIfTI, any orientation and spacing).
        out_dir: output folder (created). Written: ``image_preprocessed.nii.gz``, ``prediction.nii.gz`` and per
            transformer op ``attention_{path}.nii.gz`` and ``attention_{path}.png`` (``path`` as ``b03_p07``).
        weights: weight file; defaults to ``{bundle_root}/models/model.pt``.
        arch_file: architecture file; defaults to the one recorded with the weights, else
            ``{bundle_root}/models/arch_code.json``.
        device: device of the forward pass. Defaults to ``"cpu"``.
        intensity: ``{"lower", "upper"}`` HU window; defaults to :func:`find_intensity`, else the volume's min/max.
        roi_size: window (multiples of the network's stride): predict with a sliding window of this size and
            compute the attention on one window centred on the predicted mask. ``"auto"`` (default): the training
            patch recorded with the weights if the volume is larger than it, else the whole volume. ``None``: one
            forward pass over the whole volume (memory grows with the volume).
        num_classes: output classes. Defaults to 3.
        channel_mul: channel multiplier override (see :func:`load_bundle_network`).
        dpi: resolution of the PNG panels. Defaults to 100.

    Returns:
        ``{"image": path, "prediction": path, "intensity": window or None, "roi": window size or None (whole
        volume), "slice": z, "ops": {path: {"nifti", "png", "depth", "grid", "foreground_queries"}}}``.
    """
    out_dir = Path(out_dir)
    net, record = load_bundle_network(bundle_root, weights, arch_file, num_classes, channel_mul, device)
    ops = transformer_ops(net)
    if not ops:
        raise ValueError(f"the architecture of {bundle_root} has no transformer op (op pool {list(net.arch.ops)}): "
                         "there is no attention to draw.")
    if intensity is None:
        intensity, source = find_intensity(bundle_root, record)
        if intensity is None:
            logger.warning("no training intensity statistics found for %s (weight record, configs, *intensity*.json):"
                           " scaling the volume by its own min/max instead of the foreground percentiles", bundle_root)
        else:
            logger.info("intensity window lower=%.2f upper=%.2f from %s",
                        intensity["lower"], intensity["upper"], source)
    pixdim = record.get("pixdim") if isinstance(record.get("pixdim"), (list, tuple)) else (1.0, 1.0, 1.0)
    volume, affine = preprocess_image(image, intensity, pixdim)
    shape = list(volume.shape)
    if isinstance(roi_size, str):
        if roi_size != "auto":
            raise ValueError(f"roi_size must be 'auto', None or 3 ints, got {roi_size!r}.")
        patch = record.get("patch_size")
        whole = _padded_shape(shape, net.stride, None)
        fits = not isinstance(patch, (list, tuple)) or len(patch) != 3 or all(w <= int(p) for w, p in zip(whole, patch))
        roi_size = None if fits else [int(p) for p in patch]
    roi = None
    if roi_size is not None:
        roi = [int(roi_size)] * 3 if isinstance(roi_size, int) else [int(r) for r in roi_size]
        if len(roi) != 3 or any(r < 1 or r % net.stride for r in roi):
            raise ValueError(f"roi_size {roi_size} must be 3 positive multiples of the network stride {net.stride}.")
    padded = _padded_shape(shape, net.stride, roi)
    x = torch.from_numpy(volume).to(device)[None, None]
    x = F.pad(x, [0, padded[2] - shape[2], 0, padded[1] - shape[1], 0, padded[0] - shape[0]])
    logger.info("preprocessed volume %s, padded to %s for the network (stride %d); attention over %s", shape, padded,
                net.stride, "the whole volume" if roi is None else f"a {roi} window centred on the predicted mask")

    if roi is None:
        logits, maps = capture_attention(net, x)
        region = tuple(slice(0, s) for s in padded)
    else:
        from monai.inferers import sliding_window_inference

        with torch.no_grad():
            logits = sliding_window_inference(x, roi, 1, net, overlap=0.25, mode="gaussian")
        fg = _crop_labels(logits[0].argmax(0), shape) > 0
        centre = fg.nonzero().float().mean(0).tolist() if fg.any() else [s / 2 for s in shape]
        start = [min(max(int(round(c - r / 2)), 0), p - r) for c, r, p in zip(centre, roi, padded)]
        region = tuple(slice(s, s + r) for s, r in zip(start, roi))
        _, maps = capture_attention(net, x[(..., *region)])
    pred = _crop_labels(logits[0].argmax(0), shape)
    fg_region = pred[region] > 0
    pred_np = pred[: shape[0], : shape[1], : shape[2]].cpu().numpy().astype(np.uint8)

    out_dir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "image": _save_nifti(volume, affine, out_dir / "image_preprocessed.nii.gz"),
        "prediction": _save_nifti(pred_np, affine, out_dir / "prediction.nii.gz"),
        "intensity": intensity,
        "roi": roi,
        "ops": {},
    }
    z = int(round(float(np.nonzero(pred_np)[2].mean()))) if pred_np.any() else shape[2] // 2
    result["slice"] = z
    ends = path_endpoints(net.arch.num_depths)
    first = int(net.arch.use_downsample)
    for name, weights_ in maps.items():
        size = [s.stop - s.start for s in region]
        depth = ends[int(name.split("_p")[1])][1]
        op_input = [s // 2 ** (depth + first) for s in size]
        token_grid = ops[name].grid_size(op_input, ops[name].grid)
        averaged, fg_queries = foreground_attention(weights_[0].float(), fg_region, token_grid)
        up = F.interpolate(averaged[None, None], size=size, mode="trilinear", align_corners=False)[0, 0]
        full = torch.zeros(padded, dtype=torch.float32, device=up.device)
        full[region] = up.clamp_min(0.0)  # interpolation of non-negative weights; clamp only rounding noise
        att = full[: shape[0], : shape[1], : shape[2]].cpu().numpy()
        g = ops[name].grid
        num_queries = math.prod(token_grid)
        nifti = _save_nifti(att, affine, out_dir / f"attention_{name}.nii.gz")
        queries = query_summary(fg_queries, num_queries)
        window = "" if roi is None else f" in the {'x'.join(map(str, roi))} window around the mask"
        title = (f"segmentation attention of transformer {name} (depth {depth}, 1/{2 ** (depth + first)} resolution, "
                 f"{'x'.join(map(str, token_grid))} tokens, {'x'.join(map(str, averaged.shape))} keys){window}\n"
                 f"{queries}; axial slice {z} of {shape[2]}")
        png = _draw_panel(volume, att, pred_np, z, title, out_dir / f"attention_{name}.png", dpi)
        result["ops"][name] = {"nifti": nifti, "png": png, "depth": depth, "grid": g, "token_grid": token_grid,
                                 "key_grid": list(averaged.shape), "foreground_queries": fg_queries}
        logger.info("wrote %s and %s", nifti, png)
    return result
