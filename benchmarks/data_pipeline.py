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
Preprocessed training samples per second, uncached vs ``CacheDataset``, beside one training step (issue 7 item 1d).

The transforms are the retraining bundle's own: ``train#preprocessing`` parsed from
``bundles/dast_kits19_seg/configs/train.json`` (LoadImaged, EnsureChannelFirstd, Orientationd RAS, Spacingd 1 mm,
ScaleIntensityRanged, SpatialPadd, ClassesToIndicesd, RandCropByLabelClassesd, RandFlipd x 3), with ``patch_size``
overridden and a fixed intensity window (it does not change the cost). The data are synthetic KiTS19-layout phantoms
(``dast_components.data.synthetic``), written to a temporary folder unless ``--data_dir`` is given.

Reported: samples per second through a ``DataLoader`` without caching (every transform every time) and with the
bundle's ``CacheDataset`` (deterministic transforms once, then only the random crop and flips), the cache build time
and size, and the time of one training step of the DAST network (the shipped architecture, or the placeholder
of ``benchmarks.inference``) with the bundle's loss and optimiser at the same patch and batch, so the samples per
second the step consumes (``batch / step time``) can be set beside what the loader delivers.

Example::

    python -m benchmarks.data_pipeline --device cpu
    python -m benchmarks.data_pipeline --num_cases 2 --patch 32 --epochs 1 --train_channel_mul 0.125 --out_dir /tmp/b
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import (
    add_common_args,
    autocast,
    environment,
    make_grad_scaler,
    markdown_table,
    mib,
    resolve_device,
    summarise_times,
    time_call,
    write_results,
)
from benchmarks.inference import dast_arch

__all__ = ["BUNDLE_TRAIN_CONFIG", "bundle_pipeline", "loader_throughput", "train_step_time", "main"]

BUNDLE_TRAIN_CONFIG = Path(__file__).resolve().parents[1] / "bundles" / "dast_kits19_seg" / "configs" / "train.json"


def _parser(config: str | Path, patch_size: Sequence[int], overrides: dict[str, Any] | None = None):
    from monai.bundle import ConfigParser

    config = Path(config)
    if not config.is_file():
        raise ValueError(f"bundle config {config} does not exist; pass --bundle_config with the train.json to use.")
    parser = ConfigParser()
    parser.read_config(str(config))
    parser["patch_size"] = [int(s) for s in patch_size]
    parser["intensity"] = {"lower": -80.0, "upper": 300.0}  # the window sets constants only, not the cost
    for key, value in (overrides or {}).items():
        parser[key] = value
    return parser


def bundle_pipeline(config: str | Path, patch_size: Sequence[int]):
    """
    The bundle's training transforms (``train#preprocessing``) for ``patch_size``.

    Raises:
        ValueError: the config file does not exist.
        KeyError: it has no ``train#preprocessing``.
    """
    return _parser(config, patch_size).get_parsed_content("train#preprocessing")


def loader_throughput(dataset: Any, batch_size: int, num_workers: int, epochs: int) -> list[tuple[float, int]]:
    """
    ``(seconds, samples)`` of each full pass of a ``DataLoader`` over ``dataset`` (samples counts every patch).
    """
    from monai.data import DataLoader

    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers, drop_last=False)
    out = []
    for _ in range(epochs):
        start, samples = time.perf_counter(), 0
        for batch in loader:
            samples += int(batch["image"].shape[0])
        out.append((time.perf_counter() - start, samples))
    return out


def train_step_time(
    config: str | Path,
    patch_size: Sequence[int],
    batch_size: int,
    device: torch.device,
    channel_mul: float,
    warmup: int,
    repeats: int,
    arch_file: str | Path | None = None,
) -> dict[str, Any]:
    """
    Seconds of one training step (forward, the bundle's loss, backward, the bundle's optimiser) of the DAST network
    (``arch_file``, else the shipped architecture, else the placeholder of :func:`benchmarks.inference.dast_arch`).
    """
    arch, arch_info = dast_arch(arch_file, channel_mul)
    from dast_components.networks import DASTNet

    torch.manual_seed(0)
    net = DASTNet(arch, in_channels=1, num_classes=3).to(device).train()
    parser = _parser(config, patch_size, {"network": net})
    loss_fn = parser.get_parsed_content("loss")
    optimizer = parser.get_parsed_content("optimizer")
    scaler = make_grad_scaler(device)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch_size, 1, *patch_size, generator=gen).to(device)
    y = torch.randint(0, 3, (batch_size, 1, *patch_size), generator=gen).to(device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=False)  # as the bundle's SupervisedTrainer (optim_set_to_none=False)
        with autocast(device):
            loss = loss_fn(net(x), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    for _ in range(warmup):
        step()
    times = summarise_times([time_call(step, device) for _ in range(repeats)])
    return {"arch": arch_info, "num_parameters": sum(p.numel() for p in net.parameters()), "time": times,
            "loss": type(loss_fn).__name__, "optimizer": type(optimizer).__name__}


def _cache_bytes(dataset: Any) -> int:
    """Bytes of the tensors and arrays a ``CacheDataset`` holds."""
    total = 0
    for item in getattr(dataset, "_cache", []) or []:
        values = item.values() if isinstance(item, dict) else [item]
        for v in values:
            nbytes = getattr(v, "nbytes", None)
            if isinstance(v, torch.Tensor):
                nbytes = v.element_size() * v.numel()
            total += int(nbytes or 0)
    return total


def _rate(runs: Sequence[tuple[float, int]]) -> dict[str, Any]:
    rates = [n / s for s, n in runs]
    return {"samples_per_s_median": round(statistics.median(rates), 3), "samples_per_s": [round(r, 3) for r in rates],
            "epoch_s": [round(s, 3) for s, _ in runs], "samples_per_epoch": runs[0][1]}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line; see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.data_pipeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", default=None, help="[OPTIONAL] KiTS19-layout folder (synthetic, temporary)")
    parser.add_argument("--num_cases", type=int, default=8, help="[OPTIONAL] synthetic cases (8)")
    parser.add_argument("--shape", type=int, nargs=3, default=[64, 64, 48],
                        help="[OPTIONAL] synthetic phantom grid (64 64 48, the generator's default)")
    parser.add_argument("--bundle_config", default=str(BUNDLE_TRAIN_CONFIG), help="[OPTIONAL] bundle train.json")
    parser.add_argument("--patch", type=int, default=64, help="[OPTIONAL] cubic patch edge (64; the bundle: 160)")
    parser.add_argument("--batch", type=int, default=2, help="[OPTIONAL] batch of loader and step (2, the bundle's)")
    parser.add_argument("--num_workers", type=int, default=0, help="[OPTIONAL] loader / cache workers (0)")
    parser.add_argument("--epochs", type=int, default=3, help="[OPTIONAL] timed passes over the data (3)")
    parser.add_argument("--arch_file", default=None, help="[OPTIONAL] DAST architecture of the step (the shipped one)")
    parser.add_argument("--train_channel_mul", type=float, default=1.0,
                        help="[OPTIONAL] width of the placeholder DAST while no shipped architecture exists (1.0)")
    add_common_args(parser, warmup=1, repeats=2)
    args = parser.parse_args(argv)
    device = resolve_device(args.device, args.threads)
    if args.epochs < 1 or args.num_cases < 1 or args.batch < 1:
        raise ValueError(f"--epochs, --num_cases and --batch must be >= 1, got {args.epochs}, {args.num_cases}, "
                         f"{args.batch}.")
    env = environment(device)
    patch = (args.patch,) * 3
    from monai.data import CacheDataset, Dataset

    from dast_components.data.datalist import kits19_items

    with tempfile.TemporaryDirectory(prefix="dast_bench_data_") as tmp:
        data_dir = args.data_dir
        generated = data_dir is None
        if generated:
            from dast_components.data.synthetic import write_dataset

            data_dir = write_dataset(Path(tmp) / "kits19", layout="kits19", num_cases=args.num_cases,
                                     shape=tuple(args.shape))
        items = kits19_items(data_dir)
        transform = bundle_pipeline(args.bundle_config, patch)
        names = [type(t).__name__ for t in transform.transforms]
        results: dict[str, Any] = {"num_items": len(items), "transforms": names}
        uncached = Dataset(items, transform)
        loader_throughput(uncached, args.batch, args.num_workers, args.warmup)
        results["uncached"] = _rate(loader_throughput(uncached, args.batch, args.num_workers, args.epochs))
        print(f"uncached: {results['uncached']['samples_per_s_median']} samples/s", flush=True)
        start = time.perf_counter()
        cached = CacheDataset(items, transform, cache_rate=1.0, num_workers=max(args.num_workers, 1), progress=False)
        build_s = time.perf_counter() - start
        loader_throughput(cached, args.batch, args.num_workers, args.warmup)
        results["cached"] = _rate(loader_throughput(cached, args.batch, args.num_workers, args.epochs))
        results["cached"].update({"build_s": round(build_s, 3), "cache_mib": mib(_cache_bytes(cached))})
        print(f"cached: {results['cached']['samples_per_s_median']} samples/s (build {build_s:.1f} s)", flush=True)
    results["train_step"] = train_step_time(args.bundle_config, patch, args.batch, device, args.train_channel_mul,
                                            args.warmup, args.repeats, args.arch_file)
    step_s = results["train_step"]["time"]["wall_median_s"]
    results["train_step"]["samples_per_s"] = round(args.batch / step_s, 3)
    print(f"training step: {step_s:.2f} s ({results['train_step']['samples_per_s']} samples/s)", flush=True)
    settings = {
        "data": "synthetic kits19 phantoms" if generated else str(args.data_dir), "num_cases": args.num_cases,
        "shape": args.shape, "bundle_config": str(args.bundle_config), "patch_size": list(patch),
        "batch_size": args.batch, "num_workers": args.num_workers, "epochs": args.epochs, "warmup": args.warmup,
        "repeats": args.repeats, "amp": env["amp"], "intensity_window": [-80.0, 300.0],
    }
    payload = {"benchmark": "data_pipeline", "environment": env, "settings": settings, "results": results}
    json_path, md_path = write_results(args.out_dir, "data_pipeline", device, payload, _markdown(results, settings))
    print(f"-> {json_path}, {md_path}")
    return payload


def _markdown(results: dict[str, Any], settings: dict[str, Any]) -> str:
    step = results["train_step"]
    arch = step["arch"]
    text = (
        f"Data: {settings['data']}, {results['num_items']} cases of grid {settings['shape']}; the bundle's "
        f"`train#preprocessing` ({', '.join(results['transforms'])}) at patch {settings['patch_size']}, batch "
        f"{settings['batch_size']}, {settings['num_workers']} workers; {settings['epochs']} timed passes after "
        f"{settings['warmup']} warm-up, medians.\n\n"
    )
    u, c = results["uncached"], results["cached"]
    rows = [
        ["Dataset (uncached)", u["samples_per_s_median"], "", ""],
        ["CacheDataset", c["samples_per_s_median"], c["build_s"], c["cache_mib"]],
        [f"training step ({'shipped' if arch['shipped'] else 'not the shipped'} DAST, "
         f"{step['num_parameters'] / 1e6:.1f} M params)", step["samples_per_s"], "", ""],
    ]
    text += markdown_table(["stage", "samples / s", "cache build s", "cache MiB"], rows)
    text += (f"\nTraining step: {step['time']['wall_median_s']} s median ({step['loss']}, {step['optimizer']}); "
             f"DAST architecture: {arch['source']}.\n")
    return text


if __name__ == "__main__":
    main()
