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
"""Inference helpers of the KiTS19 bundle: weights with clear errors, the fold ensemble, input lists, output names.

A weight file written by ``train.json`` (``models/model.pt``, ``models/model_fold{k}.pt``) is a plain state dict, the
Model Zoo convention (``ckpt_export`` without ``key_in_ckpt``). Next to it, ``<stem>.json`` (``models/model.json``)
records what the weights were trained with (:class:`dast_components.training.WeightRecord`): the intensity window,
spacing, patch size, fold and architecture, so inference scales new images exactly as training did
(:func:`read_intensity`). Weight files of version 0.1.0 (``{"model": ..., "bundle": {...}}``) still load.
"""

from __future__ import annotations

import copy
import glob
import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from dast_components.data.checks import check_image_file
from dast_components.errors import IncompatibleWeightsError, InputError, MissingFileError

__all__ = [
    "FoldEnsemble",
    "how_to_get_weights",
    "inference_items",
    "kits19_prediction_name",
    "load_network",
    "read_checkpoint",
    "read_intensity",
    "read_record",
    "record_path",
]

logger = logging.getLogger(__name__)

_BUNDLE_NAME = "dast_kits19_seg"


def _train_config(root: Path | None) -> Path | None:
    """An existing ``configs/train.json`` to name in messages: the bundle root's own, else the repository's bundle."""
    candidates = [root / "configs" / "train.json"] if root is not None else []
    candidates.append(Path(__file__).resolve().parents[1] / "bundles" / _BUNDLE_NAME / "configs" / "train.json")
    return next((c for c in candidates if c.is_file()), None)


def how_to_get_weights(path: str | os.PathLike) -> str:
    """What to do about a missing weight file ``path``: the command that writes it, with paths that exist.

    ``bundle_root`` is the folder above ``models/``; it is often an output folder without ``configs/``, so the
    training command names this bundle's ``configs/train.json`` where it exists (the bundle root's, else the one of
    the repository the package was installed from). When ``path`` is ``models/model.pt`` and only other folds were
    trained, the message says which ``--fold`` to pass instead.

    Args:
        path: the missing weight file.

    Returns:
        one or more sentences, each ending with a full stop.
    """
    path = Path(path).absolute()
    root = path.parent.parent if path.parent.name == "models" else None
    hints = []
    folds = sorted(path.parent.glob("model_fold*.pt")) if path.parent.is_dir() else []
    if path.name == "model.pt" and folds:
        ks = [m.stem[len("model_fold"):] for m in folds]
        hints.append(f"Found {', '.join(str(m) for m in folds)}: pass --fold {ks[0]} to use "
                     f"{folds[0].name}" + (" (--ensemble true averages all folds)." if len(folds) > 1 else "."))
    config = _train_config(root)
    bundle_root = str(root) if root is not None else "FOLDER (weights go to FOLDER/models/)"
    config_file = str(config) if config is not None else f"<the {_BUNDLE_NAME} bundle>/configs/train.json"
    command = (f"python -m monai.bundle run training --config_file {config_file} --bundle_root {bundle_root} "
               "--dataset_dir /path/to/kits19/data --fold K")
    hints.append(f"Train it with `{command}` (fold K writes models/model_foldK.pt, fold 0 also models/model.pt; "
                 "inference takes --fold K).")
    docs = [d for d in ((root / "docs" / "README.md") if root else None,
                        config.parent.parent / "docs" / "README.md" if config else None) if d and d.is_file()]
    where = f" (see {docs[0]})" if docs else ""
    hints.append(f"Or download the released bundle{where}, or point --ckpt_path at an existing weight file.")
    return " ".join(hints)


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a weight file written by ``train.json`` (``torch.load(weights_only=True)``, on CPU).

    Args:
        path: ``.pt`` file.

    Raises:
        FileNotFoundError: no such file; the message says how to train or download the weights.
        ValueError: the file is not a checkpoint of this bundle.

    Returns:
        the checkpoint dictionary; a bare state dict is returned as ``{"model": state_dict}``.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(
            f"no trained weights at {path}. " + how_to_get_weights(path)
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001  any unpickling failure means "not our checkpoint"
        raise InputError(f"cannot read {path} as a weight file (torch.load with weights_only=True): {err}") from None
    if not isinstance(ckpt, Mapping):
        raise InputError(f"{path} holds a {type(ckpt).__name__}, expected a dict of tensors or {{'model': ...}}.")
    if "model" not in ckpt:
        if all(isinstance(v, torch.Tensor) for v in ckpt.values()):
            return {"model": dict(ckpt)}
        raise InputError(f"{path} has no 'model' entry (keys: {sorted(ckpt)[:8]}).")
    return dict(ckpt)


def record_path(path: str | os.PathLike) -> Path:
    """The training record next to a weight file: ``models/model.pt`` -> ``models/model.json``."""
    return Path(path).with_suffix(".json")


def read_record(path: str | os.PathLike) -> dict[str, Any]:
    """What the weights at ``path`` were trained with: the JSON record next to them (:func:`record_path`), else the
    ``bundle`` entry inside a weight file of version 0.1.0, else ``{}``.

    Args:
        path: weight file written by ``train.json``.

    Raises:
        FileNotFoundError: no weight file (with how to get one).
        ValueError: the record or the weight file cannot be read.
    """
    side = record_path(path)
    if side.is_file():
        try:
            record = json.loads(side.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise InputError(f"cannot read the training record {side} of {path}: {err}") from None
        if not isinstance(record, Mapping):
            raise InputError(f"{side} must hold a JSON object (the training record of {path}).")
        return dict(record)
    if not Path(path).is_file():
        read_checkpoint(path)  # raises with how to get the weights
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001  any unpickling failure means "not a weight file"
        raise InputError(f"cannot read {path} as a weight file (torch.load with weights_only=True): {err}") from None
    legacy = ckpt.get("bundle") if isinstance(ckpt, Mapping) else None
    return dict(legacy) if isinstance(legacy, Mapping) else {}


def read_intensity(path: str | os.PathLike) -> dict[str, float]:
    """The intensity window ``{"lower", "upper"}`` (HU) the weights at ``path`` were trained with (their record).

    Args:
        path: weight file written by ``train.json``.

    Raises:
        FileNotFoundError: no such file (with how to get one).
        ValueError: no record carries an intensity window; set the ``intensity`` config id by hand.
    """
    if not Path(path).is_file():
        read_checkpoint(path)  # raises with how to get the weights
    window = read_record(path).get("intensity")
    if not isinstance(window, Mapping) or not {"lower", "upper"} <= set(window):
        raise InputError(
            f"neither {record_path(path)} nor {path} records the intensity window the weights were trained with; "
            "pass it explicitly, e.g. --intensity \"[-50, 250]\" (lower and upper in HU: the window used in training)."
        )
    lower, upper = float(window["lower"]), float(window["upper"])
    if not upper > lower:
        raise InputError(f"{path} records an empty intensity window lower={lower}, upper={upper}.")
    return {"lower": lower, "upper": upper}


def _load_weights(network: nn.Module, path: str | os.PathLike) -> dict[str, Any]:
    ckpt = read_checkpoint(path)
    target = network.module if isinstance(network, nn.parallel.DistributedDataParallel) else network
    try:
        target.load_state_dict(ckpt["model"], strict=True)
    except RuntimeError as err:
        trained = read_record(path).get("arch_file")
        hint = f" They were trained with the architecture {trained}." if trained else ""
        if isinstance(err, IncompatibleWeightsError):  # the module's own reason
            hint += f" {err}"
        raise InputError(
            f"the weights in {path} do not fit the network built from the configured architecture "
            f"(arch_file, channel_mul, grid must match training).{hint} {_key_mismatch(target, ckpt['model'])}"
        ) from None
    return ckpt


def _key_mismatch(network: nn.Module, state: Mapping[str, Any], shown: int = 3) -> str:
    """A short summary of how ``state`` differs from ``network.state_dict()`` (counts and a few names)."""
    own = network.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)]
    parts = []
    for what, names in (("missing", missing), ("unexpected", unexpected), ("of another shape", shapes)):
        if names:
            more = f", ... ({len(names) - shown} more)" if len(names) > shown else ""
            parts.append(f"{len(names)} parameter(s) {what}: {', '.join(names[:shown])}{more}")
    return "; ".join(parts) + "." if parts else ""


class FoldEnsemble(nn.Module):
    """Average of the softmax outputs of several models (e.g. the five cross-validation folds).

    ``forward`` returns ``log(mean_k softmax(model_k(x_k)))``: applying softmax to it gives back the averaged
    probabilities exactly, so the single-model postprocessing (``Activationsd(softmax=True)``, argmax) is used
    unchanged.

    The input is scaled with the window of the first model (the preprocessing). Models trained with another
    intensity window get the input re-mapped to their own window, ``x_k = clip((x (u_0 - l_0) + l_0 - l_k) /
    (u_k - l_k), 0, 1)``; this is exact except for voxels clipped by the first window but inside the k-th (the
    windows of folds differ by a few HU).

    Args:
        models: the networks, each ``(B, 1, H, W, D) -> (B, C, H, W, D)`` logits.
        windows: intensity window ``{"lower", "upper"}`` of each model; ``None``: all use the same window.
    """

    def __init__(self, models: Sequence[nn.Module], windows: Sequence[Mapping[str, float]] | None = None) -> None:
        super().__init__()
        if len(models) == 0:
            raise InputError("FoldEnsemble needs at least one model.")
        if windows is not None and len(windows) != len(models):
            raise InputError(f"got {len(models)} models but {len(windows)} intensity windows.")
        self.models = nn.ModuleList(models)
        scale, shift = [], []
        for w in windows or [{"lower": 0.0, "upper": 1.0}] * len(models):
            ref = (windows or [w])[0]
            # x_hu = x * (u0 - l0) + l0;  x_k = (x_hu - lk) / (uk - lk) = x * scale + shift
            width = float(w["upper"]) - float(w["lower"])
            scale.append((float(ref["upper"]) - float(ref["lower"])) / width)
            shift.append((float(ref["lower"]) - float(w["lower"])) / width)
        self.register_buffer("scale", torch.tensor(scale), persistent=False)
        self.register_buffer("shift", torch.tensor(shift), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W, D)`` scaled image -> ``(B, C, H, W, D)`` log of the mean class probabilities."""
        probs = None
        for k, model in enumerate(self.models):
            p = torch.softmax(model((x * self.scale[k] + self.shift[k]).clamp(0, 1)).float(), dim=1)
            probs = p if probs is None else probs + p
        return torch.log((probs / len(self.models)).clamp_min(torch.finfo(torch.float32).tiny))


def load_network(
    network_def: nn.Module, checkpoints: str | os.PathLike | Sequence[str | os.PathLike], device: str | torch.device
) -> nn.Module:
    """The network of ``network_def`` with trained weights, or a :class:`FoldEnsemble` of several weight files.

    Args:
        network_def: an instance of the bundle's network (not modified when several checkpoints are given).
        checkpoints: one weight file, or a list; a list of more than one builds an ensemble of copies of
            ``network_def``, model k with the weights and intensity window of file k.
        device: where to put the network.

    Raises:
        FileNotFoundError: a weight file is missing (the message says how to train or download it).
        ValueError: a file is unreadable or does not fit the network.

    Returns:
        the network in eval mode on ``device``.
    """
    paths = [checkpoints] if isinstance(checkpoints, (str, os.PathLike)) else list(checkpoints)
    if not paths:
        raise InputError("no weight files given.")
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        raise MissingFileError(
            f"no trained weights at {', '.join(missing)}. " + how_to_get_weights(missing[0])
        )
    if len(paths) == 1:
        _load_weights(network_def, paths[0])
        logger.info("loaded weights %s", paths[0])
        return network_def.to(device).eval()
    models, windows = [], []
    for path in paths:
        model = copy.deepcopy(network_def)
        _load_weights(model, path)
        models.append(model)
        windows.append(read_intensity(path))
    logger.info("ensemble of %d models: %s", len(paths), ", ".join(str(p) for p in paths))
    return FoldEnsemble(models, windows).to(device).eval()


def inference_items(
    dataset_dir: str | os.PathLike, pattern: str | None = None, check: bool = True
) -> list[dict[str, str]]:
    """Images to segment: ``{"image": path}`` entries, sorted, every one checked before the first prediction.

    Args:
        dataset_dir: a KiTS19 ``data`` folder (``case_XXXXX/imaging.nii.gz``), a folder of NIfTI files, or one
            NIfTI file.
        pattern: glob pattern relative to ``dataset_dir``; defaults to ``case_*/imaging.nii.gz`` when such cases
            exist, else ``*.nii.gz`` and ``*.nii``.
        check: read every image in full and check it is a readable one-channel 3D volume of finite values
            (:func:`dast_components.data.checks.check_image_file`), so that one bad file stops the run before any
            prediction is written. Defaults to True.

    Raises:
        ValueError: nothing to segment, or a bad image (an :class:`~dast_components.errors.InputError` naming it).
    """
    root = Path(dataset_dir).expanduser()
    if root.is_file():
        items = [{"image": str(root.absolute())}]
        return _checked(items) if check else items
    if not root.is_dir():
        raise InputError(f"dataset_dir '{root}' does not exist; pass --dataset_dir with the images to segment.")
    if pattern:
        patterns = [pattern]
    elif glob.glob(str(root / "case_*" / "imaging.nii.gz")):
        patterns = ["case_*/imaging.nii.gz"]
    else:
        patterns = ["*.nii.gz", "*.nii"]
    files = sorted({f for p in patterns for f in glob.glob(str(root / p))})
    if not files:
        raise InputError(f"no images matching {patterns} in '{root}'.")
    items = [{"image": str(Path(f).absolute())} for f in files]
    return _checked(items) if check else items


def _checked(items: list[dict[str, str]]) -> list[dict[str, str]]:
    for item in items:
        check_image_file(item["image"], "input image")
    logger.info("checked %d input image(s)", len(items))
    return items


_CASE_RE = re.compile(r"case_(\d+)$")


def kits19_prediction_name(metadict: Mapping[str, Any] | None, saver: Any) -> dict[str, Any]:
    """``output_name_formatter`` of ``SaveImaged``: KiTS19 submission names.

    ``.../case_00042/imaging.nii.gz`` becomes ``prediction_00042`` (the challenge's expected name); any other
    input keeps its file name (without extension), so distinct inputs never share an output file.
    """
    source = str((metadict or {}).get("filename_or_obj", getattr(saver, "_data_index", 0)))
    p = Path(source)
    name = p.name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            name = name[: -len(ext)]
    match = _CASE_RE.match(p.parent.name)
    if name == "imaging" and match:
        name = f"prediction_{match.group(1)}"
    return {"subject": name, "idx": None}
