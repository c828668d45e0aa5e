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
Time and peak memory of one bi-level search step: DAST supernet vs DiNTS supernet (issue 7 item 1a).

A step is what ``dast_components.search.BiLevelStep.step`` does in the search bundle: a weight step (forward,
Dice + CE, backward, SGD momentum step) on one batch, then an architecture step (forward, Dice + CE plus entropy,
topology and :class:`~dast_components.losses.MemoryBudgetLoss` terms at full ramp, backward, Adam step) on another.
Both supernets use the same grid, channels, patch, batch and token grid; only the op pool differs (DAST: skip,
3x3x3 conv, transformer; DiNTS: skip, 3x3x3 conv and the three P3D convs).

Repeats alternate between the two networks so a busy neighbour slows both alike; the median wall time, the median
process CPU time, and the peak memory of a steady-state step (optimiser state allocated, gradients ``None`` at the
start) are reported with DAST / DiNTS ratios (target: time ratio <= 0.8, peak-memory ratio <= 0.7). The defaults
are the search bundle's topology and op settings (12 blocks x 4 depths, token grid 8, channel_mul 0.5, batch 2) at
a 64^3 patch that 2 CPU cores run (the bundle searches at 96^3); a second row repeats the earlier small setting
(3 x 3 grid, width 0.25, token grid 4) unless ``--no_secondary``. ``--profile`` adds where the time goes:
the top operators of one step per network (``torch.profiler``) and forward+backward time of each cell op at each
resolution, multiplied by the number of paths that carry it.

The full DiNTS supernet at the bundle's own 96^3 patch needs about 23 GB for one step, more than a 24 GB machine
spares; ``--cost_patch 96`` (the default; 0 skips it) therefore adds a per-pass comparison at that patch: each op
and connection block of both pools timed one by one (forward+backward, times the paths carrying it) and the
saved-for-backward memory of all paths and ops from the memory model
(:func:`dast_components.networks.costs.path_cost_table`). It is not a step measurement; it shows how the ratio
moves with the patch (transformer cost is nearly fixed by the token and key grids, conv cost grows with volume).

Example::

    python -m benchmarks.search_step --device cpu
    python -m benchmarks.search_step --num_blocks 2 --num_depths 2 --patch 32 --grid 2 --repeats 1 --no_secondary \\
        --out_dir /tmp/b
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence
from typing import Any

import torch
from monai.losses import DiceCELoss
from monai.networks.nets import DiNTS

from benchmarks.common import (
    MemoryTracker,
    add_common_args,
    environment,
    markdown_table,
    mib,
    optimizer_state_tensors,
    resolve_device,
    summarise_times,
    synchronize,
    time_call,
    write_results,
)
from dast_components.losses import MemoryBudgetLoss
from dast_components.networks import DASTSearchSpace, build_op, make_cell
from dast_components.networks.costs import path_cost_table
from dast_components.search import BiLevelStep, arch_parameters, weight_parameters

__all__ = ["SearchBench", "op_costs", "main"]

POOLS = ("dast", "dints")


class SearchBench:
    """
    A search supernet with its engine and two fixed random batches, ready to run bi-level steps.

    Args:
        ops: op pool preset (``"dast"`` or ``"dints"``).
        num_blocks, num_depths, channel_mul, grid: search space settings.
        patch_size: training patch.
        batch_size: patches per batch.
        device: where to run.
        memory_lambda: target of the memory-budget loss.
        num_classes: output classes.
        amp: float16 autocast and gradient scaling (CUDA only).
        seed: weight initialisation and data seed (the same for both pools).
    """

    def __init__(
        self,
        ops: str,
        num_blocks: int,
        num_depths: int,
        channel_mul: float,
        grid: int,
        patch_size: Sequence[int],
        batch_size: int,
        device: torch.device,
        memory_lambda: float = 0.5,
        num_classes: int = 3,
        amp: bool = False,
        seed: int = 0,
    ) -> None:
        torch.manual_seed(seed)
        self.space = DASTSearchSpace(
            channel_mul=channel_mul, num_blocks=num_blocks, num_depths=num_depths, ops=ops, grid=grid
        )
        self.net = DiNTS(dints_space=self.space, in_channels=1, num_classes=num_classes, use_downsample=True)
        self.net.to(device)
        self.device = device
        loss = DiceCELoss(to_onehot_y=True, softmax=True, squared_pred=True, batch=True)
        optimizer = torch.optim.SGD(weight_parameters(self.net), lr=0.025, momentum=0.9, weight_decay=4e-5)
        arch_optimizer = torch.optim.Adam(arch_parameters(self.net), lr=8e-3, betas=(0.5, 0.999))
        self.memory = MemoryBudgetLoss(self.space, patch_size, memory_lambda).to(device)
        self.engine = BiLevelStep(
            self.net, loss, optimizer, arch_optimizer, memory_loss=self.memory, amp=amp and device.type == "cuda"
        )
        gen = torch.Generator().manual_seed(seed + 1)
        self.batches = [
            (
                torch.rand(batch_size, 1, *patch_size, generator=gen).to(device),
                torch.randint(0, num_classes, (batch_size, 1, *patch_size), generator=gen).to(device),
            )
            for _ in range(2)
        ]
        self.tracker = MemoryTracker(device)

    @property
    def num_weights(self) -> int:
        """Weight parameters (architecture logits excluded)."""
        return sum(p.numel() for p in weight_parameters(self.net))

    def weight_step(self) -> None:
        """Forward, Dice + CE, backward and SGD step of the weights on the first batch."""
        with self.tracker.phase("weight_step"):
            self.engine.weight_step(self.batches[0])

    def arch_step(self) -> None:
        """Forward, Dice + CE plus the regularisers at full ramp, backward and Adam step of the logits."""
        with self.tracker.phase("arch_step"):
            self.engine.arch_step(self.batches[1], ramp=1.0)

    def step(self) -> None:
        """One bi-level step: weight step then architecture step."""
        self.weight_step()
        self.arch_step()

    def live_tensors(self) -> list[torch.Tensor]:
        """Parameters, logits, optimiser states and batches: what is allocated between steps."""
        out = list(self.net.parameters())
        out += optimizer_state_tensors(self.engine.optimizer) + optimizer_state_tensors(self.engine.arch_optimizer)
        out += [t for batch in self.batches for t in batch]
        return out

    def measure_memory(self) -> dict[str, Any]:
        """Peak memory of one steady-state step (gradients set to ``None`` first, outside the measurement)."""
        for p in self.net.parameters():
            p.grad = None
        return self.tracker.measure(self.step, self.live_tensors())


def op_costs(
    ops: str, num_depths: int, channel_mul: float, grid: int, patch_size: Sequence[int], batch_size: int,
    device: torch.device, repeats: int = 3,
) -> list[dict[str, Any]]:
    """
    Forward+backward seconds of each op of a pool and of each connection block at each resolution of the grid.

    Every path of a supernet runs its connection block and all ops of the pool, so ``paths * seconds`` is what each
    item costs per forward+backward of the network.

    Returns:
        records ``{"item", "depth", "channels", "size", "paths", "seconds", "total_s"}``.
    """
    space = DASTSearchSpace(channel_mul=channel_mul, num_blocks=1, num_depths=num_depths, ops=ops, grid=grid)
    channels, shift = space.filter_nums, 1
    paths_per_depth = [0] * num_depths
    rates_per_depth: list[list[int]] = [[] for _ in range(num_depths)]
    for p, d in enumerate(space.arch_code2out):
        paths_per_depth[d] += 1
        rates_per_depth[d].append(space.arch_code2ops[p])
    records = []
    for d in range(num_depths):
        size = [s // 2 ** (d + shift) for s in patch_size]
        c = channels[d + shift]
        items: list[tuple[str, torch.nn.Module, torch.Tensor, int]] = []
        for name in space.op_names:
            items.append((name, build_op(name, c, transformer=dict(space.transformer_settings)),
                          torch.rand(batch_size, c, *size), paths_per_depth[d]))
        for rate in sorted(set(rates_per_depth[d])):
            c_in = channels[d + rate + shift]
            in_size = [int(s * 2 ** (-rate)) for s in size]
            first_op = [1] + [0] * (len(space.op_names) - 1)  # any op: only the connection block is timed
            block = make_cell(space.op_names)(c_in, c, rate, first_op).preprocess
            items.append((f"connect({rate:+d})", block, torch.rand(batch_size, c_in, *in_size),
                          rates_per_depth[d].count(rate)))
        for name, module, x, count in items:
            module.to(device)
            x = x.to(device).requires_grad_(True)

            def run() -> None:
                module(x).float().sum().backward()

            run()
            times = [time_call(run, device)[0] for _ in range(repeats)]
            seconds = statistics.median(times)
            records.append({"item": name, "depth": d, "channels": c, "size": size, "paths": count,
                            "seconds": round(seconds, 5), "total_s": round(seconds * count, 4)})
    synchronize(device)
    return records


def per_pass_costs(
    num_depths: int, channel_mul: float, grid: int, patch: int, batch_size: int, device: torch.device,
    repeats: int = 3,
) -> dict[str, Any]:
    """Per-pass time (ops timed one by one, see :func:`op_costs`) and modelled saved memory of both supernets at
    ``patch^3``, with DAST / DiNTS ratios; one block's paths, which every block of the grid repeats."""
    out: dict[str, Any] = {"patch_size": [patch] * 3, "batch_size": batch_size}
    for pool in POOLS:
        space = DASTSearchSpace(channel_mul=channel_mul, num_blocks=1, num_depths=num_depths, ops=pool, grid=grid)
        costs = op_costs(pool, num_depths, channel_mul, grid, (patch,) * 3, batch_size, device, repeats)
        table = path_cost_table(space.filter_nums, (patch,) * 3, num_depths, space.op_names, True,
                                {k: v for k, v in space.transformer_settings.items() if k != "dropout"})
        by_item: dict[str, float] = {}
        for c in costs:
            key = c["item"].split("(")[0]
            by_item[key] = round(by_item.get(key, 0.0) + c["total_s"], 4)
        out[pool] = {"seconds": round(sum(c["total_s"] for c in costs), 4), "seconds_by_item": by_item,
                     "saved_mib_per_item": round(float(table.sum()) * 4 / 2**20, 1), "op_costs": costs}
    out["ratio_dast_over_dints"] = {
        "seconds": round(out["dast"]["seconds"] / out["dints"]["seconds"], 3),
        "saved_memory": round(out["dast"]["saved_mib_per_item"] / out["dints"]["saved_mib_per_item"], 3),
    }
    return out


def _top_ops(bench: SearchBench, device: torch.device, rows: int = 12) -> list[dict[str, Any]]:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        bench.step()
        synchronize(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    averages = sorted(prof.key_averages(), key=lambda e: getattr(e, key, 0), reverse=True)
    total = sum(getattr(e, key, 0) for e in averages) or 1
    return [
        {"op": e.key, "calls": e.count, "self_s": round(getattr(e, key, 0) / 1e6, 4),
         "share": round(getattr(e, key, 0) / total, 4)}
        for e in averages[:rows]
    ]


def _setting_line(settings: dict[str, Any]) -> str:
    return (
        f"{settings['num_blocks']} blocks x {settings['num_depths']} depths, channel_mul {settings['channel_mul']}, "
        f"patch {settings['patch_size']}, batch {settings['batch_size']}, token grid {settings['grid']}, memory "
        f"lambda {settings['memory_lambda']}; warm-up {settings['warmup']}, {settings['repeats']} alternating "
        f"repeats, medians"
    )


def _ratio_table(results: dict[str, Any]) -> str:
    rows = []
    for pool in POOLS:
        r = results[pool]
        t, m = r["time"], r["memory"]
        rows.append([pool, f"{r['num_weights'] / 1e6:.2f}", r["weight_step"]["wall_median_s"],
                     r["arch_step"]["wall_median_s"], t["wall_median_s"], t["cpu_median_s"], mib(m["peak_bytes"])])
    ratio = results["ratio_dast_over_dints"]
    rows.append(["DAST / DiNTS", "", ratio["weight_step_wall"], ratio["arch_step_wall"], ratio["step_wall"],
                 ratio["step_cpu"], ratio["peak_memory"]])
    return markdown_table(
        ["supernet", "weights (M)", "weight step s", "arch step s", "bi-level step s", "step CPU s",
         "peak memory MiB"],
        rows,
    )


def _markdown(payload: dict[str, Any]) -> str:
    settings, results = payload["settings"], payload["results"]
    ratio = results["ratio_dast_over_dints"]
    text = f"**Headline** (the search bundle's topology and op settings): {_setting_line(settings)}.\n\n"
    text += _ratio_table(results)
    met = "met" if results["target"]["met"] else "missed"
    text += (f"\nTarget DAST <= {TARGET['step_wall_ratio_max']} x DiNTS step time and <= "
             f"{TARGET['peak_memory_ratio_max']} x peak memory: {ratio['step_wall']:.2f} x time, "
             f"{ratio['peak_memory']:.2f} x memory, {met}.\n")
    if "secondary" in payload:
        sec = payload["secondary"]
        text += f"\n**Secondary row, {sec['settings']['label']}**: {_setting_line(sec['settings'])}.\n\n"
        text += _ratio_table(sec["results"])
    if "per_pass" in payload:
        pp = payload["per_pass"]
        size = "x".join(map(str, pp["patch_size"]))
        text += (f"\n**Per-pass comparison at {size}** (the search bundle's own patch; not a step: ops and connection "
                 "blocks timed one by one, forward+backward, times the paths carrying them; memory = "
                 "saved-for-backward elements of every path and op from the memory model, per batch item):\n\n")
        items = sorted({k for pool in POOLS for k in pp[pool]["seconds_by_item"]})
        text += markdown_table(
            ["supernet", "one pass s", *[f"{k} s" for k in items], "saved MiB per item"],
            [[pool, pp[pool]["seconds"], *[pp[pool]["seconds_by_item"].get(k, "") for k in items],
              pp[pool]["saved_mib_per_item"]] for pool in POOLS]
            + [["DAST / DiNTS", pp["ratio_dast_over_dints"]["seconds"], *[""] * len(items),
                pp["ratio_dast_over_dints"]["saved_memory"]]],
        )
    if "profile" in results:
        for pool in POOLS:
            costs = results["profile"][pool]["op_costs"]
            text += (f"\n{pool} (headline setting): forward+backward of each item x paths carrying it (one network "
                     f"pass):\n\n")
            text += markdown_table(
                ["item", "depth", "channels", "size", "paths", "s each", "s total"],
                [[c["item"], c["depth"], c["channels"], "x".join(map(str, c["size"])), c["paths"], c["seconds"],
                  c["total_s"]] for c in costs],
            )
            top = results["profile"][pool]["top_ops"]
            text += f"\n{pool}: top operators of one bi-level step (self time):\n\n"
            text += markdown_table(["op", "calls", "self s", "share"],
                                   [[o["op"], o["calls"], o["self_s"], o["share"]] for o in top])
    return text


SECONDARY = {"label": "small grid (the earlier headline)", "num_blocks": 3, "num_depths": 3, "channel_mul": 0.25,
             "grid": 4}
TARGET = {"step_wall_ratio_max": 0.8, "peak_memory_ratio_max": 0.7}


def run_setting(
    num_blocks: int, num_depths: int, channel_mul: float, grid: int, patch: int, batch: int, memory_lambda: float,
    warmup: int, repeats: int, device: torch.device, amp: bool, profile: bool, label: str,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both supernets at one setting: alternating repeats of the bi-level step, then one steady-state step each for
    the peak memory (and, with ``profile``, per-op costs and top operators). Returns ``(settings, results)``."""
    stride = 2 ** (num_depths + 1)
    if patch % stride:
        raise ValueError(f"--patch {patch} must be a multiple of {stride} for --num_depths {num_depths}.")
    patch_size = (patch,) * 3
    benches = {
        pool: SearchBench(pool, num_blocks, num_depths, channel_mul, grid, patch_size, batch, device, memory_lambda,
                          amp=amp)
        for pool in POOLS
    }
    for _ in range(warmup):
        for bench in benches.values():
            bench.step()
    samples: dict[str, dict[str, list]] = {p: {"weight": [], "arch": [], "step": []} for p in POOLS}
    for r in range(repeats):
        order = POOLS if r % 2 == 0 else POOLS[::-1]  # alternate so drifting load hits both alike
        for pool in order:
            bench = benches[pool]
            w = time_call(bench.weight_step, device)
            a = time_call(bench.arch_step, device)
            samples[pool]["weight"].append(w)
            samples[pool]["arch"].append(a)
            samples[pool]["step"].append((w[0] + a[0], w[1] + a[1]))
            print(f"[{label}] repeat {r + 1}/{repeats} {pool}: step {w[0] + a[0]:.2f} s", flush=True)
    results: dict[str, Any] = {}
    for pool, bench in benches.items():
        memory = bench.measure_memory()
        results[pool] = {
            "num_weights": bench.num_weights,
            "num_arch_logits": sum(p.numel() for p in arch_parameters(bench.net)),
            "op_names": list(bench.space.op_names),
            "weight_step": summarise_times(samples[pool]["weight"]),
            "arch_step": summarise_times(samples[pool]["arch"]),
            "time": summarise_times(samples[pool]["step"]),
            "memory": memory,
        }
        print(f"[{label}] {pool}: median step {results[pool]['time']['wall_median_s']:.2f} s, peak "
              f"{mib(memory['peak_bytes'])} MiB", flush=True)
    d, n = results["dast"], results["dints"]
    results["ratio_dast_over_dints"] = {
        "weight_step_wall": round(d["weight_step"]["wall_median_s"] / n["weight_step"]["wall_median_s"], 3),
        "arch_step_wall": round(d["arch_step"]["wall_median_s"] / n["arch_step"]["wall_median_s"], 3),
        "step_wall": round(d["time"]["wall_median_s"] / n["time"]["wall_median_s"], 3),
        "step_cpu": round(d["time"]["cpu_median_s"] / n["time"]["cpu_median_s"], 3),
        "peak_memory": round(d["memory"]["peak_bytes"] / n["memory"]["peak_bytes"], 3),
    }
    ratio = results["ratio_dast_over_dints"]
    results["target"] = {**TARGET, "met": ratio["step_wall"] <= TARGET["step_wall_ratio_max"]
                         and ratio["peak_memory"] <= TARGET["peak_memory_ratio_max"]}
    if profile:
        results["profile"] = {
            pool: {
                "op_costs": op_costs(pool, num_depths, channel_mul, grid, patch_size, batch, device),
                "top_ops": _top_ops(benches[pool], device),
            }
            for pool in POOLS
        }
    settings = {
        "label": label, "num_blocks": num_blocks, "num_depths": num_depths, "channel_mul": channel_mul,
        "grid": grid, "patch_size": list(patch_size), "batch_size": batch, "memory_lambda": memory_lambda,
        "warmup": warmup, "repeats": repeats, "amp": amp,
        "weight_optimizer": "SGD(lr=0.025, momentum=0.9, weight_decay=4e-5)",
        "arch_optimizer": "Adam(lr=8e-3, betas=(0.5, 0.999))", "ramp": 1.0,
        "loss": "DiceCELoss(to_onehot_y, softmax, squared_pred, batch) + entropy + 0.001 topology + memory",
    }
    return settings, results


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line; see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.search_step", description=__doc__.split("\n\n")[0])
    parser.add_argument("--num_blocks", type=int, default=12, help="[OPTIONAL] blocks of the grid (12, the bundle's)")
    parser.add_argument("--num_depths", type=int, default=4, help="[OPTIONAL] resolutions (4, the bundle's)")
    parser.add_argument("--channel_mul", type=float, default=0.5, help="[OPTIONAL] width (0.5, the bundle's)")
    parser.add_argument("--grid", type=int, default=8, help="[OPTIONAL] token grid per axis (8, the bundle's)")
    parser.add_argument("--patch", type=int, default=64,
                        help="[OPTIONAL] cubic patch edge (64: the bundle searches at 96^3, which 2 CPU cores do not "
                             "run in reasonable time)")
    parser.add_argument("--batch", type=int, default=2, help="[OPTIONAL] batch; >= 2 avoids CPU slow_conv3d (2)")
    parser.add_argument("--memory_lambda", type=float, default=0.5, help="[OPTIONAL] memory budget target (0.5)")
    parser.add_argument("--profile", action="store_true", help="[OPTIONAL] add per-op costs and top operators")
    parser.add_argument("--no_secondary", action="store_true",
                        help="[OPTIONAL] skip the second, small-grid row (3 blocks x 3 depths, width 0.25, grid 4)")
    parser.add_argument("--cost_patch", type=int, default=96,
                        help="[OPTIONAL] patch edge of the per-pass op-cost comparison (96, the bundle's search patch; "
                             "0 skips it)")
    add_common_args(parser, warmup=1, repeats=3)
    args = parser.parse_args(argv)
    device = resolve_device(args.device, args.threads)
    if args.repeats < 1 or args.warmup < 0:
        raise ValueError(f"--repeats must be >= 1 and --warmup >= 0, got {args.repeats} and {args.warmup}.")
    env = environment(device)
    settings, results = run_setting(
        args.num_blocks, args.num_depths, args.channel_mul, args.grid, args.patch, args.batch, args.memory_lambda,
        args.warmup, args.repeats, device, env["amp"], args.profile, "headline",
    )
    payload = {"benchmark": "search_step", "environment": env, "settings": settings, "results": results}
    if not args.no_secondary:
        sec_settings, sec_results = run_setting(
            SECONDARY["num_blocks"], SECONDARY["num_depths"], SECONDARY["channel_mul"], SECONDARY["grid"],
            args.patch, args.batch, args.memory_lambda, args.warmup, args.repeats, device, env["amp"], False,
            SECONDARY["label"],
        )
        payload["secondary"] = {"settings": sec_settings, "results": sec_results}
    if args.cost_patch:
        payload["per_pass"] = per_pass_costs(args.num_depths, args.channel_mul, args.grid, args.cost_patch,
                                             args.batch, device)
        print(f"[per-pass {args.cost_patch}^3] DAST / DiNTS time {payload['per_pass']['ratio_dast_over_dints']}",
              flush=True)
    json_path, md_path = write_results(args.out_dir, "search_step", device, payload, _markdown(payload))
    ratio = results["ratio_dast_over_dints"]
    print(f"DAST / DiNTS step time {ratio['step_wall']:.2f} x, peak memory {ratio['peak_memory']:.2f} x "
          f"-> {json_path}, {md_path}")
    return payload


if __name__ == "__main__":
    main()
