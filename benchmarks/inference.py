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
Inference latency, parameters and peak memory: DAST vs DiNTS, SwinUNETR, UNETR and DynUNet (issue 7 item 1c).

Networks (1 input channel, 3 classes):

- ``dast``: the shipped architecture ``bundles/dast_kits19_seg/models/arch_code.json``; while that file does not
  exist, ``random_arch(12, 4, "dast", seed=0, channel_mul=1.0, grid=8)``, flagged ``"shipped": false`` in the JSON;
- ``dints``: with the shipped DAST, the DiNTS architecture searched by the same command under the same memory budget
  (``benchmarks/archs/dints_arch_code.json``: the search bundle with ``--ops dints``, see ``benchmarks/README.md``);
  with another ``--arch_file``, a DiNTS instance of its grid and width, ``random_arch(..., "dints", seed=0)``;
- ``swinunetr``: MONAI ``SwinUNETR`` with ``feature_size=48`` (the BTCV Model Zoo setting);
- ``unetr``: MONAI ``UNETR`` with its defaults (ViT-B/16, ``feature_size=16``), built for each input size;
- ``dynunet``: MONAI ``DynUNet`` as nnU-Net's 3d_fullres plans it for KiTS19: 6 stages of two 3x3x3 convs, strides
  1, 2, 2, 2, 2, 2, filters 32-64-128-256-320-320, instance norm, leaky ReLU 0.01, deep supervision off.

For each input size (batch 1, ``eval``, ``torch.inference_mode``, float16 autocast on CUDA): median latency of the
repeats (models alternate within each repeat), parameters, and peak memory of one forward pass (the parameters and
input included); that memory pass runs first and doubles as the warm-up (``--warmup`` adds more). Then whole-volume
sliding-window inference (roi, overlap 0.5 and gaussian blending as the bundle uses them) on ``--volume``; where
that is smaller than a KiTS-sized volume (CPU defaults), the KiTS figure is extrapolated by the number of windows and
marked so. ``--profile`` adds, for DAST, DiNTS and SwinUNETR, the top operators of one forward pass and, for DAST
and DiNTS, the forward time of each component (stems, connection blocks, each cell op, head). Target: shipped DAST
latency <= SwinUNETR's at 96^3.

UNETR and SwinUNETR need ``einops`` (``pip install einops``); a model that cannot be built or run for a missing
package is recorded as skipped with the reason.

Example::

    python -m benchmarks.inference --device cpu
    python -m benchmarks.inference --device cuda --sizes 96 160 --volume 512 512 200
"""

from __future__ import annotations

import argparse
import math
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmarks.common import (
    MemoryTracker,
    add_common_args,
    autocast,
    environment,
    markdown_table,
    mib,
    resolve_device,
    summarise_times,
    synchronize,
    time_call,
    write_results,
)
from dast_components.networks import DASTNet, load_arch, random_arch
from dast_components.networks.arch_io import ArchCode

__all__ = [
    "MODELS", "SHIPPED_ARCH", "SEARCHED_DINTS_ARCH", "dast_arch", "dints_arch", "build_model", "num_windows",
    "component_times", "main",
]

MODELS = ("dast", "dints", "swinunetr", "unetr", "dynunet")
_ROOT = Path(__file__).resolve().parents[1]
SHIPPED_ARCH = _ROOT / "bundles" / "dast_kits19_seg" / "models" / "arch_code.json"
#: DiNTS op pool searched with the shipped architecture's command and budget (``--ops dints``)
SEARCHED_DINTS_ARCH = _ROOT / "benchmarks" / "archs" / "dints_arch_code.json"
KITS_VOLUME = (512, 512, 200)


def dast_arch(arch_file: str | Path | None = None, channel_mul: float = 1.0) -> tuple[ArchCode, dict[str, Any]]:
    """
    The DAST architecture to benchmark: ``arch_file`` (default: the shipped one) or, where it does not exist, the
    placeholder ``random_arch(12, 4, "dast", seed=0, channel_mul, grid=8)``.

    Returns:
        the architecture and a record of where it came from (``shipped``, ``source``).
    """
    path = Path(arch_file) if arch_file is not None else SHIPPED_ARCH
    if path.is_file():
        arch = load_arch(path)
        source = str(path.relative_to(_ROOT)) if arch_file is None else str(path)
        return arch, {"shipped": arch_file is None, "source": source, "op_counts": arch.op_counts()}
    if arch_file is not None:
        raise ValueError(f"--arch_file {arch_file} does not exist.")
    arch = random_arch(12, 4, "dast", seed=0, channel_mul=channel_mul, grid=8)
    return arch, {
        "shipped": False,
        "source": f"placeholder random_arch(12, 4, 'dast', seed=0, channel_mul={channel_mul}, grid=8): "
        f"{SHIPPED_ARCH.relative_to(_ROOT)} does not exist",
        "op_counts": arch.op_counts(),
    }


def dints_arch(arch: ArchCode, arch_info: dict[str, Any]) -> tuple[ArchCode | None, dict[str, Any]]:
    """
    The DiNTS architecture to benchmark beside ``arch``: :data:`SEARCHED_DINTS_ARCH` when ``arch`` is the shipped
    DAST architecture (same search command and budget), otherwise ``None`` (:func:`build_model` then uses a random
    DiNTS instance of ``arch``'s grid and width).

    Returns:
        the architecture (or ``None``) and a record of where it came from (``searched``, ``source``).
    """
    if arch_info.get("shipped") and SEARCHED_DINTS_ARCH.is_file():
        code = load_arch(SEARCHED_DINTS_ARCH)
        return code, {"searched": True, "source": str(SEARCHED_DINTS_ARCH.relative_to(_ROOT)),
                      "op_counts": code.op_counts()}
    return None, {"searched": False, "source": f"random_arch({arch.num_blocks}, {arch.num_depths}, 'dints', seed=0, "
                                                f"channel_mul={arch.channel_mul})"}


def build_model(
    name: str, size: int, arch: ArchCode, num_classes: int = 3, dints: ArchCode | None = None
) -> nn.Module:
    """
    One benchmarked network for inputs of ``size``^3 (only UNETR depends on it).

    Args:
        name: one of :data:`MODELS`.
        size: input edge.
        arch: the DAST architecture; without ``dints`` the DiNTS instance is random with its grid and width.
        num_classes: output channels.
        dints: the DiNTS architecture (:func:`dints_arch`), if any.
    """
    if name == "dast":
        return DASTNet(arch, in_channels=1, num_classes=num_classes)
    if name == "dints":
        if dints is None:
            dints = random_arch(arch.num_blocks, arch.num_depths, "dints", seed=0, channel_mul=arch.channel_mul)
        return DASTNet(dints, in_channels=1, num_classes=num_classes)
    if name == "swinunetr":
        from monai.networks.nets import SwinUNETR

        return SwinUNETR(in_channels=1, out_channels=num_classes, feature_size=48)
    if name == "unetr":
        from monai.networks.nets import UNETR

        return UNETR(in_channels=1, out_channels=num_classes, img_size=(size,) * 3)
    if name == "dynunet":
        from monai.networks.nets import DynUNet

        return DynUNet(
            spatial_dims=3, in_channels=1, out_channels=num_classes, kernel_size=[3] * 6, strides=[1] + [2] * 5,
            upsample_kernel_size=[2] * 5, filters=[32, 64, 128, 256, 320, 320],
            norm_name=("INSTANCE", {"affine": True}), act_name=("leakyrelu", {"negative_slope": 0.01}),
            deep_supervision=False, res_block=False,
        )
    raise ValueError(f"unknown model {name!r}; expected one of {MODELS}.")


def num_windows(volume: Sequence[int], roi: Sequence[int], overlap: float) -> int:
    """Windows MONAI's sliding-window inference visits (its scan interval ``int(roi * (1 - overlap))``)."""
    total = 1
    for length, r in zip(volume, roi):
        if length <= r:
            continue
        interval = max(int(r * (1 - overlap)), 1)
        total *= math.ceil((length - r) / interval) + 1
    return total


def component_times(net: DASTNet, x: torch.Tensor, device: torch.device) -> dict[str, float]:
    """
    Forward seconds of each component of a DAST/DiNTS network (input stems, output stems, head, connection blocks,
    each cell op at each depth), measured with forward hooks on one pass (inclusive times; CUDA is synchronised in
    the hooks). ``count:<op> depth <d>`` entries give how many paths carry that op there.
    """
    totals: dict[str, float] = defaultdict(float)
    starts: dict[int, float] = {}
    handles = []

    def label_of(name: str, module: nn.Module) -> str | None:
        parts = name.split(".")
        if len(parts) == 3 and parts[0] in ("stem_down", "stem_up") and parts[2] == "mod":
            return "input stems" if parts[0] == "stem_down" else "output stems"
        if name == "stem_finals":
            return "head"
        if len(parts) == 4 and parts[:2] == ["dints_space", "cell_tree"] and parts[3] == "preprocess":
            return "connection blocks"
        if len(parts) == 6 and parts[:2] == ["dints_space", "cell_tree"] and parts[3:5] == ["op", "ops"]:
            cell_op = net.get_submodule(".".join(parts[:4]))
            path = int(parts[2].strip("()").split(",")[1])
            depth = net.dints_space.arch_code2out[path]
            return f"op:{cell_op.op_names[int(parts[5])]} depth {depth}"
        return None

    def pre(module: nn.Module, args: Any) -> None:
        synchronize(device)
        starts[id(module)] = time.perf_counter()

    def post_for(label: str):
        def post(module: nn.Module, args: Any, output: Any) -> None:
            synchronize(device)
            totals[label] += time.perf_counter() - starts.pop(id(module))

        return post

    for name, module in net.named_modules():
        label = label_of(name, module)
        if label is not None:
            handles.append(module.register_forward_pre_hook(pre))
            handles.append(module.register_forward_hook(post_for(label)))
            if label.startswith("op:"):
                totals["count:" + label[3:]] += 1
    try:
        with torch.inference_mode(), autocast(device):
            synchronize(device)
            start = time.perf_counter()
            net(x)
            synchronize(device)
            totals["total"] = time.perf_counter() - start
    finally:
        for h in handles:
            h.remove()
    return {k: (int(v) if k.startswith("count:") else round(v, 4)) for k, v in sorted(totals.items())}


def _top_ops(model: nn.Module, x: torch.Tensor, device: torch.device, rows: int = 10) -> list[dict[str, Any]]:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch.inference_mode(), autocast(device), profile(activities=activities) as prof:
        model(x)
        synchronize(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    averages = sorted(prof.key_averages(), key=lambda e: getattr(e, key, 0), reverse=True)
    total = sum(getattr(e, key, 0) for e in averages) or 1
    return [{"op": e.key, "calls": e.count, "self_s": round(getattr(e, key, 0) / 1e6, 4),
             "share": round(getattr(e, key, 0) / total, 4)} for e in averages[:rows]]


def _skip_reason(err: ImportError) -> str:
    return f"{type(err).__name__}: {str(err).splitlines()[0]} (pip install einops)"


def _forward(model: nn.Module, x: torch.Tensor, device: torch.device):
    def run() -> None:
        with torch.inference_mode(), autocast(device):
            model(x)

    return run


def _latency_table(results: dict[str, Any], sizes: Sequence[int]) -> str:
    rows = []
    for size in sizes:
        for name, r in results["latency"][str(size)].items():
            if "skipped" in r:
                rows.append([f"{size}^3", name, "skipped", "", "", r["skipped"]])
                continue
            rows.append([f"{size}^3", name, f"{r['num_parameters'] / 1e6:.1f}", r["time"]["wall_median_s"],
                         r["time"]["cpu_median_s"], mib(r["memory"]["peak_bytes"])])
    return markdown_table(["input", "model", "params (M)", "latency s (median)", "CPU s", "peak memory MiB"], rows)


def _markdown(results: dict[str, Any], settings: dict[str, Any]) -> str:
    arch, dints = results["dast_arch"], results.get("dints_arch")
    dints_text = (
        f" DiNTS architecture: {'searched with the same command and budget' if dints['searched'] else 'random'}: "
        f"{dints['source']}." if dints else ""
    )
    text = (
        f"DAST architecture: {'shipped' if arch['shipped'] else 'NOT the shipped one'}: {arch['source']} "
        f"(ops {arch['op_counts']}). Batch 1; the memory pass is the warm-up (+{settings['warmup']}), then "
        f"{settings['repeats']} alternating repeats, medians.{dints_text}\n\n"
    )
    text += _latency_table(results, settings["sizes"])
    t = results.get("target")
    if t:
        text += (f"\nTarget DAST latency <= SwinUNETR at 96^3: {t['dast_s']:.3g} s vs {t['swinunetr_s']:.3g} s "
                 f"({t['ratio']:.2f} x), {'met' if t['met'] else 'missed'}.\n")
    sw = results.get("sliding_window")
    if sw:
        text += (
            f"\nSliding window: roi {sw['roi']}, overlap {sw['overlap']}, sw_batch_size {sw['sw_batch_size']}, "
            f"gaussian; measured on volume {sw['volume']} ({sw['windows']} windows); a KiTS-sized volume "
            f"{sw['kits_volume']} needs {sw['kits_windows']} windows.\n\n"
        )
        rows = []
        for name, r in sw["models"].items():
            if "skipped" in r:
                rows.append([name, "skipped", "", r["skipped"]])
                continue
            rows.append([name, r["wall_s"], r["per_window_s"], r["kits_s"],
                         "measured" if r["kits_measured"] else "extrapolated by windows"])
        text += markdown_table(["model", "volume s", "s / window", "KiTS volume s", "KiTS figure"], rows)
    prof = results.get("profile")
    if prof:
        for name, comp in prof.get("components", {}).items():
            text += f"\n{name}: forward seconds by component (inclusive, one pass at {prof['size']}^3):\n\n"
            rows = [[k, comp.get("count:" + k[3:], ""), v] for k, v in comp.items() if not k.startswith("count:")]
            text += markdown_table(["component", "paths", "s"], rows)
        for name, top in prof.get("top_ops", {}).items():
            text += f"\n{name}: top operators of one forward pass at {prof['size']}^3 (self time):\n\n"
            text += markdown_table(["op", "calls", "self s", "share"],
                                   [[o["op"], o["calls"], o["self_s"], o["share"]] for o in top])
    return text


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line; see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.inference", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS, help="[OPTIONAL] (all five)")
    parser.add_argument("--sizes", type=int, nargs="+", default=None,
                        help="[OPTIONAL] cubic input edges (cpu: 96; cuda: 96 160)")
    parser.add_argument("--arch_file", default=None, help="[OPTIONAL] DAST architecture (the shipped one)")
    parser.add_argument("--channel_mul", type=float, default=1.0,
                        help="[OPTIONAL] width of the placeholder DAST/DiNTS while no shipped file exists (1.0)")
    parser.add_argument("--volume", type=int, nargs=3, default=None,
                        help="[OPTIONAL] sliding-window volume (cpu: 96 96 144, extrapolated to 512 512 200; "
                             "cuda: 512 512 200)")
    parser.add_argument("--sw_roi", type=int, default=96, help="[OPTIONAL] sliding-window roi edge (96)")
    parser.add_argument("--sw_overlap", type=float, default=0.5, help="[OPTIONAL] window overlap (0.5, the bundle's)")
    parser.add_argument("--sw_batch_size", type=int, default=None, help="[OPTIONAL] windows per call (cpu 1, cuda 2)")
    parser.add_argument("--no_sliding_window", action="store_true", help="[OPTIONAL] skip the whole-volume part")
    parser.add_argument("--profile", action="store_true", help="[OPTIONAL] add where the time goes")
    parser.add_argument("--tag", default="", help="[OPTIONAL] suffix of the result file names (none)")
    add_common_args(parser, warmup=0, repeats=2)
    args = parser.parse_args(argv)
    device = resolve_device(args.device, args.threads)
    cuda = device.type == "cuda"
    sizes = args.sizes or ([96, 160] if cuda else [96])
    volume = tuple(args.volume or (KITS_VOLUME if cuda else (96, 96, 144)))
    sw_batch = args.sw_batch_size or (2 if cuda else 1)
    if args.repeats < 1 or args.warmup < 0:
        raise ValueError(f"--repeats must be >= 1 and --warmup >= 0, got {args.repeats} and {args.warmup}.")
    if not 0 <= args.sw_overlap < 1:
        raise ValueError(f"--sw_overlap must be in [0, 1), got {args.sw_overlap}.")
    env = environment(device)
    arch, arch_info = dast_arch(args.arch_file, args.channel_mul)
    dints, dints_info = dints_arch(arch, arch_info)
    for size in sizes + [args.sw_roi]:
        if size % 32:
            raise ValueError(f"input edge {size} must be a multiple of 32 (DAST/DiNTS stride, SwinUNETR, DynUNet).")
    results: dict[str, Any] = {"dast_arch": arch_info, "dints_arch": dints_info, "latency": {}}
    models: dict[str, nn.Module] = {}
    for size in sizes:
        per_size: dict[str, Any] = {}
        x = torch.rand(1, 1, size, size, size, generator=torch.Generator().manual_seed(0)).to(device)
        active = []
        for name in args.models:
            if name not in models or name == "unetr":
                try:
                    models[name] = build_model(name, size, arch, dints=dints).to(device).eval()
                except ImportError as err:  # MONAI's optional einops
                    per_size[name] = {"skipped": _skip_reason(err)}
                    continue
            model = models[name]
            run = _forward(model, x, device)
            try:
                for _ in range(args.warmup):
                    run()
                memory = MemoryTracker(device).measure(run, [*model.parameters(), *model.buffers(), x])
            except ImportError as err:  # SwinUNETR imports einops only in forward
                per_size[name] = {"skipped": _skip_reason(err)}
                models.pop(name)
                continue
            per_size[name] = {"num_parameters": sum(p.numel() for p in model.parameters()), "memory": memory}
            active.append(name)
            print(f"{size}^3 {name}: peak {mib(memory['peak_bytes'])} MiB", flush=True)
        samples: dict[str, list] = {name: [] for name in active}
        for r in range(args.repeats):
            order = active if r % 2 == 0 else active[::-1]
            for name in order:
                samples[name].append(time_call(_forward(models[name], x, device), device))
        for name in active:
            per_size[name]["time"] = summarise_times(samples[name])
            print(f"{size}^3 {name}: {per_size[name]['time']['wall_median_s']:.3f} s", flush=True)
        results["latency"][str(size)] = per_size
    lat96 = results["latency"].get("96", {})
    if "time" in lat96.get("dast", {}) and "time" in lat96.get("swinunetr", {}):
        d, s = lat96["dast"]["time"]["wall_median_s"], lat96["swinunetr"]["time"]["wall_median_s"]
        results["target"] = {"dast_s": d, "swinunetr_s": s, "ratio": round(d / s, 3), "met": d <= s,
                             "dast_shipped": arch_info["shipped"]}
    if not args.no_sliding_window:
        results["sliding_window"] = _sliding_window(args, models, arch, volume, sw_batch, device, dints)
    if args.profile:
        size = sizes[0]
        x = torch.rand(1, 1, size, size, size).to(device)
        results["profile"] = {"size": size, "components": {}, "top_ops": {}}
        for name in ("dast", "dints", "swinunetr"):
            if name not in models:
                continue
            if name in ("dast", "dints"):
                results["profile"]["components"][name] = component_times(models[name], x, device)
            results["profile"]["top_ops"][name] = _top_ops(models[name], x, device)
    settings = {
        "models": args.models, "sizes": sizes, "batch_size": 1, "warmup": args.warmup, "repeats": args.repeats,
        "amp": env["amp"], "volume": list(volume), "sw_roi": args.sw_roi, "sw_overlap": args.sw_overlap,
        "sw_batch_size": sw_batch, "channel_mul_placeholder": args.channel_mul,
        "memory": "torch.cuda.max_memory_allocated" if device.type == "cuda"
        else "torch.profiler profile_memory peak + parameters, buffers and input",
    }
    payload = {"benchmark": "inference", "environment": env, "settings": settings, "results": results}
    name = "inference" + (f"_{args.tag}" if args.tag else "")
    json_path, md_path = write_results(args.out_dir, name, device, payload, _markdown(results, settings))
    print(f"-> {json_path}, {md_path}")
    return payload


def _sliding_window(
    args: argparse.Namespace, models: dict[str, nn.Module], arch: ArchCode, volume: tuple[int, ...], sw_batch: int,
    device: torch.device, dints: ArchCode | None = None,
) -> dict[str, Any]:
    """Whole-volume sliding-window time of each model, with the KiTS-sized figure measured or extrapolated."""
    from monai.inferers import sliding_window_inference

    roi = (args.sw_roi,) * 3
    windows = num_windows(volume, roi, args.sw_overlap)
    kits_windows = num_windows(KITS_VOLUME, roi, args.sw_overlap)
    measured_kits = tuple(volume) == KITS_VOLUME
    image = torch.rand(1, 1, *volume, generator=torch.Generator().manual_seed(0)).to(device)
    out: dict[str, Any] = {
        "roi": list(roi), "overlap": args.sw_overlap, "sw_batch_size": sw_batch, "mode": "gaussian",
        "volume": list(volume), "windows": windows, "kits_volume": list(KITS_VOLUME), "kits_windows": kits_windows,
        "models": {},
    }
    for name in args.models:
        model = models.get(name)
        if model is None or name == "unetr":  # UNETR is built for one input size
            try:
                model = build_model(name, args.sw_roi, arch, dints=dints).to(device).eval()
            except ImportError as err:
                out["models"][name] = {"skipped": _skip_reason(err)}
                continue

        def run(model: nn.Module = model) -> None:
            with torch.inference_mode(), autocast(device):
                sliding_window_inference(image, roi, sw_batch, model, overlap=args.sw_overlap, mode="gaussian")

        try:
            wall, cpu = time_call(run, device)
        except ImportError as err:
            out["models"][name] = {"skipped": _skip_reason(err)}
            continue
        per_window = wall / windows
        out["models"][name] = {
            "wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "per_window_s": round(per_window, 4),
            "kits_s": round(wall if measured_kits else per_window * kits_windows, 1), "kits_measured": measured_kits,
        }
        print(f"sliding window {name}: {wall:.2f} s for {windows} windows", flush=True)
    return out


if __name__ == "__main__":
    main()
