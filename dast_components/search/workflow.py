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
The architecture-search loop: bi-level steps, validation, architecture export, checkpoints and metrics.

:class:`SearchWorkflow` is the ``search#workflow`` of the ``dast_search`` bundle. It runs on one CPU or GPU, or on
every rank of a ``torchrun`` process group (the bundle's ``multi_gpu_search.json`` initialises it): the weights are
trained through ``DistributedDataParallel``, the architecture logits are kept out of DDP and their gradients are
averaged explicitly, rank 0's logits are broadcast before every decode (so all ranks decode the same architecture),
and only rank 0 writes files.

Files (rank 0):

- ``{ckpt_dir}/arch_code.json``: the current decoded architecture (at every validation and at the end), and a copy
  ``{ckpt_dir}/arch_code_iter{N:06d}.json``; both written atomically.
- ``{output_dir}/search_checkpoint.pt``: network (weights and logits), both optimisers, scalers, scheduler,
  iteration and the memory target; tensors and plain values only (``torch.load(..., weights_only=True)``).
- ``{output_dir}/metrics.csv``: one row per iteration (losses, memory ratio, lambda, validation Dice, estimated
  memory of the decode), rewritten atomically with every checkpoint so it always matches it;
  ``{output_dir}/tensorboard/`` when tensorboard is installed.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import hashlib
import io
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from monai.metrics import compute_dice
from monai.networks.utils import one_hot
from torch import nn

from dast_components.errors import InputError
from dast_components.networks.arch_io import save_arch
from dast_components.networks.cells import resolve_ops
from dast_components.search.budget import GIB, budget_to_lambda, cell_elements, cost_table, decode_within_budget
from dast_components.search.engine import BiLevelSearchEngine, arch_parameters, ramp_factor
from dast_components.utils import atomic_path

__all__ = ["SearchWorkflow", "check_patch_size", "check_search_settings", "prepare_data"]

logger = logging.getLogger(__name__)

ARCH_FILE = "arch_code.json"
CHECKPOINT_FILE = "search_checkpoint.pt"
METRICS_FILE = "metrics.csv"
_ROW_KEYS = (
    "iteration", "phase", "lr", "loss", "arch_loss", "arch_total", "entropy_a", "entropy_c", "topology", "memory",
    "memory_ratio", "memory_lambda", "ramp", "seconds", "val_dice",
)
#: settings that may differ from the checkpoint's when resuming (the others stop the run, see _check_same_settings)
_RESUMABLE_CHANGES = ("num_iterations",)
_EXPORT_KEYS = ("est_memory_gib", "transformers", "budget_penalty")


def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def prepare_data(
    dataset_dir: str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    num_classes: int = 3,
    seed: int = 0,
) -> dict:
    """
    :func:`dast_components.data.prepare_search_data`, run by rank 0 first under ``torchrun``.

    The other ranks wait, then read the split and intensity caches rank 0 wrote instead of reading every volume
    again; when rank 0 fails (bad dataset), every rank raises with rank 0's message.

    Args:
        dataset_dir: MSD task folder with ``dataset.json``.
        output_dir: fallback cache folder when ``dataset_dir`` is read-only.
        cache_dir: cache folder (default: ``dataset_dir`` when writable).
        num_classes: label classes including background.
        seed: split seed.

    Returns:
        ``{"train_weights", "train_arch", "validation": [{"image", "label"}], "intensity": {"lower", "upper"}}``.
    """
    from dast_components.data import prepare_search_data

    def _prepare() -> dict:
        return prepare_search_data(dataset_dir, cache_dir=cache_dir, num_classes=num_classes, seed=seed,
                                   output_dir=output_dir)

    rank, world = _dist_info()
    if world == 1:
        return _prepare()
    result: dict | None = None
    failure: list[str | None] = [None]
    if rank == 0:
        try:
            result = _prepare()
        except Exception as err:  # noqa: BLE001  re-raised below after telling the other ranks
            failure[0] = f"{type(err).__name__}: {err}"
            dist.broadcast_object_list(failure, src=0)
            raise
    dist.broadcast_object_list(failure, src=0)
    if failure[0] is not None:
        raise InputError(f"rank 0 could not prepare the search data: {failure[0]}")
    return result if result is not None else _prepare()


def check_patch_size(patch_size: Sequence[int], stride: int, name: str = "patch_size") -> list[int]:
    """
    Check that ``patch_size`` has three positive multiples of ``stride`` (``2 ** (num_depths + 1)`` for DiNTS).

    Returns:
        the patch size as a list of ints.

    Raises:
        ValueError: naming ``name``, the value and a valid neighbour.
    """
    try:
        sizes = [int(s) for s in patch_size]
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a list of 3 integers, got {patch_size!r}.") from None
    if len(sizes) != 3 or any(s < stride or s % stride for s in sizes):
        near = [max(stride, round(s / stride) * stride) for s in sizes] if len(sizes) == 3 else [stride] * 3
        raise InputError(
            f"{name} {list(patch_size)} must be 3 positive multiples of {stride} (2 ** (num_depths + 1) with the "
            f"DiNTS stem downsampling), e.g. {near}."
        )
    return sizes


def check_search_settings(
    patch_size: Sequence[int],
    train_patch_size: Sequence[int],
    num_depths: int,
    ops: str | Sequence[str],
    num_iterations: int | None = None,
    warmup_iterations: int | None = None,
    use_downsample: bool = True,
) -> None:
    """
    Fail fast on settings that would otherwise fail deep inside the search (the bundle's ``initialize`` calls it).

    Args:
        patch_size: search patch; a multiple of ``2 ** (num_depths + use_downsample)``.
        train_patch_size: retraining patch (where the memory estimate applies); same rule.
        num_depths: resolutions of the search space.
        ops: op pool name or op names (:func:`~dast_components.networks.resolve_ops`).
        num_iterations: total iterations, >= 1.
        warmup_iterations: weight-only iterations, in ``[0, num_iterations)``.
        use_downsample: whether the DiNTS stems halve the input first.

    Raises:
        ValueError: naming the setting, its value and what is expected.
    """
    _check_settings(patch_size, train_patch_size, num_depths, ops, num_iterations, warmup_iterations, use_downsample)


def _check_settings(
    patch_size: Sequence[int],
    train_patch_size: Sequence[int],
    num_depths: int,
    ops: str | Sequence[str],
    num_iterations: int | None,
    warmup_iterations: int | None,
    use_downsample: bool,
) -> None:
    resolve_ops(ops)
    if int(num_depths) < 1:
        raise InputError(f"num_depths must be >= 1, got {num_depths}.")
    stride = 2 ** (int(num_depths) + int(use_downsample))
    check_patch_size(patch_size, stride, "patch_size")
    check_patch_size(train_patch_size, stride, "train_patch_size")
    if num_iterations is not None and int(num_iterations) < 1:
        raise InputError(f"num_iterations must be >= 1, got {num_iterations}.")
    if warmup_iterations is not None and num_iterations is not None:
        if not 0 <= int(warmup_iterations) < int(num_iterations):
            raise InputError(f"warmup_iterations must be in [0, num_iterations={num_iterations}), got "
                             f"{warmup_iterations}: the search needs at least one architecture step.")


def _cycle(loader: Any) -> Iterator[Any]:
    """Endless iteration over a data loader, advancing a ``DistributedSampler``'s epoch at every pass."""
    epoch = 0
    while True:
        sampler = getattr(loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise InputError("a search data loader yields no batch: its datalist is empty or smaller than one batch.")
        epoch += 1


def _atomic_write(path: Path, write: Callable[[str], None]) -> None:
    with atomic_path(path) as tmp:
        write(str(tmp))


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}, "c": [{"lr": 2}]}`` -> ``{"a.b": 1, "c[0].lr": 2}`` (tuples compared as lists)."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(value, (list, tuple)) and any(isinstance(v, (Mapping, list, tuple)) for v in value):
        out = {}
        for i, v in enumerate(value):
            out.update(_flatten(v, f"{prefix}[{i}]"))
        return out
    return {prefix: list(value) if isinstance(value, tuple) else value}


def _fmt_time(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(max(seconds, 0.0))))


class SearchWorkflow:
    """
    Bi-level architecture search of a DiNTS network on a :class:`~dast_components.networks.DASTSearchSpace`.

    Each iteration takes a weight step on a batch of ``train_loader``; from ``warmup_iterations`` on it also takes an
    architecture step on a batch of ``arch_loader`` (see :class:`~dast_components.search.engine.BiLevelSearchEngine`).
    Every ``val_interval`` iterations and at the end it computes the sliding-window Dice on ``val_loader``, decodes and
    exports the architecture and saves a checkpoint.

    Args:
        network: ``DiNTS(dints_space=DASTSearchSpace(...))`` on ``device``.
        train_loader: batches ``{"image", "label"}`` of the weight split.
        arch_loader: batches of the architecture split.
        loss_function: segmentation loss (DiceCE).
        optimizer: weight optimiser over ``dast_components.search.weight_parameters(network)``.
        arch_optimizer: optimiser over ``dast_components.search.arch_parameters(network)``.
        num_iterations: total iterations (weight steps).
        warmup_iterations: weight-only iterations first. ``None``: half of ``num_iterations`` (DiNTS).
        val_loader: validation volumes (batch size 1); ``None`` skips validation (the decode is still exported).
        inferer: sliding-window inferer of the validation (``inferer(image, network) -> logits``).
        val_interval: iterations between validations, exports and checkpoints.
        memory_loss: :class:`~dast_components.losses.MemoryBudgetLoss` (``None``: no memory term).
        memory_budget_gib: absolute training-memory budget in GiB at ``train_patch_size`` / ``train_batch_size`` and
            ``arch_channel_mul``; it sets the target of ``memory_loss`` and every exported decode is kept within it.
        patch_size: search patch (checked against the network stride).
        train_patch_size: patch of the retraining, where memory estimates and the budget apply.
        train_batch_size: batch of the retraining.
        arch_channel_mul: width recorded in the exported architecture (``None``: the search width).
        num_classes: classes including background.
        device: the network's device (default: the device of its parameters).
        amp: mixed precision; used on CUDA only (ignored with a log line elsewhere).
        ckpt_dir: folder of ``arch_code.json``.
        output_dir: folder of the checkpoint, metrics and tensorboard logs.
        lr_scheduler: optional scheduler of ``optimizer``, stepped every iteration.
        resume: continue from ``{output_dir}/search_checkpoint.pt`` if it exists; settings that differ from the
            checkpoint's stop the run with the list of differences (a resumed search is the same search).
        entropy_weight: weight of the two entropy terms.
        topology_weight: weight of the topology entropy.
        memory_weight: weight of the memory term.
        log_interval: iterations between console lines.
        tensorboard: also write tensorboard scalars (when the package is installed).
        find_unused_parameters: passed to ``DistributedDataParallel``.
        seed: recorded in the architecture's provenance.

    Example::

        workflow = SearchWorkflow(net, w_loader, a_loader, DiceCELoss(to_onehot_y=True, softmax=True), sgd, adam,
                                  num_iterations=20, val_loader=v_loader, inferer=SlidingWindowInferer((32,) * 3))
        summary = workflow.run()  # {"arch_file": ".../models/arch_code.json", "val_dice": ..., ...}
    """

    def __init__(
        self,
        network: nn.Module,
        train_loader: Any,
        arch_loader: Any,
        loss_function: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        optimizer: torch.optim.Optimizer,
        arch_optimizer: torch.optim.Optimizer,
        num_iterations: int,
        warmup_iterations: int | None = None,
        val_loader: Any = None,
        inferer: Callable[..., torch.Tensor] | None = None,
        val_interval: int = 100,
        memory_loss: Any = None,
        memory_budget_gib: float | None = None,
        patch_size: Sequence[int] | None = None,
        train_patch_size: Sequence[int] | None = None,
        train_batch_size: int = 2,
        arch_channel_mul: float | None = None,
        num_classes: int = 3,
        device: str | torch.device | None = None,
        amp: bool = False,
        ckpt_dir: str | os.PathLike = "models",
        output_dir: str | os.PathLike = "search_output",
        lr_scheduler: Any = None,
        resume: bool = False,
        entropy_weight: float = 1.0,
        topology_weight: float = 0.001,
        memory_weight: float = 1.0,
        log_interval: int = 1,
        tensorboard: bool = True,
        find_unused_parameters: bool = False,
        seed: int | None = None,
    ) -> None:
        self.network = network
        self.space = getattr(network, "dints_space", None)
        if self.space is None or not hasattr(self.space, "decode_arch"):
            raise TypeError("network must be a DiNTS built on a dast_components.networks.DASTSearchSpace.")
        self.num_iterations = int(num_iterations)
        if self.num_iterations < 1:
            raise InputError(f"num_iterations must be >= 1, got {num_iterations}.")
        warmup = self.num_iterations // 2 if warmup_iterations is None else int(warmup_iterations)
        if not 0 <= warmup < self.num_iterations:
            raise InputError(f"warmup_iterations must be in [0, num_iterations={self.num_iterations}), got {warmup}: "
                             "the search needs at least one architecture step.")
        self.warmup_iterations = warmup
        if int(val_interval) < 1:
            raise InputError(f"val_interval must be >= 1, got {val_interval}.")
        self.val_interval = int(val_interval)
        self.patch_size = check_patch_size(patch_size, self.space.stride, "patch_size") if patch_size else None
        self.train_patch_size = check_patch_size(
            train_patch_size or patch_size or [self.space.stride] * 3, self.space.stride, "train_patch_size"
        )
        if memory_budget_gib is not None and float(memory_budget_gib) <= 0:
            raise InputError(f"memory_budget_gib must be a positive number of GiB or null, got {memory_budget_gib}.")
        self.memory_budget_gib = None if memory_budget_gib is None else float(memory_budget_gib)
        if self.memory_budget_gib is not None and memory_loss is None:
            raise InputError("memory_budget_gib needs a memory_loss to steer the search towards it.")
        self.train_batch_size = int(train_batch_size)
        self.arch_channel_mul = None if arch_channel_mul is None else float(arch_channel_mul)
        if num_classes < 2:
            raise InputError(f"num_classes must be >= 2 (background included), got {num_classes}.")
        self.num_classes = int(num_classes)
        self.device = torch.device(device) if device is not None else arch_parameters(network)[0].device
        self.amp = bool(amp) and self.device.type == "cuda"
        if amp and not self.amp:
            logger.info("amp is used on CUDA only; searching in float32 on %s.", self.device)
        self.train_loader, self.arch_loader, self.val_loader = train_loader, arch_loader, val_loader
        self.inferer = inferer
        if val_loader is not None and inferer is None:
            raise InputError("val_loader needs an inferer (e.g. monai.inferers.SlidingWindowInferer).")
        self.loss_function = loss_function
        self.optimizer, self.arch_optimizer, self.lr_scheduler = optimizer, arch_optimizer, lr_scheduler
        self.memory_loss = memory_loss
        self.weights = {"entropy_weight": entropy_weight, "topology_weight": topology_weight,
                        "memory_weight": memory_weight}
        self.ckpt_dir, self.output_dir = Path(ckpt_dir), Path(output_dir)
        self.resume = bool(resume)
        self.log_interval = max(1, int(log_interval))
        self.tensorboard = bool(tensorboard)
        self.find_unused_parameters = bool(find_unused_parameters)
        self.seed = seed
        self.rows: list[dict[str, Any]] = []
        self.best = {"val_dice": -1.0, "iteration": 0}
        self._writer: Any = None
        self.engine: BiLevelSearchEngine | None = None

    # ----------------------------------------------------------------------------------------------- description
    def structure(self) -> dict[str, Any]:
        """The search-space settings a checkpoint must share to be resumed."""
        s = self.space
        return {
            "ops": list(s.op_names), "num_blocks": int(s.num_blocks), "num_depths": int(s.num_depths),
            "channel_mul": float(s.channel_mul), "use_downsample": bool(s.use_downsample),
            **{k: s.transformer_settings[k] for k in ("grid", "num_heads", "num_layers", "mlp_ratio")},
        }

    def description(self) -> dict[str, Any]:
        """Settings of this search (structure, schedule, memory target, optimisers); hashed as ``config_hash``."""
        def _groups(opt: torch.optim.Optimizer) -> list[dict[str, Any]]:
            keep = ("lr", "momentum", "weight_decay", "betas", "nesterov")
            return [{k: (list(g[k]) if isinstance(g[k], tuple) else g[k]) for k in keep if k in g}
                    for g in opt.param_groups]

        return {
            "structure": self.structure(),
            "patch_size": self.patch_size, "train_patch_size": self.train_patch_size,
            "train_batch_size": self.train_batch_size, "arch_channel_mul": self.arch_channel_mul,
            "num_iterations": self.num_iterations, "warmup_iterations": self.warmup_iterations,
            "memory_lambda": float(getattr(self.memory_loss, "memory_lambda", 0.0) or 0.0),
            "memory_budget_gib": self.memory_budget_gib, **self.weights,
            "optimizer": _groups(self.optimizer), "arch_optimizer": _groups(self.arch_optimizer),
            "num_classes": self.num_classes, "seed": self.seed,
        }

    def config_hash(self) -> str:
        """Short SHA-256 of :meth:`description`."""
        text = json.dumps(self.description(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    # -------------------------------------------------------------------------------------------------- running
    def run(self) -> dict[str, Any]:
        """
        Run (or continue) the search.

        Returns:
            summary: ``arch_file``, ``iteration``, ``val_dice``, ``best_val_dice``, ``est_memory_gib``,
            ``memory_lambda``, ``op_counts``, ``config_hash``.
        """
        rank, world = _dist_info()
        self.is_main = rank == 0
        self.world = world
        self._settings = self.description()
        self._config_hash = self.config_hash()
        self.engine = self._build_engine()
        start = self._load_checkpoint() if self.resume else self._fresh_start()
        self._sync_arch()
        if self.memory_budget_gib is not None and start == 0:
            lam = budget_to_lambda(self.space, self.memory_budget_gib, self.train_patch_size, self.train_batch_size,
                                   self.arch_channel_mul, num_classes=self.num_classes)
            self.memory_loss.memory_lambda = lam
            self._info("memory budget %.2f GiB at patch %s, batch %d -> memory lambda %.3f",
                       self.memory_budget_gib, self.train_patch_size, self.train_batch_size, lam)
        self._log_start(start)
        summary: dict[str, Any] = {}
        done = start
        w_iter = _cycle(self.train_loader)
        a_iter: Iterator[Any] | None = None
        t_run = time.perf_counter()
        try:
            for it in range(start, self.num_iterations):
                tic = time.perf_counter()
                w_batch = next(w_iter)
                a_batch = None
                if it >= self.warmup_iterations:
                    a_iter = a_iter or _cycle(self.arch_loader)
                    a_batch = next(a_iter)
                ramp = ramp_factor(it, self.warmup_iterations, self.num_iterations)
                lr = float(self.optimizer.param_groups[0]["lr"])  # the rate this iteration's weight step used
                out = self.engine.step(w_batch, a_batch, ramp=ramp)
                if self.lr_scheduler is not None:
                    self.lr_scheduler.step()
                done = it + 1
                row = self._row(done, out, a_batch is not None, time.perf_counter() - tic, lr)
                export = done % self.val_interval == 0 or done == self.num_iterations
                if export:
                    summary = self._validate_and_export(done, row)
                self.rows.append(row)
                if export:
                    self._save_checkpoint(done)
                self._progress(row, done, start, time.perf_counter() - t_run)
            if start >= self.num_iterations:
                self._info("the checkpoint already reached num_iterations=%d; exporting its architecture",
                           self.num_iterations)
                summary = self._export(done, {"iteration": done})
        except KeyboardInterrupt:
            if self.world == 1 and done > start:
                logger.warning("interrupted after iteration %d; saving a checkpoint to resume from", done)
                self._save_checkpoint(done)
            raise
        finally:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        for p in self.network.parameters():  # leave the network as it came: everything trainable
            p.requires_grad_(True)
        self._info("search finished: %s", json.dumps({k: v for k, v in summary.items() if k != "op_counts"}))
        return summary

    def _info(self, msg: str, *args: Any) -> None:
        if self.is_main:
            logger.info(msg, *args)

    def _build_engine(self) -> BiLevelSearchEngine:
        train_network: nn.Module = self.network
        if self.world > 1:
            arch = arch_parameters(self.network)
            for p in arch:  # keep the logits out of DDP: their gradients are averaged by the engine
                p.requires_grad_(False)
            ids = [self.device.index] if self.device.type == "cuda" else None
            train_network = nn.parallel.DistributedDataParallel(
                self.network, device_ids=ids, find_unused_parameters=self.find_unused_parameters
            )
            for p in arch:
                p.requires_grad_(True)
        return BiLevelSearchEngine(
            self.network, self.loss_function, self.optimizer, self.arch_optimizer, self.memory_loss,
            train_network=train_network, amp=self.amp, sync_arch_grads=self.world > 1, **self.weights,
        )

    def _sync_arch(self) -> None:
        """Broadcast rank 0's logits; warn when a rank had drifted (it should not)."""
        if self.world == 1:
            return
        with torch.no_grad():
            for p in arch_parameters(self.network):
                mine = p.detach().clone()
                dist.broadcast(p.data, src=0)
                drift = float((mine - p).abs().max())
                if drift > 1e-5:
                    logger.warning("rank %d: architecture logits differed from rank 0's by %.3g; using rank 0's.",
                                   dist.get_rank(), drift)

    def _log_start(self, start: int) -> None:
        def _n(loader: Any) -> str:
            ds = getattr(loader, "dataset", None)
            return str(len(ds)) if ds is not None and hasattr(ds, "__len__") else "?"

        s = self.structure()
        params = sum(p.numel() for p in self.engine.weight_params)
        self._info(
            "DAST search: %d blocks x %d depths, ops %s, channel_mul %s, grid %d | %.2fM weights | cases: %s weights "
            "/ %s architecture / %s validation | %d iterations (%d warm-up), validation every %d | device %s x %d%s "
            "| config %s",
            s["num_blocks"], s["num_depths"], s["ops"], s["channel_mul"], s["grid"], params / 1e6,
            _n(self.train_loader), _n(self.arch_loader), _n(self.val_loader) if self.val_loader else "0",
            self.num_iterations, self.warmup_iterations, self.val_interval, self.device, self.world,
            " amp" if self.amp else "", self._config_hash,
        )
        if start:
            self._info("resumed from %s at iteration %d", self.output_dir / CHECKPOINT_FILE, start)

    # ------------------------------------------------------------------------------------------------- metrics
    def _memory_lambda(self) -> float | None:
        lam = getattr(self.memory_loss, "memory_lambda", None)
        return None if lam is None else float(lam)

    def _row(self, done: int, out: Mapping[str, float], searched: bool, seconds: float, lr: float) -> dict[str, Any]:
        row: dict[str, Any] = {"iteration": done, "phase": "search" if searched else "warmup", "lr": lr,
                               "seconds": round(seconds, 4)}
        row.update(out)
        if self.memory_loss is not None:
            if "memory_ratio" not in row and hasattr(self.memory_loss, "ratio"):
                with torch.no_grad():
                    row["memory_ratio"] = float(self.memory_loss.ratio())
            row["memory_lambda"] = self._memory_lambda()
        return row

    def _progress(self, row: Mapping[str, Any], done: int, start: int, elapsed: float) -> None:
        if self._writer is None and self.tensorboard and self.is_main:
            self._writer = self._open_tensorboard(start)
        if self._writer is not None:
            for key, value in row.items():
                if isinstance(value, (int, float)) and key not in ("iteration",) and math.isfinite(value):
                    self._writer.add_scalar(f"search/{key}", value, done)
        if not self.is_main or (done % self.log_interval and done != self.num_iterations):
            return
        eta = elapsed / max(done - start, 1) * (self.num_iterations - done)
        parts = [f"[{row['phase']}] iter {done:>{len(str(self.num_iterations))}}/{self.num_iterations}",
                 f"loss {row['loss']:.4f}"]
        if "arch_loss" in row:
            parts.append(f"arch {row['arch_loss']:.4f} ent {row['entropy_a']:.3f}/{row['entropy_c']:.3f} "
                         f"topo {row['topology']:.3f}" + (f" mem {row['memory']:.3f}" if "memory" in row else "")
                         + f" ramp {row['ramp']:.2f}")
        if row.get("memory_ratio") is not None:
            parts.append(f"memory ratio {row['memory_ratio']:.3f} (lambda {row['memory_lambda']:.3f})")
        if row.get("val_dice") is not None:
            parts.append(f"val dice {row['val_dice']:.4f}")
        if row.get("est_memory_gib") is not None:
            parts.append(f"decode {row['est_memory_gib']:.3f} GiB, {row['transformers']} transformers")
        parts.append(f"lr {row['lr']:.2e} | {row['seconds']:.2f} s/it | ETA {_fmt_time(eta)}")
        logger.info(" | ".join(parts))

    def _open_tensorboard(self, start: int) -> Any:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional
            logger.info("tensorboard is not installed; metrics go to %s only", self.output_dir / METRICS_FILE)
            self.tensorboard = False
            return None
        return SummaryWriter(log_dir=str(self.output_dir / "tensorboard"), purge_step=start + 1 if start else None)

    def _write_metrics(self) -> None:
        columns = list(_ROW_KEYS)
        columns += [f"val_dice_{c}" for c in range(1, self.num_classes)] + list(_EXPORT_KEYS)
        for row in self.rows:
            columns += [k for k in row if k not in columns]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n", restval="")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
        _atomic_write(self.output_dir / METRICS_FILE, lambda tmp: Path(tmp).write_text(buf.getvalue()))

    def _read_metrics(self, upto: int) -> list[dict[str, Any]]:
        path = self.output_dir / METRICS_FILE
        if not path.is_file():
            return []
        with open(path, newline="") as f:
            rows = [dict(r) for r in csv.DictReader(f)]
        kept = []
        for r in rows:
            try:
                if int(r.get("iteration", 0)) <= upto:
                    kept.append({k: v for k, v in r.items() if v != ""})
            except ValueError:
                continue
        return kept

    # ------------------------------------------------------------------------------------------------ validation
    def validate(self) -> dict[str, float]:
        """
        Sliding-window Dice of the current network on ``val_loader`` (summed over ranks).

        Returns:
            ``val_dice`` (mean over foreground classes) and ``val_dice_{c}`` per class (NaN for a class that no
            validation label contains); empty without a validation loader.
        """
        if self.val_loader is None:
            return {}
        nc = self.num_classes
        sums = torch.zeros(nc - 1, dtype=torch.float64, device=self.device)
        counts = torch.zeros(nc - 1, dtype=torch.float64, device=self.device)
        self.network.eval()
        try:
            with torch.no_grad(), (torch.autocast(self.device.type) if self.amp else contextlib.nullcontext()):
                for batch in self.val_loader:
                    image = torch.as_tensor(batch["image"]).to(self.device)
                    label = torch.as_tensor(batch["label"]).to(self.device)
                    logits = torch.as_tensor(self.inferer(image, self.network))
                    pred = one_hot(logits.argmax(1, keepdim=True), nc, dim=1)
                    dice = compute_dice(pred, one_hot(label.round().long(), nc, dim=1), include_background=False,
                                        ignore_empty=True).double()
                    valid = ~torch.isnan(dice)
                    sums += torch.where(valid, dice, torch.zeros_like(dice)).sum(0)
                    counts += valid.sum(0)
        finally:
            self.network.train()
        if self.world > 1:
            dist.all_reduce(sums)
            dist.all_reduce(counts)
        per_class = torch.where(counts > 0, sums / counts.clamp_min(1), torch.full_like(sums, float("nan")))
        present = per_class[~torch.isnan(per_class)]
        out = {f"val_dice_{c + 1}": float(v) for c, v in enumerate(per_class)}
        out["val_dice"] = float(present.mean()) if present.numel() else float("nan")
        return out

    # -------------------------------------------------------------------------------------- export / checkpoints
    def _validate_and_export(self, done: int, row: dict[str, Any]) -> dict[str, Any]:
        row.update(self.validate())
        val = row.get("val_dice")
        if val is not None and math.isfinite(val) and val > self.best["val_dice"]:
            self.best = {"val_dice": float(val), "iteration": done}
        return self._export(done, row)

    def _export(self, done: int, row: dict[str, Any]) -> dict[str, Any]:
        """Decode (within the budget), write ``arch_code.json`` and its iteration copy; adapt lambda if needed."""
        self._sync_arch()
        result = decode_within_budget(
            self.space, self.memory_budget_gib, self.train_patch_size, self.train_batch_size, self.arch_channel_mul,
            num_classes=self.num_classes,
        )
        arch = result.arch
        self._check_ranks_agree(arch, final=done == self.num_iterations)
        if result.penalty > 0 and done < self.num_iterations:
            self._tighten_lambda(result.plain_estimate)
        counts = arch.op_counts()
        row.update({"est_memory_gib": round(result.estimate / GIB, 4), "transformers": counts.get("transformer", 0),
                    "budget_penalty": result.penalty})
        val = row.get("val_dice")
        provenance = {
            "lambda": self._memory_lambda(),
            "config_hash": self._config_hash,
            "iteration": done,
            "num_iterations": self.num_iterations,
            "val_dice": None if val is None or not math.isfinite(val) else round(float(val), 6),
            "best_val_dice": round(self.best["val_dice"], 6) if self.best["val_dice"] >= 0 else None,
            "best_iteration": self.best["iteration"] or None,
            "estimated_memory_gib": round(result.estimate / GIB, 4),
            "train_patch_size": self.train_patch_size,
            "train_batch_size": self.train_batch_size,
            "memory_budget_gib": self.memory_budget_gib,
            "budget_penalty": result.penalty,
            "search_channel_mul": float(self.space.channel_mul),
            "search_patch_size": self.patch_size,
            "seed": self.seed,
            "world_size": self.world,
            "source": "dast_search",
        }
        path = self.ckpt_dir / ARCH_FILE
        if self.is_main:
            save_arch(path, arch, **provenance)
            save_arch(self.ckpt_dir / f"arch_code_iter{done:06d}.json", arch, **provenance)
            if done == self.num_iterations:
                self._info("architecture written to %s: %s, estimated %.3f GiB at patch %s batch %d",
                           path, counts, result.estimate / GIB, self.train_patch_size, self.train_batch_size)
                self._draw(arch, path.with_suffix(".png"))
        return {
            "arch_file": str(path), "iteration": done, "val_dice": provenance["val_dice"],
            "best_val_dice": provenance["best_val_dice"], "est_memory_gib": provenance["estimated_memory_gib"],
            "memory_lambda": provenance["lambda"], "op_counts": counts, "config_hash": self._config_hash,
        }

    def _draw(self, arch: Any, path: Path) -> None:
        """The architecture diagram next to the final ``arch_code.json`` (skipped, with a warning, without matplotlib)."""
        try:
            from dast_components.visualize import draw_architecture

            draw_architecture(arch, path, patch_size=self.train_patch_size, batch_size=self.train_batch_size)
            self._info("architecture diagram written to %s", path)
        except ImportError as err:
            logger.warning("no architecture diagram: %s (pip install 'dast_components[plot]')", err)

    def _check_ranks_agree(self, arch: Any, final: bool) -> None:
        """Every rank must have decoded the same architecture (they share rank 0's logits)."""
        if self.world == 1:
            return
        code = json.dumps([arch.node_a, arch.arch_code_a, arch.arch_code_c, list(arch.ops)])
        digest = hashlib.sha256(code.encode()).hexdigest()[:16]
        digests: list[Any] = [None] * self.world
        dist.all_gather_object(digests, digest)
        if len(set(digests)) > 1:
            raise RuntimeError(f"ranks decoded different architectures (digests by rank: {digests}).")
        if final:
            self._info("all %d ranks decoded the same architecture (digest %s)", self.world, digest)

    def _tighten_lambda(self, plain_estimate: int) -> None:
        """The plain decode exceeds the budget: lower lambda by the cells' overshoot (at most halving it)."""
        if self.memory_loss is None or self.memory_budget_gib is None:
            return
        table = cost_table(self.space, self.train_patch_size, self.arch_channel_mul)
        plain = self.space.decode_arch()
        if self.arch_channel_mul is not None:
            plain.channel_mul = self.arch_channel_mul
        cells = cell_elements(plain, table) * self.train_batch_size * 4
        fixed = plain_estimate - cells
        allowed = self.memory_budget_gib * GIB - fixed
        factor = min(1.0, max(0.5, allowed / cells)) if cells > 0 else 1.0
        old = float(self.memory_loss.memory_lambda)
        self.memory_loss.memory_lambda = old * factor
        self._info("the decode needs %.3f GiB > budget %.3f GiB: memory lambda %.4f -> %.4f",
                   plain_estimate / GIB, self.memory_budget_gib, old, self.memory_loss.memory_lambda)

    def _checkpoint_state(self, done: int) -> dict[str, Any]:
        return {
            "iteration": int(done),
            "network": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "arch_optimizer": self.arch_optimizer.state_dict(),
            "engine": self.engine.state_dict() if self.engine is not None else {},
            "lr_scheduler": self.lr_scheduler.state_dict() if self.lr_scheduler is not None else {},
            "memory_lambda": self._memory_lambda(),
            "best_val_dice": float(self.best["val_dice"]),
            "best_iteration": int(self.best["iteration"]),
            "structure": self.structure(),
            "settings": self._settings,
            "config_hash": self._config_hash,
        }

    def _save_checkpoint(self, done: int) -> None:
        if not self.is_main:
            return
        state = self._checkpoint_state(done)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.output_dir / CHECKPOINT_FILE, lambda tmp: torch.save(state, tmp))
        self._write_metrics()

    def _fresh_start(self) -> int:
        path = self.output_dir / CHECKPOINT_FILE
        if path.is_file():
            self._info("starting a new search; %s will be overwritten (pass --resume true to continue it)", path)
        return 0

    def _load_checkpoint(self) -> int:
        path = self.output_dir / CHECKPOINT_FILE
        if not path.is_file():
            logger.warning("resume requested but %s does not exist; starting from iteration 0", path)
            return 0
        state = torch.load(path, map_location=self.device, weights_only=True)
        theirs, mine = state.get("structure", {}), self.structure()
        diff = {k: (theirs.get(k), v) for k, v in mine.items() if theirs.get(k) != v}
        if diff:
            detail = ", ".join(f"{k}: checkpoint {a!r} vs config {b!r}" for k, (a, b) in diff.items())
            raise InputError(f"cannot resume from {path}: its search space differs ({detail}). Use another "
                             "output_dir or set resume to false to start over.")
        self._check_same_settings(path, state)
        self.network.load_state_dict(state["network"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.arch_optimizer.load_state_dict(state["arch_optimizer"])
        if self.engine is not None:
            self.engine.load_state_dict(state.get("engine", {}))
        if self.lr_scheduler is not None and state.get("lr_scheduler"):
            self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        if self.memory_loss is not None and state.get("memory_lambda") is not None:
            self.memory_loss.memory_lambda = float(state["memory_lambda"])
        self.best = {"val_dice": float(state.get("best_val_dice", -1.0)),
                     "iteration": int(state.get("best_iteration", 0))}
        done = int(state["iteration"])
        self.rows = self._read_metrics(done)
        return done

    def _check_same_settings(self, path: Path, state: Mapping[str, Any]) -> None:
        """Resuming continues the *same* search: stop, listing them, when the settings differ from the checkpoint's.

        The settings are those of :meth:`description` (learning rates, memory lambda and budget, loss weights,
        warm-up, patch and batch sizes, seed) as configured when the search started; values the search adapts
        itself (the learning-rate schedule, lambda under a budget) are restored from the checkpoint. Only
        ``num_iterations`` may change, so that a search can be extended.
        """
        theirs = state.get("settings")
        how = ("Resume with the settings the search was started with, or start a new search with --resume false "
               "(or another --output_dir).")
        if not isinstance(theirs, Mapping):
            if state.get("config_hash") != self._config_hash:
                raise InputError(f"cannot resume from {path}: it was written with other settings (config hash "
                                 f"{state.get('config_hash')}, now {self._config_hash}) and does not record which. "
                                 + how)
            return
        old, new = _flatten(theirs), _flatten(self._settings)
        if old.get("num_iterations") != new.get("num_iterations"):
            self._info("resuming with num_iterations %s -> %s (the learning-rate milestones stay the checkpoint's)",
                       old.get("num_iterations"), new.get("num_iterations"))
        diff = [f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
                if k not in _RESUMABLE_CHANGES and old.get(k) != new.get(k)]
        if diff:
            raise InputError(f"cannot resume from {path}: settings differ from the checkpoint's (checkpoint -> now): "
                             + "; ".join(diff) + ". " + how)

