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
"""Pieces of the retraining workflow (``bundles/dast_kits19_seg/configs/train.json``) that MONAI lacks.

- :func:`epochs_for_iterations`: the paper counts training in iterations; MONAI trainers (and MONAI Label, which
  overrides ``train#trainer#max_epochs``) count epochs.
- :class:`IterationValidation`: validation every ``val_interval`` **iterations** and after the last one, so the
  schedule reads the same whatever the size of the training list (and the same as in the search bundle).
- :func:`training_intensity`: the intensity window of whatever training list the workflow got: the cached
  fold statistics of ``prepare_kits19_data`` for the bundle's own split, or percentiles of a list passed in from
  outside (MONAI Label replaces ``train#dataset#data``).
- :class:`WeightRecord`: writes ``<stem>.json`` next to each weight file whenever the file is (re)written: the
  intensity window, spacing, architecture and fold the weights were trained with. The weight files themselves are
  plain state dicts (the Model Zoo convention); :class:`CheckpointRecord` is the 0.1.0 way (values inside the
  checkpoint), kept for reading older runs.
- :class:`AtomicCheckpointSaver`: MONAI's ``CheckpointSaver`` whose files are replaced atomically, so a crash
  while saving a new best model never loses the previous one.
- :class:`TrainingLog`: one CSV row per epoch with the training loss and the latest validation metrics.
- :func:`handlers_for_rank`: under ``torchrun`` only rank 0 logs and writes files.
- :func:`check_patch_size`, :func:`cache_memory_rate`: start-up checks (patch a multiple of the network stride;
  cached volumes fit in memory instead of the kernel killing the process).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ignite.distributed as idist
from ignite.engine import Events
from ignite.handlers.checkpoint import BaseSaveHandler
from monai.handlers import CheckpointSaver, ValidationHandler

from dast_components.data import foreground_percentiles, prepare_kits19_data, warn_uncovered_classes
from dast_components.data.checks import write_json_atomic
from dast_components.errors import InputError
from dast_components.utils import atomic_path, check_patch_size

__all__ = [
    "AtomicCheckpointSaver",
    "AtomicDiskSaver",
    "CheckpointRecord",
    "IterationValidation",
    "TrainingLog",
    "WeightRecord",
    "cache_memory_rate",
    "check_patch_size",
    "epochs_for_iterations",
    "handlers_for_rank",
    "training_intensity",
]

logger = logging.getLogger(__name__)

_RANK0_ONLY = (
    "StatsHandler",
    "TensorBoardStatsHandler",
    "TensorBoardImageHandler",
    "CheckpointSaver",
    "AtomicCheckpointSaver",
    "MetricsSaver",
    "ClassificationSaver",
    "MLFlowHandler",
    "TrainingLog",
    "KiTS19ReportHandler",
    "WeightRecord",
)


def epochs_for_iterations(num_iterations: int, iterations_per_epoch: int) -> int:
    """Number of epochs that covers ``num_iterations`` optimiser steps (rounded up).

    Args:
        num_iterations: requested number of iterations (the paper's 40,000), >= 1.
        iterations_per_epoch: iterations in one epoch of this process, i.e. ``len(train_dataloader)`` (under
            ``torchrun`` that is per rank, so every rank takes ``num_iterations`` steps). Must be >= 1.

    Returns:
        ``ceil(num_iterations / iterations_per_epoch)``.
    """
    if int(num_iterations) < 1:
        raise InputError(f"num_iterations must be >= 1, got {num_iterations}.")
    if int(iterations_per_epoch) < 1:
        raise InputError(
            f"the training dataloader yields {iterations_per_epoch} batches per epoch; the training list is empty "
            "or smaller than batch_size with drop_last."
        )
    epochs = math.ceil(int(num_iterations) / int(iterations_per_epoch))
    logger.info("%d iterations at %d iterations per epoch -> %d epochs", num_iterations, iterations_per_epoch, epochs)
    return epochs


class IterationValidation(ValidationHandler):
    """Run the validator every ``interval`` training iterations and after the last iteration of the run.

    MONAI's ``ValidationHandler`` counts epochs by default, and an epoch is ``len(train_dataloader)`` iterations:
    with one training case that is one iteration, with 168 cases at batch 2 it is 84, so the same setting validated
    at wildly different rates. Counting iterations makes ``val_interval`` mean the same for any training list (and
    the same as the search bundle's ``val_interval``). The last iteration (``max_epochs * epoch_length``, also when
    MONAI Label sets ``max_epochs``) always validates, so the best checkpoint sees the final weights.

    Args:
        interval: training iterations between validations, >= 1.
        validator: the evaluator to run (``validate#evaluator``).

    Example::

        IterationValidation(interval=1000, validator=evaluator).attach(trainer)
        # train.json: {"_target_": "dast_components.training.IterationValidation",
        #              "validator": "@validate#evaluator", "interval": "@val_interval"}
    """

    def __init__(self, interval: int, validator: Any = None) -> None:
        if int(interval) < 1:
            raise InputError(f"val_interval must be >= 1 (training iterations between validations), got {interval}.")
        super().__init__(interval=int(interval), validator=validator, epoch_level=False)

    def due(self, engine: Any, iteration: int) -> bool:
        """Whether ``iteration`` (1-based, of ``engine``) validates: a multiple of ``interval`` or the run's last."""
        last = (engine.state.max_epochs or 0) * (engine.state.epoch_length or 0)
        return iteration % self.interval == 0 or iteration == last

    def attach(self, engine: Any) -> None:
        """Register on ``engine`` (the trainer) at ``ITERATION_COMPLETED`` filtered by :meth:`due`."""

        engine.add_event_handler(Events.ITERATION_COMPLETED(event_filter=self.due), self)


def _available_memory() -> int:
    """Bytes of memory available to new allocations (``MemAvailable`` of /proc/meminfo, else physical memory)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def cache_memory_rate(
    items: Sequence[Mapping[str, Any]],
    pixdim: Sequence[float],
    cache_rate: float,
    bytes_per_voxel: int = 5,
    fraction: float = 0.8,
    available: int | None = None,
) -> float:
    """Check that caching ``cache_rate`` of ``items`` after resampling to ``pixdim`` fits in memory.

    ``CacheDataset`` holding more than the machine has ends in a silent SIGKILL by the kernel; this raises a
    clear error before caching instead. The size of each case at ``pixdim`` is computed from its NIfTI header
    (nothing is loaded). Under ``torchrun`` every process of the node caches its own copy, so the need is multiplied
    by ``LOCAL_WORLD_SIZE``.

    Args:
        items: entries ``{"image": path, ...}``.
        pixdim: target voxel size in mm.
        cache_rate: requested fraction of cases to cache, in [0, 1].
        bytes_per_voxel: cached bytes per voxel (float32 image + uint8 label = 5). Defaults to 5.
        fraction: share of the available memory that caching may use. Defaults to 0.8.
        available: available bytes; defaults to ``MemAvailable`` of ``/proc/meminfo``.

    Returns:
        ``cache_rate`` unchanged when it fits.

    Raises:
        ValueError: when it does not fit; the message gives the largest ``cache_rate`` that does.
    """
    import nibabel as nib
    import numpy as np

    if not 0.0 <= float(cache_rate) <= 1.0:
        raise InputError(f"cache_rate must be in [0, 1], got {cache_rate}.")
    if float(cache_rate) == 0.0 or not items:
        return float(cache_rate)
    voxels = []
    for item in items:
        header = nib.load(str(item["image"])).header
        extent = np.asarray(header.get_data_shape()[:3], dtype=float) * np.asarray(header.get_zooms()[:3], dtype=float)
        voxels.append(float(np.prod(np.ceil(extent / np.asarray(pixdim, dtype=float)))))
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    per_case = float(np.mean(voxels)) * bytes_per_voxel * processes
    num_cached = int(len(items) * float(cache_rate))
    need = per_case * num_cached
    budget = fraction * (_available_memory() if available is None else available)
    if need > budget:
        fits = max(0.0, math.floor(100 * budget / (per_case * len(items))) / 100)
        raise InputError(
            f"caching {num_cached} of {len(items)} cases at {list(pixdim)} mm needs about {need / 2**30:.1f} GiB "
            f"({processes} process(es) on this node), but {budget / 2**30:.1f} GiB ({fraction:.0%} of the available "
            f"memory) is the limit; pass --cache_rate {fits} (or add memory) to avoid the process being killed."
        )
    logger.info("caching %d cases needs about %.1f GiB of %.1f GiB allowed", num_cached, need / 2**30, budget / 2**30)
    return float(cache_rate)


def _normalised(items: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    return sorted(tuple(os.path.normpath(os.path.abspath(str(it[k]))) for k in ("image", "label")) for it in items)


def training_intensity(
    items: Sequence[Mapping[str, Any]],
    dataset_dir: str | os.PathLike | None = None,
    fold: int = 0,
    num_folds: int = 5,
    seed: int = 0,
    num_classes: int = 3,
    cache_dir: str | os.PathLike | None = None,
    output_dir: str | os.PathLike | None = None,
) -> dict[str, float]:
    """Foreground intensity window (5th/95th percentiles) of the training list ``items``.

    When ``dataset_dir`` is a KiTS19 folder whose ``fold`` split has exactly ``items`` as training cases, the
    statistics cached by :func:`dast_components.data.prepare_kits19_data` are used (nothing is recomputed).
    Otherwise (e.g. MONAI Label passes its own list as ``train#dataset#data``) the percentiles of ``items`` are
    computed and cached in ``output_dir`` under a name derived from the list.

    Args:
        items: training entries ``{"image": path, "label": path}``.
        dataset_dir, fold, num_folds, seed, num_classes, cache_dir: as for ``prepare_kits19_data``.
        output_dir: folder for the cache of externally given lists (and prepare's fallback cache folder).

    Returns:
        ``{"lower": float, "upper": float}``.
    """
    if len(items) == 0:
        raise InputError("the training list is empty: no intensity statistics can be computed.")
    wanted = _normalised(items)
    if dataset_dir is not None and Path(dataset_dir).is_dir():
        try:
            prepared = prepare_kits19_data(
                dataset_dir, fold=fold, num_folds=num_folds, cache_dir=cache_dir, num_classes=num_classes,
                seed=seed, output_dir=output_dir,
            )
        except ValueError as err:
            logger.info("no cached statistics from dataset_dir %s (%s); computing them from the list", dataset_dir, err)
        else:
            if _normalised(prepared["training"]) == wanted:
                return {"lower": float(prepared["intensity"]["lower"]), "upper": float(prepared["intensity"]["upper"])}
    if output_dir is None:
        raise InputError("training_intensity needs output_dir to cache the statistics of a training list given from "
                         "outside the bundle's split.")
    digest = hashlib.sha256(json.dumps(wanted).encode()).hexdigest()[:16]
    path = Path(output_dir) / f"dast_intensity_{digest}.json"
    if path.is_file() and "classes" in (cached := json.loads(path.read_text())):
        logger.info("reusing intensity window %s", path)
    else:
        stats = foreground_percentiles(list(items), num_classes=num_classes)
        cached = {"cases": [list(p) for p in wanted], **stats}
        write_json_atomic(path, cached)
    warn_uncovered_classes(cached, source=str(path))
    return {"lower": float(cached["lower"]), "upper": float(cached["upper"])}


class CheckpointRecord:
    """Plain values saved in a checkpoint next to the weights (anything ``torch.load(weights_only=True)`` reads).

    Ignite's ``Checkpoint`` (used by MONAI's ``CheckpointSaver``) saves objects through ``state_dict()``; put an
    instance in ``save_dict`` under a key of its own, e.g. ``{"model": net, "bundle": CheckpointRecord(...)}``.

    Args:
        values: JSON-like values (numbers, strings, lists, dicts, ``None``).

    Example::

        record = CheckpointRecord(intensity={"lower": -54.0, "upper": 242.0}, pixdim=[1.0, 1.0, 1.0], fold=0)
    """

    def __init__(self, **values: Any) -> None:
        self.values = values

    def state_dict(self) -> dict[str, Any]:
        """The stored values."""
        return dict(self.values)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Replace the stored values."""
        self.values = dict(state)


class AtomicDiskSaver(BaseSaveHandler):
    """Ignite save handler writing each checkpoint to a temporary file and moving it over the target (``os.replace``).

    Ignite's ``Checkpoint`` removes the file it replaces *before* saving the new one, and MONAI's ``CheckpointSaver``
    writes in place, so a process killed while saving a new best ``model.pt`` left no weights or a truncated file.
    Here the new file is written (and flushed to disk) under a temporary name, moved over the target in one step,
    and files ignite asked to remove are deleted only after that, unless they are the file just written. The first
    save also deletes the temporary files a killed process left beside its target. Only rank 0 writes under
    ``torch.distributed``.

    Args:
        dirname: folder of the checkpoints (created if missing).
        filename: fixed file name used for every save (``CheckpointSaver``'s ``key_metric_filename``); ``None``:
            the name ignite makes up.
    """

    def __init__(self, dirname: str | os.PathLike, filename: str | None = None) -> None:
        self.dirname = Path(dirname)
        self.filename = filename
        self._pending: list[str] = []
        self._started = time.time()
        self._swept = False

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        import torch

        if idist.get_rank() != 0:
            return
        name = self.filename or filename
        self.dirname.mkdir(parents=True, exist_ok=True)
        if not self._swept:  # temporary files of a process killed while saving, before this one started
            for stale in self.dirname.glob(f".{name}.*.tmp*"):
                if stale.stat().st_mtime < self._started:
                    stale.unlink(missing_ok=True)
            self._swept = True
        with atomic_path(self.dirname / name) as tmp:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
        for old in self._pending:
            if old != name and (self.dirname / old).is_file():
                (self.dirname / old).unlink()
        self._pending = []

    def remove(self, filename: str) -> None:
        """Delete ``filename`` after the next save has put its replacement in place."""
        self._pending.append(self.filename or filename)


class AtomicCheckpointSaver(CheckpointSaver):
    """``monai.handlers.CheckpointSaver`` (same arguments) whose every file is replaced atomically.

    The ``save_handler`` of each of its ignite ``Checkpoint`` objects is an :class:`AtomicDiskSaver`: a checkpoint
    is complete on disk before it replaces the previous one, and the previous one is removed only after that. Use it
    as ``"_target_": "dast_components.training.AtomicCheckpointSaver"`` in place of ``CheckpointSaver``.

    Two differences in behaviour: ``interval_filename`` gives the interval checkpoint a fixed name (MONAI's names it
    by epoch), so the interval and the final checkpoint can be one resumable file; and an exception never saves
    (MONAI's ``save_final`` saves on ``EXCEPTION_RAISED``): a run that fails, e.g. a refused resume or an
    interrupted iteration whose step is half done, never overwrites the last complete checkpoint, from which the run
    resumes.

    Args:
        interval_filename: fixed file name of the interval checkpoint (``None``: MONAI's).
        args, kwargs: those of ``monai.handlers.CheckpointSaver``.

    Example::

        AtomicCheckpointSaver("models", {"model": net}, save_key_metric=True, key_metric_filename="model.pt")
    """

    def __init__(self, *args: Any, interval_filename: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for attr in ("_final_checkpoint", "_key_metric_checkpoint", "_interval_checkpoint"):
            checkpoint = getattr(self, attr, None)
            if checkpoint is not None:  # keep the fixed file name MONAI's own saver was given
                name = getattr(checkpoint.save_handler, "filename", None)
                if attr == "_interval_checkpoint":
                    name = interval_filename
                checkpoint.save_handler = AtomicDiskSaver(self.save_dir, name)

    def exception_raised(self, engine: Any, e: Exception) -> None:
        """Re-raise without saving: the last complete checkpoint stays the one to resume from."""
        raise e


class WeightRecord:
    """Ignite handler writing the training record ``<ckpt_dir>/<stem>.json`` next to each weight file
    ``<ckpt_dir>/<stem>.pt`` whenever that file was (re)written since the handler last looked.

    Attach it to the validation evaluator after the ``CheckpointSaver`` handlers: at the end of each validation it
    compares the modification time and size of each weight file with what it saw before and, for each one that
    changed, writes the record atomically. So the weights stay a plain state dict (what the Model Zoo's
    ``ckpt_export`` and MONAI Label load), and the preprocessing they need travels beside them
    (:func:`dast_components.inference.read_record`).

    Args:
        ckpt_dir: folder of the weight files.
        filenames: the weight file names to watch, e.g. ``["model_fold0.pt", "model.pt"]``; ``None`` entries
            (a disabled saver) are ignored.
        values: JSON values to record (``intensity``, ``pixdim``, ``fold``, ``arch`` ...).

    Example::

        WeightRecord("models", ["model.pt"], intensity={"lower": -54.0, "upper": 242.0}, pixdim=[1.0, 1.0, 1.0])
    """

    def __init__(self, ckpt_dir: str | os.PathLike, filenames: Sequence[str | None], **values: Any) -> None:
        self.ckpt_dir = Path(ckpt_dir)
        self.filenames = [str(f) for f in filenames if f]
        for name in self.filenames:
            if not name.endswith(".pt"):
                raise InputError(f"WeightRecord watches .pt files, got {name!r}.")
        self.values = dict(values)
        json.dumps(self.values)  # fail at start-up, not after the first validation, on a value JSON cannot hold
        self._stamps: dict[str, tuple[int, int] | None] = {}

    def _stamp(self, name: str) -> tuple[int, int] | None:
        try:
            stat = (self.ckpt_dir / name).stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size

    def attach(self, engine: Any) -> None:
        """Register on ``engine`` (the validation evaluator); the files present now count as seen."""

        self._stamps = {name: self._stamp(name) for name in self.filenames}
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Any = None) -> list[Path]:
        """Write the record of every watched weight file that changed; returns the records written."""
        written = []
        for name in self.filenames:
            stamp = self._stamp(name)
            if stamp is None or stamp == self._stamps.get(name):
                continue
            path = (self.ckpt_dir / name).with_suffix(".json")
            write_json_atomic(path, {"weights": name, **self.values})
            self._stamps[name] = stamp
            written.append(path)
            logger.info("training record %s written next to %s", path, name)
        return written


class TrainingLog:
    """Ignite handler writing ``{output_dir}/{filename}``: one row per epoch with epoch, iteration, mean training
    loss (or the means of chosen output values), learning rate, and the validation metrics of that epoch (empty
    when no validation ran). Both bundles log through it: the retraining's ``training_log_fold*.csv`` and the
    search's ``metrics.csv`` (one epoch is one iteration there).

    The file is rewritten atomically at every epoch, so it is always a complete CSV. Attach it to the trainer after
    the ``ValidationHandler`` so that the epoch's validation has run. When the trainer starts at an iteration other
    than 0 (``CheckpointLoader`` resumed it; attach this handler after the loader), the rows of the existing file up
    to that iteration are kept and later ones, written after the checkpoint, are dropped.

    Args:
        output_dir: folder of the CSV file.
        evaluator: the validation evaluator whose ``state.metrics`` are logged (``None``: no validation columns).
        optimizer: optimiser whose first param group's ``lr`` is logged (``None``: no lr column).
        filename: CSV file name. Defaults to ``"training_log.csv"``.
        loss_key: key of the loss in the trainer output items. Defaults to ``"loss"``.
        output_keys: ``None``: log the mean of ``loss_key`` as ``train_loss``; else the mean of each of these
            numeric keys of a dict output under its own name (``["*"]``: every numeric key).
        write_interval: rewrite the file every this many epochs (and when the run completes or stops); the search,
            whose epoch is one iteration, writes at its checkpoint interval so the file does not grow quadratically.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        evaluator: Any = None,
        optimizer: Any = None,
        filename: str = "training_log.csv",
        loss_key: str = "loss",
        output_keys: Sequence[str] | None = None,
        write_interval: int = 1,
    ) -> None:
        if int(write_interval) < 1:
            raise InputError(f"write_interval must be >= 1, got {write_interval}.")
        self.write_interval = int(write_interval)
        self.path = Path(output_dir) / filename
        self.evaluator = evaluator
        self.optimizer = optimizer
        self.loss_key = loss_key
        self.output_keys = None if output_keys is None else [str(k) for k in output_keys]
        self.rows: list[dict[str, Any]] = []
        self._losses: list[float] = []
        self._values: dict[str, list[float]] = {}
        self._pending_val: dict[str, float] = {}

    def attach(self, engine: Any) -> None:
        """Register on ``engine`` (the trainer)."""

        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)
        engine.add_event_handler(Events.COMPLETED, self._write)
        engine.add_event_handler(Events.TERMINATE, self._write)
        if self.evaluator is not None:
            self.evaluator.add_event_handler(Events.COMPLETED, self._validated)

    def _validated(self, evaluator: Any) -> None:
        self._pending_val = {k: float(v) for k, v in evaluator.state.metrics.items() if isinstance(v, (int, float))}

    def _started(self, engine: Any) -> None:
        start = int(engine.state.iteration or 0)
        self.rows = []
        if start and self.path.is_file():  # resumed: keep the rows the checkpoint had seen
            with open(self.path, newline="", encoding="utf-8") as f:
                for row in csv.DictReader(f):
                    try:
                        if int(row.get("iteration") or 0) <= start:
                            self.rows.append({k: v for k, v in row.items() if v not in ("", None)})
                    except ValueError:
                        continue

    def _epoch_started(self, engine: Any) -> None:
        self._losses = []
        self._values = {}

    def _iteration_completed(self, engine: Any) -> None:
        output = engine.state.output
        items = output if isinstance(output, (list, tuple)) else [output]
        for item in items:
            if not isinstance(item, Mapping):
                continue
            if self.output_keys is not None:
                keys = [k for k in item if "*" in self.output_keys or k in self.output_keys]
                for k in keys:
                    if isinstance(item[k], (int, float)) and not isinstance(item[k], bool):
                        self._values.setdefault(k, []).append(float(item[k]))
                break
            if self.loss_key in item:
                self._losses.append(float(item[self.loss_key]))
                break

    def _epoch_completed(self, engine: Any) -> None:
        row: dict[str, Any] = {"epoch": engine.state.epoch, "iteration": engine.state.iteration}
        if self.output_keys is None:
            row["train_loss"] = sum(self._losses) / len(self._losses) if self._losses else float("nan")
        else:
            row.update({k: v[0] if len(v) == 1 else sum(v) / len(v) for k, v in self._values.items()})
        if self.optimizer is not None:
            row["learning_rate"] = self.optimizer.param_groups[0]["lr"]
        row.update(self._pending_val)
        self._pending_val = {}
        self.rows.append(row)
        if engine.state.epoch % self.write_interval == 0:
            self._write()

    def _write(self, engine: Any = None) -> None:
        """Rewrite the CSV atomically with every row so far."""
        if not self.rows:
            return
        columns: list[str] = []
        for r in self.rows:
            columns += [c for c in r if c not in columns]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n", restval="")
        writer.writeheader()
        writer.writerows(self.rows)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path) as tmp:
            tmp.write_text(buf.getvalue(), encoding="utf-8")


def handlers_for_rank(handlers: Sequence[Any] | None, rank: int | None = None) -> list[Any]:
    """The handlers a process should attach: all on rank 0; on other ranks, none that log or write files.

    Kept on every rank: everything else (``ValidationHandler`` must run on all ranks, since validation is
    distributed; ``CheckpointLoader`` loads the same weights everywhere).

    Args:
        handlers: the configured handler list (``None`` allowed).
        rank: process rank; defaults to ``torch.distributed.get_rank()`` when initialised, else 0.

    Returns:
        the filtered list.
    """
    if rank is None:
        rank = idist.get_rank()
    handlers = [h for h in (handlers or []) if h is not None]
    if rank == 0:
        return handlers
    return [h for h in handlers if type(h).__name__ not in _RANK0_ONLY]
