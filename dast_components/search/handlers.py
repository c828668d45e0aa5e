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
The search's own ignite handlers (everything else in ``search.json`` is a MONAI or ignite handler).

- :class:`ArchitectureExport`: after every validation (and at the end) decodes the architecture within the memory
  budget and writes ``{ckpt_dir}/arch_code.json`` and ``{ckpt_dir}/arch_code_iter{N:06d}.json`` (rank 0,
  atomically); sets lambda from an absolute budget at the start; and is the checkpoint's ``"search"`` entry: the
  trainer's counters, lambda, the best Dice and the search settings, which a resumed search must share.
- :class:`SearchProgress`: the console line of ``StatsHandler(iteration_print_logger=...)``: phase, losses, memory
  ratio, validation Dice, decode, learning rate, seconds per iteration, ETA.
- :func:`resume_from`: whether ``CheckpointLoader`` should load the checkpoint (says why not when it will not).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
import torch.distributed as dist
from ignite.engine import Engine, Events

from dast_components.errors import InputError
from dast_components.networks.arch_io import save_arch
from dast_components.search.budget import GIB, budget_to_lambda, cell_elements, cost_table, decode_within_budget
from dast_components.search.step import arch_parameters
from dast_components.utils import as_bool, check_patch_size
from dast_components.visualize import draw_architecture

__all__ = ["ARCH_FILE", "ArchitectureExport", "SearchProgress", "resume_from"]

logger = logging.getLogger(__name__)

ARCH_FILE = "arch_code.json"
#: settings that may differ from the checkpoint's when resuming (the others stop the run)
_RESUMABLE_CHANGES = ("num_iterations",)


def resume_from(path: str | os.PathLike, resume: bool) -> bool:
    """
    Whether the search resumes from checkpoint ``path`` (the ``_disabled_`` test of the bundle's ``CheckpointLoader``).

    Logs what happens: a missing checkpoint with ``resume`` true starts from iteration 0 (warning); an existing one
    with ``resume`` false is overwritten by the new search (info).

    ``resume`` may be a bool or the strings the bundle CLI passes (``true``/``false``, any case). Whether the
    checkpoint belongs to this search is checked by :class:`ArchitectureExport` (its ``resume_checkpoint``) before
    the run starts.
    """
    resume = as_bool(resume, "resume")
    exists = Path(path).is_file()
    if resume and not exists:
        logger.warning("resume requested but %s does not exist; starting from iteration 0", path)
    elif exists and not resume and idist.get_rank() == 0:
        logger.info("starting a new search; %s will be overwritten (pass --resume true to continue it)", path)
    return bool(resume) and exists


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


def _groups(opt: torch.optim.Optimizer) -> list[dict[str, Any]]:
    keep = ("lr", "momentum", "weight_decay", "betas", "nesterov")
    return [{k: (list(g[k]) if isinstance(g[k], tuple) else g[k]) for k in keep if k in g} for g in opt.param_groups]


class ArchitectureExport:
    """
    Export the decoded architecture after each validation and at the end; keep it within the memory budget.

    Attach it to the :class:`~dast_components.search.trainer.DASTSearchTrainer` after ``CheckpointLoader`` and
    ``IterationValidation``. With an ``evaluator`` it exports when that evaluator completes (its metrics go into the
    provenance and, with the decode's estimate, into the trainer's ``state.output`` for the logs); without one every
    ``interval`` iterations. It always exports after the last iteration. Put it in the checkpoint's ``save_dict``
    and ``load_dict`` as ``"search"`` (first): its state holds the trainer's counters, so the checkpoint does not
    need to reference the trainer, whose handlers reference the checkpoint.

    Args:
        ckpt_dir: folder of ``arch_code.json`` and its per-iteration copies.
        evaluator: the validation evaluator (``None``: no validation, export every ``interval`` iterations).
        interval: export interval without an evaluator.
        memory_budget_gib: absolute training-memory budget in GiB at ``train_patch_size`` / ``train_batch_size``
            and ``arch_channel_mul``; it sets lambda at the start and every export is kept within it.
        train_patch_size: patch of the retraining, where memory estimates and the budget apply.
        train_batch_size: batch of the retraining.
        arch_channel_mul: width recorded in the exported architecture (``None``: the search width).
        patch_size: the search patch (recorded).
        num_classes: classes including background.
        seed: recorded in the provenance.
        key_metric: the evaluator's Dice metric (``MeanDice`` with ``save_details``): its per-volume, per-class
            values give ``val_dice_1`` ... (each class averaged over the volumes that contain it) and ``val_dice``
            (their mean over the classes present), as the search has always reported them.
        draw: also draw ``arch_code.png`` at the end (needs matplotlib; skipped with a warning otherwise).
        resume_checkpoint: the checkpoint the run will resume from (``None``: a new search). It is checked when the
            handler is attached, before the run: a checkpoint of another search or of dast_search 0.2.x stops the
            bundle with one line listing why.
    """

    def __init__(
        self,
        ckpt_dir: str | os.PathLike,
        evaluator: Engine | None = None,
        interval: int = 100,
        memory_budget_gib: float | None = None,
        train_patch_size: Sequence[int] | None = None,
        train_batch_size: int = 2,
        arch_channel_mul: float | None = None,
        patch_size: Sequence[int] | None = None,
        num_classes: int = 3,
        seed: int | None = None,
        key_metric: str = "val_dice",
        draw: bool = True,
        resume_checkpoint: str | os.PathLike | None = None,
    ) -> None:
        if memory_budget_gib is not None and float(memory_budget_gib) <= 0:
            raise InputError(f"memory_budget_gib must be a positive number of GiB or null, got {memory_budget_gib}.")
        if int(num_classes) < 2:
            raise InputError(f"num_classes must be >= 2 (background included), got {num_classes}.")
        if int(interval) < 1:
            raise InputError(f"val_interval must be >= 1, got {interval}.")
        self.ckpt_dir = Path(ckpt_dir)
        self.evaluator = evaluator
        self.interval = int(interval)
        self.memory_budget_gib = None if memory_budget_gib is None else float(memory_budget_gib)
        self.train_patch_size = None if train_patch_size is None else [int(s) for s in train_patch_size]
        self.train_batch_size = int(train_batch_size)
        self.arch_channel_mul = None if arch_channel_mul is None else float(arch_channel_mul)
        self.patch_size = None if patch_size is None else [int(s) for s in patch_size]
        self.num_classes = int(num_classes)
        self.seed = seed
        self.key_metric = key_metric
        self.draw = bool(draw)
        self.resume_checkpoint = None if resume_checkpoint is None else Path(resume_checkpoint)
        self.budget_lambda: float | None = None
        self.best = {"val_dice": -1.0, "iteration": 0}
        self.summary: dict[str, Any] = {}
        self.trainer: Any = None
        self._last_export = -1

    # --------------------------------------------------------------------------------------------------- setup
    def attach(self, engine: Engine) -> None:
        """Register on ``engine`` (the search trainer) and, when given, on the evaluator."""
        self.trainer = engine
        self.space = engine.network.dints_space
        self.memory_loss = engine.memory_loss
        if self.memory_budget_gib is not None and self.memory_loss is None:
            raise InputError("memory_budget_gib needs a memory_loss to steer the search towards it.")
        stride = self.space.stride
        if self.patch_size is not None:
            self.patch_size = check_patch_size(self.patch_size, stride, "patch_size")
        self.train_patch_size = check_patch_size(self.train_patch_size or self.patch_size or [stride] * 3, stride,
                                                 "train_patch_size")
        self.settings = self.description()
        self.config_hash = hashlib.sha256(json.dumps(self.settings, sort_keys=True, default=str).encode()).hexdigest()[
            :16]
        if self.memory_budget_gib is not None:  # an impossible budget stops the bundle here, not inside the run
            self.budget_lambda = budget_to_lambda(self.space, self.memory_budget_gib, self.train_patch_size,
                                                  self.train_batch_size, self.arch_channel_mul,
                                                  num_classes=self.num_classes)
        if self.resume_checkpoint is not None and self.resume_checkpoint.is_file():
            state = torch.load(self.resume_checkpoint, map_location="cpu", weights_only=True)
            if not isinstance(state.get("search"), Mapping):
                raise InputError(f"cannot resume from {self.resume_checkpoint}: it was written by dast_search 0.2.x "
                                 "(no 'search' entry), whose checkpoints do not resume in 0.3.0. Start a new search "
                                 "with --resume false (or another --output_dir).")
            self._check_resumable(state["search"], str(self.resume_checkpoint), announce=False)
        engine.add_event_handler(Events.STARTED, self._started)
        if self.evaluator is not None:
            self.evaluator.add_event_handler(Events.COMPLETED, self._validated)
        else:
            engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.interval), self._exported)
        engine.add_event_handler(Events.COMPLETED, self._completed)

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
        t = self.trainer
        return {
            "structure": self.structure(),
            "patch_size": self.patch_size, "train_patch_size": self.train_patch_size,
            "train_batch_size": self.train_batch_size, "arch_channel_mul": self.arch_channel_mul,
            "num_iterations": t.num_iterations, "warmup_iterations": t.warmup_iterations,
            "memory_lambda": float(getattr(self.memory_loss, "memory_lambda", 0.0) or 0.0),
            "memory_budget_gib": self.memory_budget_gib, **t.loss_weights,
            "optimizer": _groups(t.step_fn.optimizer), "arch_optimizer": _groups(t.step_fn.arch_optimizer),
            "num_classes": self.num_classes, "seed": self.seed,
            # only when set, so that searches without it keep their config_hash
            **({"ramp_iterations": t.ramp_iterations} if getattr(t, "ramp_iterations", None) is not None else {}),
            **({"arch_lr_anneal_iterations": t.arch_lr_anneal_iterations}
               if getattr(t, "arch_lr_anneal_iterations", None) is not None else {}),
        }

    def _info(self, msg: str, *args: Any) -> None:
        if idist.get_rank() == 0:
            logger.info(msg, *args)

    def _started(self, engine: Engine) -> None:
        start = engine.state.iteration
        if self.budget_lambda is not None and start == 0:
            lam = self.budget_lambda
            self.memory_loss.memory_lambda = lam
            self._info("memory budget %.2f GiB at patch %s, batch %d -> memory lambda %.3f",
                       self.memory_budget_gib, self.train_patch_size, self.train_batch_size, lam)

        def _n(loader: Any) -> str:
            ds = getattr(loader, "dataset", None)
            return str(len(ds)) if ds is not None and hasattr(ds, "__len__") else "?"

        s = self.structure()
        t = engine
        params = sum(p.numel() for p in t.step_fn.weight_params)
        val_loader = getattr(self.evaluator, "data_loader", None)
        self._info(
            "DAST search: %d blocks x %d depths, ops %s, channel_mul %s, grid %d | %.2fM weights | cases: %s weights "
            "/ %s architecture / %s validation | %d iterations (%d warm-up), export every %d | device %s x %d%s "
            "| config %s",
            s["num_blocks"], s["num_depths"], s["ops"], s["channel_mul"], s["grid"], params / 1e6,
            _n(t.train_data_loader), _n(t.arch_data_loader), _n(val_loader) if val_loader is not None else "0",
            t.num_iterations, t.warmup_iterations, self.interval, t.state.device, idist.get_world_size(),
            " amp" if t.search_amp else "", self.config_hash,
        )
        if start:
            self._info("resumed at iteration %d", start)

    # -------------------------------------------------------------------------------------------------- export
    def _validated(self, evaluator: Engine) -> None:
        details = getattr(evaluator.state, "metric_details", {}).get(self.key_metric)
        metrics: dict[str, float] = {}
        if isinstance(details, torch.Tensor) and details.ndim == 2:  # (volumes, classes), NaN: class absent
            values = details.double()
            present = ~torch.isnan(values)
            counts = present.sum(0)
            per_class = torch.where(counts > 0, torch.where(present, values, 0.0).sum(0) / counts.clamp_min(1),
                                    torch.full_like(counts, float("nan"), dtype=values.dtype))
            metrics.update({f"{self.key_metric}_{c + 1}": float(v) for c, v in enumerate(per_class)})
            found = per_class[~torch.isnan(per_class)]
            metrics[self.key_metric] = float(found.mean()) if found.numel() else float("nan")
        else:
            value = evaluator.state.metrics.get(self.key_metric)
            if value is not None:
                metrics[self.key_metric] = float(value)
        val = metrics.get(self.key_metric)
        done = self.trainer.state.iteration
        if val is not None and math.isfinite(val) and val > self.best["val_dice"]:
            self.best = {"val_dice": float(val), "iteration": done}
        self.export(done, metrics)

    def _exported(self, engine: Engine) -> None:
        self.export(engine.state.iteration, {})

    def _completed(self, engine: Engine) -> None:
        done = engine.state.iteration
        if self._last_export != done:
            if done >= engine.state.max_epochs and self._last_export < 0:
                self._info("the checkpoint already reached num_iterations=%d; exporting its architecture", done)
            self.export(done, {})
        self._info("search finished: %s", json.dumps({k: v for k, v in self.summary.items() if k != "op_counts"}))

    def _sync_arch(self) -> None:
        """Broadcast rank 0's logits; warn when a rank had drifted (it should not)."""
        if idist.get_world_size() == 1:
            return
        with torch.no_grad():
            for p in arch_parameters(self.trainer.network):
                mine = p.detach().clone()
                dist.broadcast(p.data, src=0)
                drift = float((mine - p).abs().max())
                if drift > 1e-5:
                    logger.warning("rank %d: architecture logits differed from rank 0's by %.3g; using rank 0's.",
                                   idist.get_rank(), drift)

    def _check_ranks_agree(self, arch: Any, final: bool) -> None:
        """Every rank must have decoded the same architecture (they share rank 0's logits)."""
        world = idist.get_world_size()
        if world == 1:
            return
        code = json.dumps([arch.node_a, arch.arch_code_a, arch.arch_code_c, list(arch.ops)])
        digest = hashlib.sha256(code.encode()).hexdigest()[:16]
        digests: list[Any] = [None] * world
        dist.all_gather_object(digests, digest)
        if len(set(digests)) > 1:
            raise RuntimeError(f"ranks decoded different architectures (digests by rank: {digests}).")
        if final:
            self._info("all %d ranks decoded the same architecture (digest %s)", world, digest)

    def _memory_lambda(self) -> float | None:
        lam = getattr(self.memory_loss, "memory_lambda", None)
        return None if lam is None else float(lam)

    def export(self, done: int, metrics: Mapping[str, float]) -> dict[str, Any]:
        """
        Decode (within the budget), write ``arch_code.json`` and its iteration copy; tighten lambda if needed.

        Args:
            done: iterations done.
            metrics: validation metrics of this export (``val_dice`` ...), recorded and added to the trainer's
                ``state.output``.

        Returns:
            the summary: ``arch_file``, ``iteration``, ``val_dice``, ``best_val_dice``, ``est_memory_gib``,
            ``memory_lambda``, ``op_counts``, ``config_hash`` (also kept as :attr:`summary`).
        """
        self._sync_arch()
        final = done >= self.trainer.num_iterations
        result = decode_within_budget(
            self.space, self.memory_budget_gib, self.train_patch_size, self.train_batch_size, self.arch_channel_mul,
            num_classes=self.num_classes,
        )
        arch = result.arch
        self._check_ranks_agree(arch, final=final)
        if result.penalty > 0 and not final:
            self._tighten_lambda(result.plain_estimate)
        counts = arch.op_counts()
        val = metrics.get(self.key_metric)
        values = {**metrics, "est_memory_gib": round(result.estimate / GIB, 4),
                  "transformers": counts.get("transformer", 0), "budget_penalty": result.penalty}
        output = self.trainer.state.output
        if isinstance(output, dict):
            output.update(values)
        provenance = {
            "lambda": self._memory_lambda(),
            "config_hash": self.config_hash,
            "iteration": done,
            "num_iterations": self.trainer.num_iterations,
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
            "world_size": idist.get_world_size(),
            "source": "dast_search",
        }
        path = self.ckpt_dir / ARCH_FILE
        if idist.get_rank() == 0:
            save_arch(path, arch, **provenance)
            save_arch(self.ckpt_dir / f"arch_code_iter{done:06d}.json", arch, **provenance)
            if final:
                self._info("architecture written to %s: %s, estimated %.3f GiB at patch %s batch %d",
                           path, counts, result.estimate / GIB, self.train_patch_size, self.train_batch_size)
                if self.draw:
                    self._draw(arch, path.with_suffix(".png"))
        self._last_export = done
        self.summary = {
            "arch_file": str(path), "iteration": done, "val_dice": provenance["val_dice"],
            "best_val_dice": provenance["best_val_dice"], "est_memory_gib": provenance["estimated_memory_gib"],
            "memory_lambda": provenance["lambda"], "op_counts": counts, "config_hash": self.config_hash,
        }
        return self.summary

    def _draw(self, arch: Any, path: Path) -> None:
        try:
            draw_architecture(arch, path, patch_size=self.train_patch_size, batch_size=self.train_batch_size)
        except ImportError as err:  # matplotlib is optional
            logger.warning("no architecture diagram: %s (pip install 'dast_components[plot]')", err)
            return
        self._info("architecture diagram written to %s", path)

    def _tighten_lambda(self, plain_estimate: int) -> None:
        """The plain decode exceeds the budget: lower lambda by the cells' overshoot (at most halving it)."""
        if self.memory_loss is None or self.memory_budget_gib is None:
            return
        table = cost_table(self.space, self.train_patch_size, self.arch_channel_mul, self.train_batch_size)
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

    # ---------------------------------------------------------------------------------------------- checkpoint
    def state_dict(self) -> dict[str, Any]:
        """The trainer's state, lambda, best Dice and the settings (plain values: ``weights_only`` loads them)."""
        return {
            "trainer": self.trainer.state_dict(),
            "memory_lambda": self._memory_lambda(),
            "best_val_dice": float(self.best["val_dice"]),
            "best_iteration": int(self.best["iteration"]),
            "structure": self.structure(),
            "settings": self.settings,
            "config_hash": self.config_hash,
        }

    def _check_resumable(self, state: Mapping[str, Any], source: str = "the checkpoint", announce: bool = True) -> None:
        """Raise :class:`InputError` listing why ``state`` (a checkpoint's ``search`` entry) is not this search."""
        theirs, mine = state.get("structure", {}), self.structure()
        diff = {k: (theirs.get(k), v) for k, v in mine.items() if theirs.get(k) != v}
        if diff:
            detail = ", ".join(f"{k}: checkpoint {a!r} vs config {b!r}" for k, (a, b) in diff.items())
            raise InputError(f"cannot resume from {source}: its search space differs ({detail}). Use another "
                             "output_dir or set resume to false to start over.")
        old, new = _flatten(state.get("settings", {})), _flatten(self.settings)
        changed = [f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
                   if k not in _RESUMABLE_CHANGES and old.get(k) != new.get(k)]
        if changed:
            raise InputError(f"cannot resume from {source}: settings differ from the checkpoint's (checkpoint -> now): "
                             + "; ".join(changed) + ". Resume with the settings the search was started with, or "
                             "start a new search with --resume false (or another --output_dir).")
        iteration = int(dict(state.get("trainer", {})).get("iteration", 0))
        if iteration > self.trainer.num_iterations:
            raise InputError(f"cannot resume from {source}: it is at iteration {iteration}, beyond "
                             f"num_iterations={self.trainer.num_iterations}; raise num_iterations to continue it.")
        if announce and old.get("num_iterations") != new.get("num_iterations"):
            self._info("resuming with num_iterations %s -> %s (the learning-rate milestones stay the checkpoint's%s)",
                       old.get("num_iterations"), new.get("num_iterations"),
                       "; the architecture rate's cosine moves to the new last iterations"
                       if new.get("arch_lr_anneal_iterations") is not None else "")

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """
        Check that the checkpoint is of the same search, then restore the trainer's counters, lambda and best Dice.

        Raises:
            InputError: listing every setting that differs (only ``num_iterations`` may change, to extend a search).
        """
        self._check_resumable(state)
        self.trainer.load_state_dict(dict(state["trainer"]))
        if self.memory_loss is not None and state.get("memory_lambda") is not None:
            self.memory_loss.memory_lambda = float(state["memory_lambda"])
        self.best = {"val_dice": float(state.get("best_val_dice", -1.0)),
                     "iteration": int(state.get("best_iteration", 0))}


def _fmt_time(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(max(seconds, 0.0))))


class SearchProgress:
    """
    One console line per logged iteration: the ``iteration_print_logger`` of MONAI's ``StatsHandler``.

    ``[search] iter 12/24 | loss 1.07 | arch 1.04 ent 0.007/0.366 topo 30.2 mem 0.156 ramp 0.20 | memory ratio
    0.356 (lambda 0.200) | val dice 0.41 | decode 2.34 GiB, 17 transformers | lr 5.00e-02 | 5.87 s/it | ETA 0:01:55``

    Args:
        log_interval: iterations between lines (the last iteration and every export are always logged).
    """

    def __init__(self, log_interval: int = 1) -> None:
        self.log_interval = max(1, int(log_interval))
        self._start: tuple[int, float] | None = None
        self._last = time.perf_counter()

    def __call__(self, engine: Engine) -> None:
        """Log the line of ``engine.state`` (a :class:`~dast_components.search.trainer.DASTSearchTrainer`)."""
        now = time.perf_counter()
        done, total = engine.state.iteration, engine.state.max_epochs
        if self._start is None:
            self._start = (done - 1, self._last)
        seconds, self._last = now - self._last, now
        row = engine.state.output if isinstance(engine.state.output, Mapping) else {}
        if done % self.log_interval and done != total and "est_memory_gib" not in row:
            return
        elapsed = now - self._start[1]
        eta = elapsed / max(done - self._start[0], 1) * (total - done)
        phase = "search" if "arch_loss" in row else "warmup"
        parts = [f"[{phase}] iter {done:>{len(str(total))}}/{total}", f"loss {row.get('loss', float('nan')):.4f}"]
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
        lr = float(engine.step_fn.optimizer.param_groups[0]["lr"])
        arch_lr = f" arch lr {row['arch_lr']:.2e}" if row.get("arch_lr") is not None else ""  # when annealed
        parts.append(f"lr {lr:.2e}{arch_lr} | {seconds:.2f} s/it | ETA {_fmt_time(eta)}")
        logger.info(" | ".join(parts))
