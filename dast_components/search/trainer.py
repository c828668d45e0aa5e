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
The architecture search as a MONAI trainer: :class:`DASTSearchTrainer` (``search#trainer`` of the ``dast_search``
bundle).

Its ``_iteration`` is one bi-level step (:class:`~dast_components.search.step.BiLevelStep`): a weight step on a
batch of the weight split and, after the warm-up, an architecture step on a batch of the architecture split.
Everything else is a handler listed in ``bundles/dast_search/configs/search.json``, as in the retraining bundle:
validation (``IterationValidation`` running a ``SupervisedEvaluator`` with ``MeanDice``), the architecture export
(:class:`~dast_components.search.handlers.ArchitectureExport`), ``CheckpointLoader`` / ``CheckpointSaver``,
``StatsHandler``, ``TensorBoardStatsHandler``, ``LrScheduleHandler`` and the CSV ``TrainingLog``.

The search counts iterations, as DiNTS does: one ignite epoch is one iteration (``epoch_length=1``,
``max_epochs=num_iterations``) and the data loaders are cycled endlessly. So a checkpoint taken after any iteration
resumes exactly there, and ``num_iterations`` may be raised when resuming (``CheckpointLoader`` keeps the
configured ``max_epochs``).

Under ``torchrun`` the weights are trained through ``DistributedDataParallel`` while the architecture logits stay
out of it (their gradients are averaged by the step, see ``BiLevelStep(sync_arch_grads=...)``). The reasons for
this layout are in ``docs/design.md``, "Search as a trainer".
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from monai.engines import Trainer
from torch import nn

from dast_components.errors import InputError
from dast_components.search.step import BiLevelStep, arch_lr_factor, arch_parameters, ramp_factor
from dast_components.utils import as_bool

__all__ = ["DASTSearchTrainer", "cycle"]

logger = logging.getLogger(__name__)


class _WithoutEpochLines(logging.Filter):
    """Drops ignite's "Epoch[N] Complete" lines: an epoch is one iteration here, logged by ``SearchProgress``."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Epoch[")


def cycle(loader: Iterable) -> Iterator[Any]:
    """
    Endless iteration over a data loader, advancing a ``DistributedSampler``'s epoch at every pass.

    Raises:
        InputError: the loader yields no batch (empty datalist, or fewer items than one batch with ``drop_last``).
    """
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


class DASTSearchTrainer(Trainer):
    """
    Bi-level architecture search of a DiNTS network on a :class:`~dast_components.networks.DASTSearchSpace`.

    Each iteration takes a weight step on a batch of ``train_data_loader``; from ``warmup_iterations`` on it also
    takes an architecture step on a batch of ``arch_data_loader``, whose regularisers are weighted by
    :func:`~dast_components.search.step.ramp_factor`. ``engine.state.output`` is a dict of floats: ``loss`` and,
    after the warm-up, ``arch_loss``, ``arch_total``, ``entropy_a``, ``entropy_c``, ``topology``, ``memory``,
    ``ramp``; with a memory loss also ``memory_ratio`` and ``memory_lambda``; ``lr`` (of the weight step), with an
    annealed architecture learning rate ``arch_lr``, and
    ``seconds`` (of the step). Handlers add validation and export values to it.

    Args:
        device: the network's device.
        num_iterations: total iterations (weight steps), >= 1.
        train_data_loader: batches ``{"image": (B, C_in, H, W, D), "label": (B, 1, H, W, D)}`` of the weight split.
        arch_data_loader: batches of the architecture split.
        network: ``DiNTS(dints_space=DASTSearchSpace(...))`` on ``device``.
        loss_function: segmentation loss ``(logits, label) -> scalar`` (DiceCE).
        optimizer: weight optimiser over :func:`~dast_components.search.weight_parameters` (SGD).
        arch_optimizer: optimiser over :func:`~dast_components.search.arch_parameters` (Adam).
        warmup_iterations: weight-only iterations first, in ``[0, num_iterations)``; ``None``: half (DiNTS).
        memory_loss: :class:`~dast_components.losses.MemoryBudgetLoss` (``None``: no memory term).
        ramp_iterations: iterations from the end of the warm-up until the regularisers reach full weight, >= 1;
            ``None``: the ramp ends at the last iteration (DiNTS).
        arch_lr_anneal_iterations: anneal the architecture learning rate by a cosine towards 0 over this many last
            iterations (:func:`~dast_components.search.step.arch_lr_factor`), so that the decode settles; in
            ``[1, num_iterations - warmup_iterations]``. ``None``: constant (DiNTS).
        entropy_weight: weight of the two entropy terms.
        topology_weight: weight of the topology entropy.
        memory_weight: weight of the memory term.
        amp: mixed precision; used on CUDA only (ignored with a log line elsewhere).
        train_handlers: ignite/MONAI handlers, attached in order.
        find_unused_parameters: passed to ``DistributedDataParallel`` under ``torchrun``.
        non_blocking: non-blocking host-to-device copies.

    Example::

        trainer = DASTSearchTrainer("cpu", 20, w_loader, a_loader, net, DiceCELoss(to_onehot_y=True, softmax=True),
                                    sgd, adam, warmup_iterations=10, train_handlers=[export, saver])
        trainer.run()
    """

    def __init__(
        self,
        device: str | torch.device,
        num_iterations: int,
        train_data_loader: Iterable,
        arch_data_loader: Iterable,
        network: nn.Module,
        loss_function: Any,
        optimizer: torch.optim.Optimizer,
        arch_optimizer: torch.optim.Optimizer,
        warmup_iterations: int | None = None,
        memory_loss: Any = None,
        ramp_iterations: int | None = None,
        arch_lr_anneal_iterations: int | None = None,
        entropy_weight: float = 1.0,
        topology_weight: float = 0.001,
        memory_weight: float = 1.0,
        amp: bool = False,
        train_handlers: Sequence | None = None,
        find_unused_parameters: bool = False,
        non_blocking: bool = False,
    ) -> None:
        if int(num_iterations) < 1:
            raise InputError(f"num_iterations must be >= 1, got {num_iterations}.")
        num_iterations = int(num_iterations)
        warmup = num_iterations // 2 if warmup_iterations is None else int(warmup_iterations)
        if not 0 <= warmup < num_iterations:
            raise InputError(f"warmup_iterations must be in [0, num_iterations={num_iterations}), got {warmup}: "
                             "the search needs at least one architecture step.")
        if ramp_iterations is not None and (
            isinstance(ramp_iterations, bool) or int(ramp_iterations) != ramp_iterations
            or not 1 <= int(ramp_iterations) <= num_iterations - 1 - warmup
        ):
            raise InputError(
                f"ramp_iterations must be an integer in [1, num_iterations - 1 - warmup_iterations = "
                f"{num_iterations - 1 - warmup}] (full weight before the last iteration) or null (ramp up to the last "
                f"iteration), got {ramp_iterations!r}."
            )
        anneal = arch_lr_anneal_iterations
        if anneal is not None and (
            isinstance(anneal, bool) or int(anneal) != anneal or not 1 <= int(anneal) <= num_iterations - warmup
        ):
            raise InputError(
                f"arch_lr_anneal_iterations must be an integer in [1, num_iterations - warmup_iterations = "
                f"{num_iterations - warmup}] (iterations with an architecture step) or null (constant architecture "
                f"learning rate), got {anneal!r}."
            )
        if getattr(getattr(network, "dints_space", None), "decode_arch", None) is None:
            raise TypeError("network must be a DiNTS built on a dast_components.networks.DASTSearchSpace.")
        device = torch.device(device)
        for name, loader in (("train_data_loader", train_data_loader), ("arch_data_loader", arch_data_loader)):
            if hasattr(loader, "__len__") and len(loader) == 0:
                raise InputError(f"the search's {name} yields no batch: its datalist is empty or smaller than one "
                                 "batch.")
        self.network = network
        self.num_iterations = num_iterations
        self.warmup_iterations = warmup
        self.ramp_iterations = None if ramp_iterations is None else int(ramp_iterations)
        self.arch_lr_anneal_iterations = None if anneal is None else int(anneal)
        # the configured rates: the annealed rate is recomputed from them each iteration (also after a resume)
        self.arch_base_lrs = [float(g["lr"]) for g in arch_optimizer.param_groups]
        self.memory_loss = memory_loss
        self.arch_data_loader = arch_data_loader
        self.train_data_loader = train_data_loader
        self.search_amp = as_bool(amp, "amp") and device.type == "cuda"
        if amp and not self.search_amp:
            logger.info("amp is used on CUDA only; searching in float32 on %s.", device)
        self.loss_weights = {"entropy_weight": float(entropy_weight), "topology_weight": float(topology_weight),
                             "memory_weight": float(memory_weight)}
        self.step_fn = BiLevelStep(
            network, loss_function, optimizer, arch_optimizer, memory_loss,
            train_network=self._train_network(network, device, find_unused_parameters), amp=self.search_amp,
            sync_arch_grads=idist.get_world_size() > 1, **self.loss_weights,
        )
        self._arch_batches: Iterator[Any] | None = None
        # amp=False for MONAI: the step keeps its own gradient scalers (one per optimiser)
        super().__init__(
            device=device, max_epochs=num_iterations, data_loader=cycle(train_data_loader), epoch_length=1,
            non_blocking=non_blocking, handlers=train_handlers, amp=False, decollate=False,
        )
        self.add_event_handler(Events.COMPLETED, self._release)
        self.logger.addFilter(_WithoutEpochLines())

    @staticmethod
    def _train_network(network: nn.Module, device: torch.device, find_unused_parameters: bool) -> nn.Module:
        """``network`` itself, or under ``torchrun`` wrapped in DDP while the logits do not require grad."""
        if idist.get_world_size() == 1:
            return network
        arch = arch_parameters(network)
        for p in arch:  # keep the logits out of DDP: their gradients are averaged by the step
            p.requires_grad_(False)
        ids = [device.index] if device.type == "cuda" else None
        wrapped = nn.parallel.DistributedDataParallel(network, device_ids=ids,
                                                      find_unused_parameters=find_unused_parameters)
        for p in arch:
            p.requires_grad_(True)
        return wrapped

    def _iteration(self, engine: Engine, batchdata: Mapping[str, Any]) -> dict[str, float]:
        """One bi-level step; ``engine.state.iteration`` counts from 1."""
        it = engine.state.iteration - 1
        tic = time.perf_counter()
        lr = float(self.step_fn.optimizer.param_groups[0]["lr"])  # the rate this iteration's weight step uses
        arch_batch = None
        if it >= self.warmup_iterations:
            if self._arch_batches is None:
                self._arch_batches = cycle(self.arch_data_loader)
            arch_batch = next(self._arch_batches)
            if self.arch_lr_anneal_iterations is not None:  # otherwise the rate is left to the optimiser
                factor = arch_lr_factor(it, self.num_iterations, self.arch_lr_anneal_iterations)
                for group, base in zip(self.step_fn.arch_optimizer.param_groups, self.arch_base_lrs):
                    group["lr"] = base * factor
        ramp = ramp_factor(it, self.warmup_iterations, self.num_iterations, self.ramp_iterations)
        out = self.step_fn.step(batchdata, arch_batch, ramp=ramp)
        if self.memory_loss is not None:
            if "memory_ratio" not in out and hasattr(self.memory_loss, "ratio"):
                with torch.no_grad():
                    out["memory_ratio"] = float(self.memory_loss.ratio())
            out["memory_lambda"] = float(self.memory_loss.memory_lambda)
        out.update({"lr": lr, "seconds": round(time.perf_counter() - tic, 4)})
        if arch_batch is not None and self.arch_lr_anneal_iterations is not None:
            out["arch_lr"] = float(self.step_fn.arch_optimizer.param_groups[0]["lr"])
        return out

    def _release(self, engine: Engine) -> None:
        """Leave the network as it came: every parameter trainable."""
        for p in self.network.parameters():
            p.requires_grad_(True)

    def state_dict(self) -> dict[str, Any]:
        """The engine state (iteration, epoch) plus the step's gradient-scaler states."""
        state = dict(super().state_dict())
        state["step"] = self.step_fn.state_dict()
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (the engine counters and the scalers)."""
        state = dict(state_dict)
        self.step_fn.load_state_dict(state.pop("step", {}))
        super().load_state_dict(state)
