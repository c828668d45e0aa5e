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
One step of the bi-level (DiNTS-style) architecture search.

A step first updates the network weights on a batch of the weight split (SGD), then, after the warm-up, the
architecture logits on a batch of the architecture split (Adam):

    L_arch = DiceCE + r * (w_e * (H(p_a) + H(p_c)) + w_t * L_topology + w_m * |lambda - usage / full|)

where ``H`` are the mean entropies of the child-model and op probabilities (they push both towards one-hot so the
decoded architecture matches what was trained), ``L_topology`` is MONAI's topology entropy (a node used by one block
should feed the next), the last term is :class:`~dast_components.losses.MemoryBudgetLoss`, and ``r`` ramps linearly
from 0 at the end of the warm-up to 1 at the last iteration, or earlier (:func:`ramp_factor`). The tutorial and the
Model Zoo DiNTS search weight these terms 1 / 0.001 / 1, the defaults here; the Model Zoo script ramps all three
terms in its AMP branch but only the entropies in its float32 branch. Here all three are ramped, in every precision.

Reference: He et al., "DiNTS: Differentiable Neural Network Topology Search for 3D Medical Image Segmentation",
CVPR 2021 <https://arxiv.org/abs/2103.15954>, Sec. 3.3.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ignite.distributed as idist
import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "BiLevelStep",
    "arch_lr_factor",
    "arch_parameters",
    "entropy_terms",
    "ramp_factor",
    "weight_parameters",
]


def _space_of(network: nn.Module) -> nn.Module:
    net = network.module if isinstance(network, nn.parallel.DistributedDataParallel) else network
    space = getattr(net, "dints_space", net)
    if not hasattr(space, "log_alpha_a") or not hasattr(space, "log_alpha_c"):
        raise TypeError(f"{type(net).__name__} has no searchable architecture (expected a DiNTS with a search space).")
    return space


def arch_parameters(network: nn.Module) -> list[nn.Parameter]:
    """
    The architecture logits ``[log_alpha_a, log_alpha_c]`` of a DiNTS search network (or of its search space).

    Args:
        network: ``monai.networks.nets.DiNTS`` built on a :class:`~dast_components.networks.DASTSearchSpace`, the
            space itself, or either wrapped in ``DistributedDataParallel``.
    """
    space = _space_of(network)
    return [space.log_alpha_a, space.log_alpha_c]


def weight_parameters(network: nn.Module) -> list[nn.Parameter]:
    """
    All parameters of ``network`` except the architecture logits (what the SGD weight optimiser updates).

    MONAI's ``DiNTS.weight_parameters()`` returns every parameter, logits included; an optimiser built from it would
    also move the logits with weight-split gradients.

    Args:
        network: see :func:`arch_parameters`.
    """
    arch_ids = {id(p) for p in arch_parameters(network)}
    return [p for p in network.parameters() if id(p) not in arch_ids]


def ramp_factor(
    iteration: int, warmup_iterations: int, num_iterations: int, ramp_iterations: int | None = None
) -> float:
    """
    Weight of the architecture regularisers: 0 until the warm-up ends, then linear up to 1, reached at the last
    iteration (DiNTS) or, with ``ramp_iterations``, that many iterations after the warm-up and held from there on.

    Args:
        iteration: the current iteration, counted from 0.
        warmup_iterations: iterations of weight-only training.
        num_iterations: total iterations.
        ramp_iterations: iterations from the end of the warm-up to full weight; ``None``: up to the last iteration.
            A ramp that ends early leaves iterations at full weight, in which the decoded architecture can settle.

    Returns:
        a float in ``[0, 1]``.
    """
    span = num_iterations - 1 - warmup_iterations if ramp_iterations is None else int(ramp_iterations)
    if iteration < warmup_iterations:
        return 0.0
    if span <= 0:
        return 1.0
    return float(min(1.0, (iteration - warmup_iterations) / span))


def arch_lr_factor(iteration: int, num_iterations: int, anneal_iterations: int | None = None) -> float:
    """
    Factor on the architecture learning rate: 1 (constant, DiNTS), or with ``anneal_iterations`` a cosine from 1
    down towards 0 over the last ``anneal_iterations`` iterations, so that the architecture logits, and with them
    the decoded architecture, stop moving before the search ends.

    Args:
        iteration: the current iteration, counted from 0.
        num_iterations: total iterations.
        anneal_iterations: length of the cosine at the end of the search; ``None``: no annealing.

    Returns:
        a float in ``(0, 1]``: ``0.5 * (1 + cos(pi * k / (anneal_iterations + 1)))`` at the ``k``-th annealed
        iteration (``k`` from 1), so the last iteration still takes a (small) step.
    """
    if anneal_iterations is None:
        return 1.0
    k = iteration - (num_iterations - int(anneal_iterations)) + 1
    if k < 1:
        return 1.0
    return float(0.5 * (1.0 + math.cos(math.pi * min(k, int(anneal_iterations)) / (int(anneal_iterations) + 1))))


def entropy_terms(space: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """
    Mean entropies of the child-model probabilities and of the op probabilities of a search space.

    Args:
        space: a ``TopologySearch`` (e.g. :class:`~dast_components.networks.DASTSearchSpace`).

    Returns:
        ``(entropy_a, entropy_c, probs_a)``: the two scalar entropies and the child-model probabilities
        ``(num_blocks, num_children)`` (input of ``space.get_topology_entropy``).
    """
    probs_a, _ = space.get_prob_a(child=True)
    entropy_a = -(probs_a * torch.log(probs_a + 1e-5)).mean()
    log_c = torch.log_softmax(space.log_alpha_c, dim=-1)
    entropy_c = -(log_c.exp() * log_c).mean()
    return entropy_a, entropy_c, probs_a


class BiLevelStep:
    """
    The weight step and the architecture step of the search, on one device or one rank of a process group.

    Not an ignite engine: :class:`~dast_components.search.trainer.DASTSearchTrainer` (the bundle's trainer) calls
    :meth:`step` from its ``_iteration``; benchmarks call :meth:`weight_step` and :meth:`arch_step` directly.

    Args:
        network: the search network, ``DiNTS(dints_space=DASTSearchSpace(...))``, on its device.
        loss_function: segmentation loss ``(logits, label) -> scalar`` (DiceCE).
        optimizer: weight optimiser over :func:`weight_parameters` (SGD).
        arch_optimizer: optimiser over :func:`arch_parameters` (Adam).
        memory_loss: callable returning the memory-budget loss (``MemoryBudgetLoss``); ``None`` leaves it out.
        train_network: what the weight step calls instead of ``network``, e.g. ``network`` wrapped in
            ``DistributedDataParallel`` (built while the logits did not require grad, so it never syncs them).
            Defaults to ``network``.
        entropy_weight: ``w_e``. Defaults to 1.0.
        topology_weight: ``w_t``. Defaults to 0.001.
        memory_weight: ``w_m``. Defaults to 1.0.
        amp: mixed precision (CUDA only). Defaults to ``False``.
        sync_arch_grads: average the logits' gradients over the process group after each architecture backward
            (needed when ``train_network`` is DDP). Defaults to ``True`` when a process group of several ranks exists.

    Example::

        loss = DiceCELoss(to_onehot_y=True, softmax=True)
        engine = BiLevelStep(net, loss, sgd, adam, MemoryBudgetLoss(space, (32,) * 3))
        out = engine.step(weight_batch, arch_batch, ramp=0.5)  # {"loss": ..., "arch_loss": ..., "memory_ratio": ...}
    """

    def __init__(
        self,
        network: nn.Module,
        loss_function: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        optimizer: torch.optim.Optimizer,
        arch_optimizer: torch.optim.Optimizer,
        memory_loss: Callable[[], torch.Tensor] | None = None,
        train_network: nn.Module | None = None,
        entropy_weight: float = 1.0,
        topology_weight: float = 0.001,
        memory_weight: float = 1.0,
        amp: bool = False,
        sync_arch_grads: bool | None = None,
    ) -> None:
        self.network = network
        self.space = _space_of(network)
        self.train_network = network if train_network is None else train_network
        self.loss_function = loss_function
        self.optimizer = optimizer
        self.arch_optimizer = arch_optimizer
        self.memory_loss = memory_loss
        for name, value in (("entropy_weight", entropy_weight), ("topology_weight", topology_weight),
                            ("memory_weight", memory_weight)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}.")
        self.entropy_weight = float(entropy_weight)
        self.topology_weight = float(topology_weight)
        self.memory_weight = float(memory_weight)
        self.arch_params = arch_parameters(network)
        self.weight_params = weight_parameters(network)
        self._check_optimizers()
        self.device = self.arch_params[0].device
        if amp and self.device.type != "cuda":
            raise ValueError(f"amp=True needs a CUDA device, the network is on {self.device}; set amp to false.")
        self.amp = bool(amp)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp)
        self.arch_scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp)
        self.sync_arch_grads = idist.get_world_size() > 1 if sync_arch_grads is None else bool(sync_arch_grads)

    def _check_optimizers(self) -> None:
        arch_ids = {id(p) for p in self.arch_params}
        weight_ids = {id(p) for p in self.weight_params}
        in_opt = {id(p) for g in self.optimizer.param_groups for p in g["params"]}
        in_arch_opt = {id(p) for g in self.arch_optimizer.param_groups for p in g["params"]}
        if in_opt & arch_ids:
            raise ValueError("the weight optimizer holds the architecture logits; build it from "
                             "dast_components.search.weight_parameters(network), not network.weight_parameters().")
        if not in_arch_opt or not in_arch_opt <= arch_ids:
            raise ValueError("the architecture optimizer must hold exactly the architecture logits "
                             "(dast_components.search.arch_parameters(network)).")
        if not in_opt <= weight_ids:
            raise ValueError("the weight optimizer holds parameters that are not part of the search network.")

    def _autocast(self) -> contextlib.AbstractContextManager:
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type)

    def _trainable(self, weights: bool) -> None:
        # only the side being optimised needs gradients: saves the other side's backward work
        for p in self.weight_params:
            p.requires_grad_(weights)
        for p in self.arch_params:
            p.requires_grad_(not weights)

    def _batch(self, batch: Mapping[str, Any] | Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(batch, Mapping):
            image, label = batch["image"], batch["label"]
        else:
            image, label = batch[0], batch[1]
        return (torch.as_tensor(image).to(self.device, non_blocking=True),
                torch.as_tensor(label).to(self.device, non_blocking=True))

    def weight_step(self, batch: Mapping[str, Any] | Sequence[torch.Tensor]) -> dict[str, float]:
        """
        One SGD step of the network weights on a weight-split batch; the logits stay fixed.

        Args:
            batch: ``{"image": (B, C_in, H, W, D), "label": (B, 1, H, W, D)}`` or ``(image, label)``.

        Returns:
            ``{"loss": segmentation loss}``.
        """
        image, label = self._batch(batch)
        self.train_network.train()
        self._trainable(weights=True)
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            loss = self.loss_function(self.train_network(image), label)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        # the weight gradients are spent: freeing them keeps the architecture step's peak memory one copy of the
        # weights lower (the architecture step never reads them); a handler reading weight gradients after the
        # iteration sees None
        self.optimizer.zero_grad(set_to_none=True)
        return {"loss": float(loss.detach())}

    def regularisers(self) -> dict[str, torch.Tensor]:
        """
        The architecture regularisers, differentiable in the logits (float32, outside autocast).

        Returns:
            ``entropy_a``, ``entropy_c``, ``topology`` and, with a memory loss, ``memory`` (the loss) and
            ``memory_ratio`` (usage / full).
        """
        entropy_a, entropy_c, probs_a = entropy_terms(self.space)
        terms = {"entropy_a": entropy_a, "entropy_c": entropy_c,
                 # MONAI returns the int 0 for a single block (no block transitions): keep it a tensor
                 "topology": torch.as_tensor(self.space.get_topology_entropy(probs_a), dtype=probs_a.dtype,
                                             device=probs_a.device)}
        if self.memory_loss is not None:
            terms["memory"] = self.memory_loss()
            ratio = getattr(self.memory_loss, "ratio", None)
            if callable(ratio):
                terms["memory_ratio"] = ratio().detach()
        return terms

    def arch_step(self, batch: Mapping[str, Any] | Sequence[torch.Tensor], ramp: float = 1.0) -> dict[str, float]:
        """
        One step of the architecture logits on an architecture-split batch; the weights stay fixed.

        Args:
            batch: as in :meth:`weight_step`.
            ramp: ``r``, the weight of the regularisers (see :func:`ramp_factor`).

        Returns:
            ``arch_loss`` (the segmentation part), ``arch_total`` (with the regularisers), and each regulariser.
        """
        image, label = self._batch(batch)
        self.network.train()
        self._trainable(weights=False)
        self.arch_optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            seg = self.loss_function(self.network(image), label)
        terms = self.regularisers()
        reg = self.entropy_weight * (terms["entropy_a"] + terms["entropy_c"])
        reg = reg + self.topology_weight * terms["topology"]
        if "memory" in terms:
            reg = reg + self.memory_weight * terms["memory"]
        total = seg.float() + float(ramp) * reg
        self.arch_scaler.scale(total).backward()
        if self.sync_arch_grads:
            self._average_arch_grads()
        self.arch_scaler.step(self.arch_optimizer)
        self.arch_scaler.update()
        self._trainable(weights=True)
        out = {"arch_loss": float(seg.detach()), "arch_total": float(total.detach()), "ramp": float(ramp)}
        out.update({k: float(v.detach()) for k, v in terms.items()})
        return out

    def _average_arch_grads(self) -> None:
        world = idist.get_world_size()
        if world <= 1:
            return
        for p in self.arch_params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad.div_(world)

    def step(
        self,
        weight_batch: Mapping[str, Any] | Sequence[torch.Tensor],
        arch_batch: Mapping[str, Any] | Sequence[torch.Tensor] | None = None,
        ramp: float = 0.0,
    ) -> dict[str, float]:
        """
        One bi-level iteration: a weight step, then (when ``arch_batch`` is given) an architecture step.

        Returns:
            the merged outputs of :meth:`weight_step` and :meth:`arch_step`.
        """
        out = self.weight_step(weight_batch)
        if arch_batch is not None:
            out.update(self.arch_step(arch_batch, ramp=ramp))
        return out

    def state_dict(self) -> dict[str, Any]:
        """Gradient-scaler states (the optimisers and the network are saved by their owners)."""
        return {"scaler": self.scaler.state_dict(), "arch_scaler": self.arch_scaler.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`; an empty scaler state (from a float32 run) is ignored."""
        for key, scaler in (("scaler", self.scaler), ("arch_scaler", self.arch_scaler)):
            if state.get(key):
                scaler.load_state_dict(state[key])

