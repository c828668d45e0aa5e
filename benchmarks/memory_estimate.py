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
Estimated vs measured peak training memory of random decoded DAST architectures (issue 2 item 5, issue 7 1b).

For each architecture: ``dast_components.networks.estimate_memory`` against the measured peak of one full training
step (forward, Dice + CE loss, backward, SGD momentum step), taken at steady state: momentum buffers exist and the
gradients are zero tensors at the start, as MONAI's ``SupervisedTrainer`` (the retraining bundle) leaves them
(``optim_set_to_none=False``); ``--set_to_none`` frees them between steps instead. Reported: per-architecture
numbers, Spearman rho and median relative error (targets: rho >= 0.98, median error <= 5%). Every architecture has
a transformer at every resolution (see :func:`pick_archs`), so the transformer's memory model is exercised where it
is cheapest and where it is costliest.

To show where a difference comes from, the same step also counts, per network component (input/output stems per
depth, head, loss, cells grouped by op), the bytes autograd still keeps for backward at the end of the forward pass,
and splits the measured peak into: live at the start (parameters, gradients, momentum, inputs), the level at the end
of the forward pass, and the rise of the peak above it; each beside the matching term of the estimate.

Example::

    python -m benchmarks.memory_estimate --device cpu
    python -m benchmarks.memory_estimate --num_archs 2 --num_blocks 2 --patch 32 --out_dir /tmp/bench
"""

from __future__ import annotations

import argparse
import statistics
import time
import weakref
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from monai.losses import DiceCELoss
from torch import nn

from benchmarks.common import (
    MemoryTracker,
    add_common_args,
    autocast,
    environment,
    make_grad_scaler,
    markdown_table,
    mib,
    optimizer_state_tensors,
    resolve_device,
    write_results,
)
from dast_components.networks import DASTNet, estimate_memory, random_arch
from dast_components.networks.arch_io import ArchCode
from dast_components.networks.costs import filter_nums, path_cost_table, stem_saved_elements
from dast_components.networks.memory import WORKSPACE_COPIES

__all__ = [
    "SavedTensorCensus",
    "estimate_components",
    "measure_arch",
    "pick_archs",
    "summarise",
    "main",
]


def _component_label(name: str, module: nn.Module) -> str | None:
    """Census label of a DiNTS/DAST submodule, or ``None`` when it is not a component boundary."""
    parts = name.split(".")
    if len(parts) == 2 and parts[0] in ("stem_down", "stem_up"):
        return f"stem_d{parts[1]}"
    if name == "stem_finals":
        return "head"
    if len(parts) == 3 and parts[:2] == ["dints_space", "cell_tree"]:
        op_names = getattr(getattr(module, "op", None), "op_names", ["cell"])
        return "cells:" + "+".join(op_names)
    return None


class SavedTensorCensus:
    """
    Bytes that autograd keeps for backward, by network component, counted while the graph is alive.

    Unlike counting every tensor the pack hook sees, only tensors still referenced by the graph when
    :meth:`count` runs are summed: branches whose result is dropped (DiNTS runs the input stem of inactive nodes and
    discards it) free their saved tensors at once, and a freed storage's address can be reused by another tensor.
    Storages are counted once; those of ``exclude`` tensors (parameters, inputs) are not counted.

    Args:
        net: the network; its stems, cells and head are the components (anything else, e.g. the loss, is ``loss``).
        exclude: tensors whose storages are not counted.

    Example::

        with SavedTensorCensus(net, exclude=[x, *net.parameters()]) as census:
            loss = loss_fn(net(x), y)
            by_component = census.count()
        loss.backward()
    """

    def __init__(self, net: nn.Module, exclude: Iterable[torch.Tensor] = ()) -> None:
        self.net = net
        self._exclude = {t.untyped_storage().data_ptr() for t in exclude}
        self._records: list[tuple[str, weakref.ref]] = []
        self._stack: list[str] = []
        self._handles: list[Any] = []
        self._hooks: Any = None

    def __enter__(self) -> SavedTensorCensus:
        # MONAI calls stems and cells through ``.forward`` (TorchScript interfaces), which skips their own hooks, so
        # every module inside a component carries the component's label
        labels = {}
        for name, module in self.net.named_modules():
            label = _component_label(name, module)
            if label is not None:
                labels[name] = label
        for name, module in self.net.named_modules():
            prefix = next((p for p in labels if name == p or name.startswith(p + ".")), None)
            if prefix is not None:
                self._handles.append(module.register_forward_pre_hook(self._push(labels[prefix])))
                self._handles.append(module.register_forward_hook(self._pop))
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._hooks.__exit__(*exc)
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _push(self, label: str):
        def hook(module: nn.Module, args: Any) -> None:
            self._stack.append(label)

        return hook

    def _pop(self, module: nn.Module, args: Any, output: Any) -> None:
        self._stack.pop()

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        packed = t.detach()  # the graph holds this; a reference to ``t`` itself could keep the graph alive
        self._records.append((self._stack[-1] if self._stack else "loss", weakref.ref(packed)))
        return packed

    def count(self) -> dict[str, int]:
        """Bytes per component of the saved tensors still alive (call before ``backward``)."""
        seen: set[int] = set(self._exclude)
        totals: dict[str, int] = defaultdict(int)
        for label, ref in self._records:
            packed = ref()
            if packed is None:
                continue
            storage = packed.untyped_storage()
            if storage.data_ptr() in seen:
                continue
            seen.add(storage.data_ptr())
            totals[label] += storage.nbytes()
        return dict(totals)


def estimate_components(
    arch: ArchCode, patch_size: Sequence[int], batch_size: int, num_classes: int, in_channels: int = 1
) -> dict[str, float]:
    """
    The activation terms of ``estimate_memory`` split like :class:`SavedTensorCensus` groups, in bytes (float32).

    ``stems`` is ``stem_saved_elements`` of the architecture's active nodes minus its depth-independent part;
    ``head`` and ``loss`` are that part with and without the classes; cells are ``path_cost_table`` entries of the
    active paths, grouped by op.
    """
    channels = filter_nums(arch.channel_mul, arch.num_depths)
    scale = 4.0 * batch_size
    out: dict[str, float] = defaultdict(float)
    head_loss = stem_saved_elements(channels, patch_size, 0, num_classes, in_channels)
    head = stem_saved_elements(channels, patch_size, 0, 0, in_channels)
    everything = stem_saved_elements(
        channels, patch_size, arch.num_depths, num_classes, in_channels, arch.node_a[0], arch.node_a[-1]
    )
    out["head"], out["loss"], out["stems"] = head * scale, (head_loss - head) * scale, (everything - head_loss) * scale
    table = path_cost_table(
        channels, patch_size, arch.num_depths, arch.ops, arch.use_downsample, arch.transformer_kwargs()
    )
    for b in range(arch.num_blocks):
        for p, active in enumerate(arch.arch_code_a[b]):
            if active:
                o = int(arch.arch_code_c[b][p])
                out["cells:" + arch.ops[o]] += float(table[p, o]) * scale
    return dict(out)


def pick_archs(
    num_archs: int, num_blocks: int, depths: Sequence[int], channel_muls: Sequence[float], grid: int, seed: int,
    every_depth: bool = True,
) -> list[ArchCode]:
    """
    ``num_archs`` random decoded DAST architectures, cycling through ``depths`` and ``channel_muls``.

    With ``every_depth`` (the default) every resolution carries a transformer: where a random decode has active
    paths ending at a depth but no transformer among them, the op of its first such path is switched to the
    transformer (ops do not change the topology, so the architecture stays consistent); seeds whose topology
    leaves a depth without any active path are skipped. Otherwise seeds without any transformer are skipped.
    """
    archs: list[ArchCode] = []
    next_seed = seed
    for i in range(num_archs):
        depth, mul = depths[i % len(depths)], channel_muls[i % len(channel_muls)]
        path_depth = [d for d in range(depth) for _ in range(3)][1:-1]
        for _ in range(1000):
            arch = random_arch(num_blocks, depth, "dast", seed=next_seed, channel_mul=mul, grid=grid)
            next_seed += 1
            t_op = arch.ops.index("transformer")
            active = [(b, p) for b in range(num_blocks) for p in range(len(path_depth)) if arch.arch_code_a[b][p]]
            if every_depth:
                by_depth = [[(b, p) for b, p in active if path_depth[p] == d] for d in range(depth)]
                if not all(by_depth):
                    continue
                for paths in by_depth:
                    if not any(arch.arch_code_c[b][p] == t_op for b, p in paths):
                        b, p = paths[0]
                        arch.arch_code_c[b][p] = t_op
                archs.append(arch)
                break
            if arch.op_counts().get("transformer", 0) > 0:
                archs.append(arch)
                break
        else:
            raise RuntimeError(f"no suitable architecture among 1000 seeds from {next_seed - 1000}.")
    return archs


def measure_arch(
    arch: ArchCode,
    patch_size: Sequence[int],
    batch_size: int,
    device: torch.device,
    num_classes: int = 3,
    amp: bool = True,
    warmup: int = 0,
    set_to_none: bool = False,
) -> dict[str, Any]:
    """
    Estimate and measure the training memory of one architecture.

    The measured step starts like every step after the first: momentum buffers allocated (a zero-gradient SGD step
    creates them without changing the weights) and gradients zeroed in place (``set_to_none=False``, MONAI
    ``SupervisedTrainer``'s default) or freed (``set_to_none=True``).

    Returns:
        a record with the estimate, the measured peak and its split, and saved bytes per component.
    """
    torch.manual_seed(0)
    net = DASTNet(arch, in_channels=1, num_classes=num_classes).to(device)
    num_parameters = sum(p.numel() for p in net.parameters())
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    loss_fn = DiceCELoss(
        include_background=False, to_onehot_y=True, softmax=True, squared_pred=True, batch=True,
        smooth_nr=1e-5, smooth_dr=1e-5,
    )
    scaler = make_grad_scaler(device, amp)
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(batch_size, 1, *patch_size, generator=gen).to(device)
    y = torch.randint(0, num_classes, (batch_size, 1, *patch_size), generator=gen).to(device)
    for p in net.parameters():  # create the momentum buffers without moving the weights
        p.grad = torch.zeros_like(p)
    optimizer.step()
    tracker = MemoryTracker(device)
    census_box: dict[str, dict[str, int]] = {}

    def step() -> None:
        with tracker.phase("forward"), SavedTensorCensus(net, exclude=[x, y, *net.parameters()]) as census:
            with autocast(device, amp):
                loss = loss_fn(net(x), y)
            census_box["saved"] = census.count()
        with tracker.phase("backward"):
            scaler.scale(loss).backward()
        with tracker.phase("optimizer"):
            scaler.step(optimizer)
            scaler.update()

    for _ in range(warmup):
        optimizer.zero_grad(set_to_none=set_to_none)
        step()
    optimizer.zero_grad(set_to_none=set_to_none)  # outside the measurement: the profiler misses frees of older blocks
    grads = [p.grad for p in net.parameters()]
    live = [*net.parameters(), *grads, *optimizer_state_tensors(optimizer), x, y]
    start = time.perf_counter()
    measured = tracker.measure(step, live)
    step_s = time.perf_counter() - start
    estimate = estimate_memory(arch, patch_size, batch_size, 1, num_classes, num_parameters=num_parameters)
    est_parts = estimate_components(arch, patch_size, batch_size, num_classes)
    # what estimate_memory adds beyond saved activations and the 3 parameter copies: its backward workspace
    workspace = estimate - num_parameters * 3 * 4 - sum(est_parts.values())
    forward_end = measured["phases"].get("backward", {}).get("start_bytes")
    saved = census_box.get("saved", {})
    return {
        "seed": arch.provenance.get("seed"),
        "num_blocks": arch.num_blocks,
        "num_depths": arch.num_depths,
        "channel_mul": arch.channel_mul,
        "grid": arch.grid,
        "op_counts": arch.op_counts(),
        "input_nodes": arch.node_a[0],
        "output_nodes": arch.node_a[-1],
        "num_parameters": num_parameters,
        "estimate_bytes": int(estimate),
        "measured_peak_bytes": int(measured["peak_bytes"]),
        "relative_error": (estimate - measured["peak_bytes"]) / measured["peak_bytes"],
        "measured": {
            "baseline_bytes": measured["baseline_bytes"],
            "forward_end_bytes": forward_end,
            "phases": measured["phases"],
            "peak_phase": next(
                (k for k, v in measured["phases"].items() if v["peak_bytes"] == measured["peak_bytes"]), None
            ),
            "saved_total_bytes": int(sum(saved.values())),
            "saved_bytes": saved,
        },
        "estimate_parts": {
            "parameters_gradients_momentum_bytes": int(num_parameters * 3 * 4),
            "workspace_bytes": int(workspace),
            "activations_total_bytes": int(sum(est_parts.values())),
            "activations_bytes": {k: int(v) for k, v in est_parts.items()},
        },
        "profiled_step_s": round(step_s, 3),
    }


def _groups(record: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """(estimated, measured) saved bytes per component: stems (all depths), head, loss, each cell op."""
    est, meas = record["estimate_parts"]["activations_bytes"], record["measured"]["saved_bytes"]
    keys = sorted(set(est) | set(meas))
    out: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for k in keys:
        group = "stems" if k.startswith("stem") else k
        out[group][0] += est.get(k, 0.0)
        out[group][1] += meas.get(k, 0.0)
    return {k: (v[0], v[1]) for k, v in out.items()}


def _rank_and_error(estimates: Sequence[float], measured: Sequence[float]) -> tuple[float, float, float, float]:
    """Spearman rho, median / max absolute relative error and mean signed relative error."""
    from scipy.stats import spearmanr

    rho = float(spearmanr(estimates, measured).statistic) if len(measured) > 2 else float("nan")
    signed = [(e - m) / m for e, m in zip(estimates, measured)]
    errors = [abs(v) for v in signed]
    return rho, statistics.median(errors), max(errors), statistics.mean(signed)


def summarise(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Spearman rho, median and maximum relative error, and the median split of the difference by component."""
    meas = [r["measured_peak_bytes"] for r in records]
    rho, median_err, max_err, mean_signed = _rank_and_error([r["estimate_bytes"] for r in records], meas)
    groups = [_groups(r) for r in records]
    names = sorted({k for g in groups for k in g})
    diff = {
        name: mib(statistics.median([g.get(name, (0.0, 0.0))[0] - g.get(name, (0.0, 0.0))[1] for g in groups]))
        for name in names
    }
    backward = [r["measured_peak_bytes"] - r["measured"]["forward_end_bytes"]
                for r in records if r["measured"]["forward_end_bytes"] is not None]
    return {
        "spearman_rho": rho,
        "median_relative_error": median_err,
        "max_relative_error": max_err,
        "mean_signed_relative_error": mean_signed,
        "targets": {"spearman_rho": 0.98, "median_relative_error": 0.05},
        "meets_targets": bool(rho >= 0.98 and median_err <= 0.05),
        "median_estimate_minus_measured_saved_mib": diff,
        "median_rise_after_forward_mib": mib(statistics.median(backward)) if backward else None,
        "median_estimated_workspace_mib": mib(
            statistics.median(r["estimate_parts"]["workspace_bytes"] for r in records)
        ),
    }


def _markdown(records: Sequence[dict[str, Any]], summary: dict[str, Any], settings: dict[str, Any]) -> str:
    rows = []
    for i, r in enumerate(records):
        m = r["measured"]
        rows.append([
            i, r["seed"], r["num_depths"], r["channel_mul"],
            "/".join(str(r["op_counts"].get(k, 0)) for k in ("skip_connect", "conv_3x3x3", "transformer")),
            f"{r['num_parameters'] / 1e6:.2f}", mib(r["estimate_bytes"]), mib(r["measured_peak_bytes"]),
            f"{100 * r['relative_error']:+.1f}%", mib(m["baseline_bytes"]),
            mib(m["forward_end_bytes"]) if m["forward_end_bytes"] is not None else "n/a",
            mib(r["estimate_parts"]["activations_total_bytes"]), mib(m["saved_total_bytes"]),
        ])
    table = markdown_table(
        ["#", "seed", "depths", "channel_mul", "skip/conv/tf", "params (M)", "estimate MiB", "measured peak MiB",
         "error", "live at start MiB", "end of forward MiB", "est. saved MiB",
         "measured saved MiB"],
        rows,
    )
    s = summary
    text = (
        f"Settings: {settings['num_archs']} random DAST architectures, {settings['num_blocks']} blocks, depths "
        f"{settings['depths']}, channel_mul {settings['channel_muls']}, grid {settings['grid']}, patch "
        f"{settings['patch_size']}, batch {settings['batch_size']}.\n\n"
        f"**Spearman rho {s['spearman_rho']:.3f}** (target >= 0.98), **median relative error "
        f"{100 * s['median_relative_error']:.1f}%** (target <= 5%), max {100 * s['max_relative_error']:.1f}%, "
        f"mean signed {100 * s['mean_signed_relative_error']:+.1f}%: "
        f"{'targets met' if s['meets_targets'] else 'targets missed'}.\n\n" + table
    )
    diff_rows = [[k, v] for k, v in s["median_estimate_minus_measured_saved_mib"].items()]
    text += "\nMedian (estimate - measured) saved-for-backward bytes by component, MiB:\n\n"
    text += markdown_table(["component", "estimate - measured MiB"], diff_rows)
    text += (
        f"\nMedian rise of the peak above the end-of-forward level (loss temporaries, backward working set, "
        f"gradients): {s['median_rise_after_forward_mib']} MiB; the estimate's workspace term ({WORKSPACE_COPIES} "
        f"full-resolution copies of the first depth's channels) is {s['median_estimated_workspace_mib']} MiB and "
        f"its gradient term is part of the parameter term.\n"
    )
    return text


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line; see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory_estimate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--num_archs", type=int, default=10, help="[OPTIONAL] architectures (10)")
    parser.add_argument("--num_blocks", type=int, default=6, help="[OPTIONAL] blocks of the grid (6)")
    parser.add_argument("--depths", type=int, nargs="+", default=[3, 4], help="[OPTIONAL] depths, cycled (3 4)")
    parser.add_argument(
        "--channel_muls", type=float, nargs="+", default=[0.25, 0.375, 0.5], help="[OPTIONAL] cycled (0.25 0.375 0.5)"
    )
    parser.add_argument("--grid", type=int, default=8, help="[OPTIONAL] transformer token grid (8, the paper's)")
    parser.add_argument("--patch", type=int, default=64, help="[OPTIONAL] cubic patch edge (64)")
    parser.add_argument("--batch", type=int, default=2, help="[OPTIONAL] batch; >= 2 avoids CPU slow_conv3d (2)")
    parser.add_argument("--num_classes", type=int, default=3, help="[OPTIONAL] output classes (3)")
    parser.add_argument("--seed", type=int, default=0, help="[OPTIONAL] first architecture seed (0)")
    parser.add_argument("--no_amp", action="store_true", help="[OPTIONAL] float32 on CUDA too (AMP off)")
    parser.add_argument("--set_to_none", action="store_true",
                        help="[OPTIONAL] free gradients between steps (torch's zero_grad default) instead of zeroing "
                             "them in place as the bundle's SupervisedTrainer does; lowers the peak by one gradient "
                             "copy where it falls in the forward pass")
    add_common_args(parser, warmup=0, repeats=1)
    args = parser.parse_args(argv)
    device = resolve_device(args.device, args.threads)
    amp = not args.no_amp
    if args.num_archs < 1:
        raise ValueError(f"--num_archs must be >= 1, got {args.num_archs}.")
    stride = 2 ** (max(args.depths) + 1)
    if args.patch % stride:
        raise ValueError(f"--patch {args.patch} must be a multiple of {stride} for depths {args.depths}.")
    env = environment(device, amp)
    patch = (args.patch,) * 3
    archs = pick_archs(args.num_archs, args.num_blocks, args.depths, args.channel_muls, args.grid, args.seed)
    records = []
    for i, arch in enumerate(archs):
        rec = measure_arch(arch, patch, args.batch, device, args.num_classes, amp, args.warmup, args.set_to_none)
        records.append(rec)
        print(
            f"[{i + 1}/{len(archs)}] seed {rec['seed']} depths {rec['num_depths']} mul {rec['channel_mul']}: "
            f"estimate {mib(rec['estimate_bytes'])} MiB, measured {mib(rec['measured_peak_bytes'])} MiB "
            f"({100 * rec['relative_error']:+.1f}%)",
            flush=True,
        )
    summary = summarise(records)
    settings = {
        "num_archs": args.num_archs, "num_blocks": args.num_blocks, "depths": args.depths,
        "channel_muls": args.channel_muls, "grid": args.grid, "patch_size": list(patch), "batch_size": args.batch,
        "num_classes": args.num_classes, "seed": args.seed, "transformer_at_every_depth": True,
        "warmup": args.warmup, "amp": env["amp"],
        "gradients_between_steps": "freed (set_to_none)" if args.set_to_none else "zeroed in place (SupervisedTrainer)",
        "loss": "DiceCELoss(include_background=False, to_onehot_y, softmax, squared_pred, batch)",
        "optimizer": "SGD(lr=1e-3, momentum=0.9)",
        "measurement": "torch.cuda.max_memory_allocated" if device.type == "cuda"
        else "torch.profiler profile_memory running-total peak + live tensors at start",
    }
    payload = {"benchmark": "memory_estimate", "environment": env, "settings": settings, "summary": summary,
               "architectures": records}
    json_path, md_path = write_results(args.out_dir, "memory_estimate", device, payload,
                                       _markdown(records, summary, settings))
    print(f"rho {summary['spearman_rho']:.3f}, median error {100 * summary['median_relative_error']:.1f}% -> "
          f"{json_path}, {md_path}")
    return payload


if __name__ == "__main__":
    main()
