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
Inference knobs of the KiTS bundle, measured per sliding window (issue 16 item 3).

The shipped DAST architecture (``bundles/dast_kits19_seg/models/arch_code.json``, random weights) runs one window of
``--size``^3 in eager PyTorch with each CPU setting (``torch.inference_mode``):

- ``float32``: one window per call (``sw_batch_size`` 1, as ``small_machine.json``);
- ``sw_batch_size 2``: two windows per call (``inference.json``'s default), time per window;
- ``channels_last_3d``: a copy of the network in ``torch.channels_last_3d`` memory format (converted once, before
  timing), each window converted inside the timed call as a sliding window would have to;
- ``bfloat16``: ``torch.autocast("cpu", dtype=torch.bfloat16)`` around the forward pass.

The last two are candidates the bundle does not expose; they are measured to decide whether it should.

Each setting first runs once for the differences (the largest absolute logit difference and the argmax agreement
with ``float32``); that pass is timed as a first estimate, and a setting over ``--slow_factor`` times float32's time
per window there keeps that one time instead of being repeated (a setting that slow is ruled out either way). The
others alternate within each repeat (warm-up first); medians and the speed-up per window over ``float32`` are
recorded. A second table counts the
windows MONAI's sliding window visits on a KiTS-sized CT (``--volume``, the 512 x 512 x 200 voxels at 0.78 x 0.78 x
2.5 mm resampled to the bundle's 1 mm) for each window size and overlap: the network time of a volume is that count
times the time per window (the window sizes' own times are in ``cpu_runtimes_cpu.md``). AMP is a CUDA setting
(``amp`` in ``inference.json``); without a GPU it is not measured here.

Example::

    python -m benchmarks.inference_knobs --threads 1               # 96^3 windows
    python -m benchmarks.inference_knobs --threads 1 --settings "sw_batch_size 2" channels_last_3d
    python -m benchmarks.inference_knobs --threads 1 --size 32 --settings bfloat16 --tag 32   # bfloat16: slow here
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from benchmarks.common import (
    add_common_args,
    environment,
    markdown_table,
    resolve_device,
    summarise_times,
    time_call,
    write_results,
)
from benchmarks.inference import build_model, dast_arch, num_windows

__all__ = ["SETTINGS", "knob_callables", "main", "window_counts"]

SETTINGS = ("float32", "sw_batch_size 2", "channels_last_3d", "bfloat16")


def knob_callables(network: nn.Module, size: int) -> tuple[dict[str, Callable[[], torch.Tensor]], dict[str, int]]:
    """
    One zero-argument callable per setting of :data:`SETTINGS`, each returning the float32 logits of its windows,
    and the windows each call covers.

    Args:
        network: the network in eval mode, on the CPU.
        size: window edge.
    """
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, size, size, size, generator=g)
    one = x[:1]
    network_last = copy.deepcopy(network).to(memory_format=torch.channels_last_3d)  # converted once, not timed

    def float32() -> torch.Tensor:
        with torch.inference_mode():
            return network(one).float()

    def batch2() -> torch.Tensor:
        with torch.inference_mode():
            return network(x).float()

    def channels_last() -> torch.Tensor:
        with torch.inference_mode():
            return network_last(one.contiguous(memory_format=torch.channels_last_3d)).float().contiguous()

    def bfloat16() -> torch.Tensor:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return network(one).float()

    calls = {"float32": float32, "sw_batch_size 2": batch2, "channels_last_3d": channels_last, "bfloat16": bfloat16}
    return calls, {name: 2 if name == "sw_batch_size 2" else 1 for name in calls}


def window_counts(volume: Sequence[int], sizes: Sequence[int], overlaps: Sequence[float]) -> list[dict[str, Any]]:
    """Windows of each (size, overlap) on ``volume`` (:func:`benchmarks.inference.num_windows`)."""
    return [{"window": s, "overlap": o, "windows": num_windows(volume, [s] * 3, o)} for s in sizes for o in overlaps]


def _markdown(results: dict[str, Any]) -> str:
    s = results["settings"]
    base = results["times"]["float32"]["per_window_s"]
    rows = []
    for name in results["times"]:
        t = results["times"][name]
        note = "one pass (over slow_factor x float32: not repeated)" if name in s.get("not_repeated", []) else ""
        rows.append([name, t["per_window_s"], round(base / t["per_window_s"], 2), results["max_abs_diff"][name],
                     results["argmax_agreement"][name], note])
    text = (f"Shipped DAST (random weights), one {s['size']}^3 window per call (two for `sw_batch_size 2`), "
            f"{s['threads']} thread(s); a first pass of each setting for the differences (a setting over "
            f"{s.get('slow_factor')} x float32 there keeps that one time), warm-up "
            f"{s['warmup']}, then {s['repeats']} repeats with the settings alternating; medians per window. Largest "
            f"float32 logit {results['max_abs_logit']}.\n\n")
    text += markdown_table(["setting", "s / window (median)", "speed-up vs float32", "max abs logit diff",
                            "argmax agreement", "note"], rows)
    text += (f"\n\nWindows on a KiTS-sized CT ({' x '.join(map(str, s['volume']))} voxels at 1 mm) by window and "
             "overlap:\n\n")
    text += markdown_table(["window", "overlap", "windows"],
                           [[f"{r['window']}^3", r["overlap"], r["windows"]] for r in results["window_counts"]])
    return text + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line entry point; returns the results payload."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.inference_knobs", description=__doc__.split("\n")[1])
    add_common_args(parser, warmup=1, repeats=3)
    parser.add_argument("--size", type=int, default=96, help="[OPTIONAL] window edge of the timed calls (96)")
    parser.add_argument("--volume", type=int, nargs=3, default=[399, 399, 500],
                        help="[OPTIONAL] voxels after resampling to 1 mm (399 399 500: 512 x 512 x 200 at 0.78 x 0.78 "
                             "x 2.5 mm)")
    parser.add_argument("--window_sizes", type=int, nargs="+", default=[96, 128, 160])
    parser.add_argument("--overlaps", type=float, nargs="+", default=[0.25, 0.5])
    parser.add_argument("--tag", default="", help="[OPTIONAL] suffix of the result file names (none)")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS,
                        help="[OPTIONAL] settings to measure (all; float32 always runs as the reference)")
    parser.add_argument("--slow_factor", type=float, default=5.0,
                        help="[OPTIONAL] a setting over this many times float32's time per window in its first pass "
                             "is timed by that pass only, not repeated (5)")
    args = parser.parse_args(argv)
    if args.device != "cpu":
        raise SystemExit("this benchmark measures CPU settings: --device cpu only (AMP on CUDA is inference.json's "
                         "amp).")
    if args.size % 32:
        parser.error(f"--size {args.size} must be a multiple of 32 (the network's stride).")
    device = resolve_device("cpu", args.threads)
    arch, arch_info = dast_arch()
    torch.manual_seed(0)
    net = build_model("dast", args.size, arch).eval()
    calls, windows = knob_callables(net, args.size)
    calls = {n: fn for n, fn in calls.items() if n == "float32" or n in args.settings}
    ref = calls["float32"]()
    diffs, agree, first = {}, {}, {}
    for name, fn in calls.items():  # the pass of the differences, timed as a first estimate
        wall, cpu = time.perf_counter(), time.process_time()
        out = fn()[:1]
        first[name] = (time.perf_counter() - wall, time.process_time() - cpu)
        wall = first[name][0]
        diffs[name] = round(float((out - ref).abs().max()), 6)
        agree[name] = round(float((out.argmax(1) == ref.argmax(1)).float().mean()), 6)
        print(f"[inference_knobs] {name}: first pass {wall:.2f} s, max abs logit diff {diffs[name]:.3g}", flush=True)
    # a setting that is far slower per window in its first pass is not repeated (its one pass is its time)
    limit = args.slow_factor * first["float32"][0]
    slow = [n for n in calls if first[n][0] / windows[n] > limit]
    timed = {n: fn for n, fn in calls.items() if n not in slow}
    for _ in range(max(0, args.warmup - 1)):
        for fn in timed.values():
            fn()
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in timed}
    for r in range(args.repeats):
        for name, fn in timed.items():
            samples[name].append(time_call(fn, device))
        print(f"[inference_knobs] repeat {r + 1}/{args.repeats}: "
              + ", ".join(f"{n} {s[-1][0]:.2f} s" for n, s in samples.items()), flush=True)
    samples.update({n: [first[n]] for n in slow})
    times = {}
    for name, s in samples.items():
        t = summarise_times(s)
        t["per_window_s"] = round(t["wall_median_s"] / windows[name], 4)
        times[name] = t
    settings = {"size": args.size, "settings": list(calls), "threads": torch.get_num_threads(), "warmup": args.warmup,
                "repeats": args.repeats, "slow_factor": args.slow_factor, "not_repeated": slow,
                "volume": args.volume, "dast_architecture": arch_info}
    payload = {"environment": environment(device, amp=False), "settings": settings, "times": times,
               "windows_per_call": windows, "max_abs_diff": diffs, "argmax_agreement": agree,
               "max_abs_logit": round(float(ref.abs().max()), 4),
               "window_counts": window_counts(args.volume, args.window_sizes, args.overlaps)}
    json_path, md_path = write_results(args.out_dir, "inference_knobs" + (f"_{args.tag}" if args.tag else ""), device,
                                         payload, _markdown(payload))
    print(f"wrote {json_path} and {md_path}")
    return payload


if __name__ == "__main__":
    main()
