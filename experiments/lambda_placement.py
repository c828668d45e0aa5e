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
The paper's Fig. 3 claim, measured: the memory factor lambda moves the searched network's memory and where its
transformers sit.

One search per (lambda, seed) with the ``dast_search`` bundle CLI (``python -m monai.bundle run search``), each in its
own bundle root under ``OUT/work/runs/``; the bundle writes the decoded architecture at every validation interval
(``models/arch_code_iterNNNNNN.json``) and at the end (``models/arch_code.json``). For every finished search a record
``OUT/records/lambda_<l>_seed<s>.json`` is written atomically: the final architecture, the op of every path at every
interval, the last interval at which the decode changed, the estimated training memory at the paper's 160^3 patch
(batch 2, width 1.0), and the transformers per resolution. Records are the unit of resumption: a (lambda, seed) with a
record is skipped, one whose bundle root holds a checkpoint continues from it (``--resume true``), so a killed run
continues where it stopped. From the records the command writes ``OUT/lambda_placement.json`` (every seed, the
settings, versions, load average), ``OUT/lambda_placement.md`` (mean and sd per lambda; the cost table of the memory
term) and ``OUT/lambda_placement.png`` (the seed-0 architecture of each lambda side by side, like the paper's Fig. 3,
and the transformers per depth), all atomically.

Command line (defaults: the CPU setting of ``experiments/README.md``)::

    python -m experiments.lambda_placement --out experiments/results/lambda_placement [--dataset_dir DIR] \\
        [--lambdas 0.2 0.5 0.8] [--seeds 0 1 2] [--iterations 80] [--jobs 2] [--device cpu] [-- OVERRIDES]

Everything after ``--`` goes to every search (e.g. ``-- --num_workers 4``). Without ``--dataset_dir`` eight synthetic
MSD-layout phantoms are generated into ``OUT/work/data``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from statistics import mean, stdev
from typing import Any

from dast_components.networks.arch_io import ArchCode, load_arch
from dast_components.networks.memory import estimate_memory
from dast_components.search.sweep import cost_by_depth, depth_counts, format_cost_table
from dast_components.utils import atomic_write_text
from experiments.runner import Job, loadavg, run_jobs

__all__ = [
    "SETTINGS",
    "aggregate",
    "last_change",
    "main",
    "make_record",
    "run_name",
    "search_command",
]

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundles" / "dast_search"
_GIB = float(1024**3)

# The search bundle's override ids this experiment sets (one place, so a renamed id is changed once). The topology
# and op settings are the bundle's own (12 blocks x 4 depths, token grid 8); the supernet's width and patch are
# reduced so that 2 CPU cores finish 9 searches in about an hour; the learning rates are the quick overlay's (short
# searches). The memory term prices the retrained network as the bundle does: width 1.0 at the paper's 160^3 patch
# (``arch_channel_mul``, ``train_patch_size``), so lambda trades the op costs of the paper's setting.
SETTINGS: dict[str, Any] = {
    "num_blocks": 12,
    "num_depths": 4,
    "grid": 8,
    "channel_mul": 0.125,
    "arch_channel_mul": 1.0,
    "patch_size": [32, 32, 32],
    "train_patch_size": [160, 160, 160],
    "warmup_iterations": 20,
    "val_interval": 10,
    "tensorboard": False,
}
MEMORY_PATCH = (160, 160, 160)  # the paper's training patch, at which every decode's memory is estimated
MEMORY_BATCH = 2


def run_name(memory_lambda: float, seed: int) -> str:
    """Folder and record name of one search."""
    return f"lambda_{memory_lambda:g}_seed{seed}"


def search_command(
    bundle_root: Path, dataset_dir: Path, memory_lambda: float, seed: int, iterations: int, device: str,
    resume: bool, overrides: Sequence[str] = (),
) -> list[str]:
    """The bundle CLI call of one search (the bundle's search.json with its quick overlay, then :data:`SETTINGS`)."""
    configs = "[" + ",".join(f"'{BUNDLE / 'configs' / c}'" for c in ("search.json", "quick.json")) + "]"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "search", "--config_file", configs,
           "--bundle_root", str(bundle_root), "--dataset_dir", str(dataset_dir),
           "--memory_lambda", str(memory_lambda), "--seed", str(seed), "--num_iterations", str(iterations),
           "--device", f"$torch.device('{device}')", "--resume", str(resume)]
    for key, value in SETTINGS.items():
        # lists as JSON, booleans as Python literals (the bundle CLI reads "false" as a non-empty string)
        cmd += [f"--{key}", json.dumps(value) if isinstance(value, list) else str(value)]
    return cmd + list(overrides)


def _path_ops(arch: ArchCode) -> list[list[int]]:
    """Op index of every (block, path), -1 where the path is inactive."""
    return [[c if a else -1 for a, c in zip(arch.arch_code_a[b], arch.arch_code_c[b])]
            for b in range(arch.num_blocks)]


def last_change(decodes: Sequence[tuple[int, ArchCode]]) -> int | None:
    """Iteration of the last interval whose decoded architecture (active paths and their ops) differs from the
    interval before; ``None`` when there are fewer than two decodes or none changed."""
    last = None
    for (_, prev), (it, cur) in zip(decodes, decodes[1:]):
        if _path_ops(prev) != _path_ops(cur):
            last = it
    return last


def make_record(bundle_root: Path, memory_lambda: float, seed: int, iterations: int, seconds: float) -> dict[str, Any]:
    """Summary of one finished search from the files its bundle root holds."""
    models = Path(bundle_root) / "models"
    final = load_arch(models / "arch_code.json")
    decodes = sorted((int(p.stem.rsplit("iter", 1)[1]), load_arch(p)) for p in models.glob("arch_code_iter*.json"))
    counts = final.op_counts()
    return {
        "lambda": memory_lambda,
        "seed": seed,
        "iterations": iterations,
        "seconds": round(seconds, 1),
        "est_memory_gib": estimate_memory(final, MEMORY_PATCH, MEMORY_BATCH) / _GIB,
        "transformers": counts.get("transformer", 0),
        "transformers_by_depth": depth_counts(final),
        "ops": counts,
        "active_paths": sum(counts.values()),
        "decode_intervals": [it for it, _ in decodes],
        "last_change_iteration": last_change(decodes),
        "val_dice": final.provenance.get("val_dice"),
        "arch": final.to_dict(),
    }


def _sd(values: Sequence[float]) -> float:
    return stdev(values) if len(values) > 1 else 0.0


def aggregate(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per lambda: mean and sd over seeds of the estimated memory, transformer count and transformers per depth."""
    rows = []
    for lam in sorted({r["lambda"] for r in records}):
        rs = [r for r in records if r["lambda"] == lam]
        depths = len(rs[0]["transformers_by_depth"])
        by_depth = [[r["transformers_by_depth"][d] for r in rs] for d in range(depths)]
        changes = [r["last_change_iteration"] for r in rs]
        rows.append({
            "lambda": lam,
            "seeds": [r["seed"] for r in rs],
            "est_memory_gib_mean": mean(r["est_memory_gib"] for r in rs),
            "est_memory_gib_sd": _sd([r["est_memory_gib"] for r in rs]),
            "transformers_mean": mean(r["transformers"] for r in rs),
            "transformers_sd": _sd([r["transformers"] for r in rs]),
            "transformers_by_depth_mean": [mean(v) for v in by_depth],
            "transformers_by_depth_sd": [_sd(v) for v in by_depth],
            "active_paths_mean": mean(r["active_paths"] for r in rs),
            "last_change_iterations": changes,
            "iterations": rs[0]["iterations"],
        })
    return rows


def _markdown(payload: dict[str, Any], cost_table: str) -> str:
    rows = payload["per_lambda"]
    s = payload["settings"]
    text = (
        "# Memory factor lambda: memory and transformer placement (paper Fig. 3)\n\n"
        f"Command: `{payload['command']}`\n\n"
        f"Data: {payload['dataset']}. Search: the `dast_search` bundle (search.json + quick.json) with "
        f"{s['num_blocks']} blocks x {s['num_depths']} depths, token grid {s['grid']}, supernet width "
        f"{s['channel_mul']} at patch {s['patch_size']}, memory term priced at width {s['arch_channel_mul']} and patch "
        f"{s['train_patch_size']}, {payload['iterations']} iterations ({s['warmup_iterations']} weight-only "
        f"warm-up), decode every {s['val_interval']}; seeds {payload['seeds']}"
        f"{'; overrides ' + ' '.join(payload['overrides']) if payload['overrides'] else ''}. "
        "Memory: `estimate_memory` of the "
        f"decoded architecture at width 1.0, patch 160^3, batch 2. Load average "
        f"{payload['environment']['loadavg_start']} -> {payload['environment']['loadavg_end']}.\n\n"
        "| lambda | seeds | est. memory GiB (mean +- sd) | transformers | transformers by depth (0 = highest res.), "
        "mean +- sd | active paths | last iteration the decode changed (per seed) |\n"
        "| --- | --- | --- | --- | --- | --- | --- |\n"
    )
    for r in rows:
        depth = " / ".join(f"{m:.2f}+-{sd:.2f}" for m, sd in zip(r["transformers_by_depth_mean"],
                                                                    r["transformers_by_depth_sd"]))
        changes = ", ".join("none" if c is None else str(c) for c in r["last_change_iterations"])
        text += (f"| {r['lambda']:g} | {len(r['seeds'])} | {r['est_memory_gib_mean']:.2f} +- "
                 f"{r['est_memory_gib_sd']:.2f} | {r['transformers_mean']:.2f} +- {r['transformers_sd']:.2f} | "
                 f"{depth} | {r['active_paths_mean']:.1f} | {changes} (of {r['iterations']}) |\n")
    text += ("\nSaved-for-backward memory per batch item of one 3x3x3 conv and one transformer at each depth, at the "
             "width and patch where the memory term prices them "
             "(`dast_components.search.sweep.cost_by_depth`).\n\n" + cost_table + "\n")
    return text


def _figure(payload: dict[str, Any], records: Sequence[dict[str, Any]], out: Path) -> None:
    from dast_components.visualize._common import new_figure, save_figure
    from dast_components.visualize.arch import draw_architecture

    lambdas = [r["lambda"] for r in payload["per_lambda"]]
    panels = []
    for lam in lambdas:
        first = min((r for r in records if r["lambda"] == lam), key=lambda r: r["seed"])
        png = out / "work" / "figures" / f"{run_name(lam, first['seed'])}.png"
        draw_architecture(ArchCode.from_dict(first["arch"]), png, patch_size=MEMORY_PATCH, batch_size=MEMORY_BATCH)
        panels.append((lam, first["seed"], png))
    import matplotlib.image as mpimg

    fig = new_figure(6.0 * len(panels), 9.0)
    grid = fig.add_gridspec(2, len(panels), height_ratios=[3, 1.4])
    for i, (lam, seed, png) in enumerate(panels):
        ax = fig.add_subplot(grid[0, i])
        ax.imshow(mpimg.imread(png))
        ax.set_title(f"lambda {lam:g} (seed {seed})")
        ax.axis("off")
    ax = fig.add_subplot(grid[1, :])
    depths = len(payload["per_lambda"][0]["transformers_by_depth_mean"])
    width = 0.8 / len(lambdas)
    for i, row in enumerate(payload["per_lambda"]):
        xs = [d + (i - (len(lambdas) - 1) / 2) * width for d in range(depths)]
        ax.bar(xs, row["transformers_by_depth_mean"], width, yerr=row["transformers_by_depth_sd"], capsize=3,
               label=f"lambda {row['lambda']:g}: {row['est_memory_gib_mean']:.1f} GiB")
    ax.set_xticks(range(depths), [f"depth {d}" for d in range(depths)])
    ax.set_ylabel("transformer paths (mean +- sd over seeds)")
    ax.legend(fontsize=8)
    save_figure(fig, out / "lambda_placement.png")


def _ensure_data(dataset_dir: str | None, out: Path) -> tuple[Path, str]:
    if dataset_dir:
        path = Path(dataset_dir).resolve()
        if not (path / "dataset.json").is_file():
            raise SystemExit(f"--dataset_dir {path} has no dataset.json (an MSD-layout dataset folder is expected).")
        return path, f"`{dataset_dir}`"
    path = out / "work" / "data"
    if not (path / "dataset.json").is_file():
        subprocess.run([sys.executable, "-m", "dast_components.data.synthetic", "--layout", "msd", "--num_cases", "8",
                        "--out", str(path)], check=True, capture_output=True)
    return path, "8 synthetic MSD-layout phantoms (`python -m dast_components.data.synthetic --layout msd`, seed 0)"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line entry point; returns the payload written to ``OUT/lambda_placement.json``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = "python -m experiments.lambda_placement " + " ".join(argv)
    overrides: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, overrides = argv[:cut], argv[cut + 1:]
    parser = argparse.ArgumentParser(prog="python -m experiments.lambda_placement",
                                     description="Searches per memory factor lambda and seed; memory and transformer "
                                                 "placement of the decodes (paper Fig. 3).")
    parser.add_argument("--out", required=True, help="[REQUIRED] results folder (records/, work/, the report)")
    parser.add_argument("--dataset_dir", default=None,
                        help="[OPTIONAL] MSD-layout dataset (dataset.json); default: synthetic phantoms in OUT/work")
    parser.add_argument("--lambdas", nargs="+", type=float, default=[0.2, 0.5, 0.8], help="[OPTIONAL] (0.2 0.5 0.8)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="[OPTIONAL] search seeds (0 1 2)")
    parser.add_argument("--iterations", type=int, default=80, help="[OPTIONAL] search iterations (80)")
    parser.add_argument("--jobs", type=int, default=2, help="[OPTIONAL] searches run at once (2)")
    parser.add_argument("--device", default="cpu", help="[OPTIONAL] torch device of every search (cpu)")
    parser.add_argument("--report_only", action="store_true",
                        help="[OPTIONAL] only aggregate the records that exist (no new searches)")
    args = parser.parse_args(argv)
    if args.iterations <= SETTINGS["warmup_iterations"]:
        raise SystemExit(f"--iterations {args.iterations} must exceed the {SETTINGS['warmup_iterations']} warm-up "
                         "iterations, or the architecture is never searched.")
    out = Path(args.out).resolve()
    (out / "records").mkdir(parents=True, exist_ok=True)
    start_load = loadavg()
    todo = [(lam, seed) for seed in args.seeds for lam in args.lambdas
            if not (out / "records" / f"{run_name(lam, seed)}.json").is_file()]
    if todo and not args.report_only:
        data, _ = _ensure_data(args.dataset_dir, out)

        def done(lam: float, seed: int, root: Path) -> Any:
            def write(seconds: float) -> None:
                record = make_record(root, lam, seed, args.iterations, seconds)
                atomic_write_text(out / "records" / f"{run_name(lam, seed)}.json", json.dumps(record, indent=2) + "\n")
                print(f"[lambda_placement] {run_name(lam, seed)}: {record['est_memory_gib']:.2f} GiB, "
                      f"{record['transformers']} transformers {record['transformers_by_depth']}, last change "
                      f"{record['last_change_iteration']}", flush=True)
            return write

        jobs = []
        for lam, seed in todo:
            root = out / "work" / "runs" / run_name(lam, seed)
            resume = (root / "eval" / "search_checkpoint.pt").is_file()
            cmd = search_command(root, data, lam, seed, args.iterations, args.device, resume, overrides)
            name = run_name(lam, seed) + (" (resumed)" if resume else "")
            jobs.append(Job(name, cmd, root, done(lam, seed, root)))
        run_jobs(jobs, args.jobs, tag="lambda_placement")
    records = [json.loads(p.read_text()) for p in sorted((out / "records").glob("lambda_*_seed*.json"))]
    records = [r for r in records if r["lambda"] in args.lambdas and r["seed"] in args.seeds]
    if not records:
        raise SystemExit(f"no records in {out / 'records'}; run without --report_only first.")
    import monai
    import torch

    _, dataset = _ensure_data(args.dataset_dir, out) if args.dataset_dir else (None, (
        "8 synthetic MSD-layout phantoms (`python -m dast_components.data.synthetic --layout msd`, seed 0)"))
    payload = {
        "command": command,
        "dataset": dataset,
        "settings": SETTINGS,
        "overrides": overrides,
        "iterations": records[0]["iterations"],
        "seeds": sorted({r["seed"] for r in records}),
        "memory_patch": list(MEMORY_PATCH),
        "memory_batch": MEMORY_BATCH,
        "environment": {"torch": torch.__version__, "monai": monai.__version__, "python": platform.python_version(),
                        "cpu_count": os.cpu_count(), "device": args.device, "loadavg_start": start_load,
                        "loadavg_end": loadavg()},
        "per_lambda": aggregate(records),
        "records": [{k: v for k, v in r.items() if k != "arch"} for r in records],
    }
    # the costs the memory term traded: the exported width at the retraining patch
    priced = dataclasses.replace(ArchCode.from_dict(records[-1]["arch"]), channel_mul=SETTINGS["arch_channel_mul"])
    costs = cost_by_depth(priced, SETTINGS["train_patch_size"])
    payload["cost_by_depth"] = costs
    atomic_write_text(out / "lambda_placement.json", json.dumps(payload, indent=2) + "\n")
    atomic_write_text(out / "lambda_placement.md", _markdown(payload, format_cost_table(costs)))
    _figure(payload, records, out)
    print(f"[lambda_placement] wrote {out / 'lambda_placement.md'}", flush=True)
    return payload


if __name__ == "__main__":
    main()
