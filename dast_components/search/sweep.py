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
Memory-factor sweep (paper Fig. 3): search once per lambda and compare the decoded architectures.

Each search is the ``dast_search`` bundle CLI (``python -m monai.bundle run search``) with its own bundle root under
``--out``; the table gives, per lambda, the estimated training memory of the decoded architecture at the configured
``train_patch_size`` and its transformer count, overall and per resolution (depth 0 = the highest).

Command line::

    python -m dast_components.search.sweep DATASET_DIR --out runs/lambda_sweep \\
        [--bundle bundles/dast_search] [--configs search quick] [--lambdas 0.2 0.5 0.8] [--report FILE] [-- OVERRIDES]

Everything after ``--`` is passed to every search, e.g. ``-- --num_iterations 40 --warmup_iterations 10``.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dast_components.networks.arch_io import ArchCode, load_arch
from dast_components.networks.costs import filter_nums, op_saved_elements
from dast_components.networks.memory import estimate_memory
from dast_components.utils import atomic_write_text

__all__ = [
    "cli",
    "cost_by_depth",
    "depth_counts",
    "final_memory_ratio",
    "format_cost_table",
    "format_table",
    "main",
    "search_command",
    "summarise",
]

_GIB = float(1024**3)


def depth_counts(arch: ArchCode, op: str = "transformer") -> list[int]:
    """Active paths using ``op`` per output resolution (index 0 = the highest resolution)."""
    code2out = ([d for d in range(arch.num_depths) for _ in range(3)])[1:-1]
    counts = [0] * arch.num_depths
    if op not in arch.ops:
        return counts
    index = arch.ops.index(op)
    for b in range(arch.num_blocks):
        for p, active in enumerate(arch.arch_code_a[b]):
            if active and arch.arch_code_c[b][p] == index:
                counts[code2out[p]] += 1
    return counts


def search_command(
    bundle: Path, configs: Sequence[str], bundle_root: Path, dataset_dir: str, memory_lambda: float,
    overrides: Sequence[str] = (),
) -> list[str]:
    """The bundle CLI call of one search of the sweep."""
    paths = [bundle / "configs" / (c if c.endswith(".json") else c + ".json") for c in configs]
    files = "[" + ",".join(f"'{p}'" for p in paths) + "]"
    return [
        sys.executable, "-m", "monai.bundle", "run", "search", "--config_file", files, "--bundle_root",
        str(bundle_root), "--dataset_dir", str(dataset_dir), "--memory_lambda", str(memory_lambda), *overrides,
    ]


def final_memory_ratio(output_dir: Path) -> float | None:
    """``memory_ratio`` (expected usage / full) of the last row of a search's ``metrics.csv``, if any."""
    path = Path(output_dir) / "metrics.csv"
    if not path.is_file():
        return None
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    value = rows[-1].get("memory_ratio") if rows else None
    return float(value) if value else None


def summarise(arch: ArchCode, memory_lambda: float, seconds: float, ratio: float | None = None) -> dict[str, Any]:
    """One row of the sweep table from a decoded architecture (``ratio``: the search's final memory ratio)."""
    prov = arch.provenance
    patch = prov.get("train_patch_size") or [2 ** (arch.num_depths + 1)] * 3
    batch = int(prov.get("train_batch_size") or 2)
    counts = arch.op_counts()
    return {
        "lambda": memory_lambda,
        "ratio": ratio,
        "memory_gib": estimate_memory(arch, patch, batch) / _GIB,
        "patch": list(patch),
        "batch": batch,
        "transformers": counts.get("transformer", 0),
        "by_depth": depth_counts(arch),
        "paths": sum(counts.values()),
        "ops": counts,
        "val_dice": prov.get("val_dice"),
        "seconds": seconds,
    }


def cost_by_depth(arch: ArchCode, patch_size: Sequence[int]) -> list[dict[str, Any]]:
    """Memory one 3x3x3 conv and one transformer keep for backward at each depth, per batch item (MiB, float32).

    This is the relation the memory term acts on: where a transformer costs less than the conv it replaces, a
    tighter budget favours it there; where it costs more, a tighter budget pushes it out.
    """
    channels = filter_nums(arch.channel_mul, arch.num_depths)
    shift = int(arch.use_downsample)
    rows = []
    for d in range(arch.num_depths):
        size = [int(s) // 2 ** (d + shift) for s in patch_size]
        c = channels[d + shift]
        conv = op_saved_elements("conv_3x3x3", c, size) * 4 / 2**20
        transformer = op_saved_elements("transformer", c, size, arch.transformer_kwargs()) * 4 / 2**20
        rows.append({"depth": d, "size": size, "channels": c, "conv_mib": conv, "transformer_mib": transformer,
                     "ratio": transformer / conv})
    return rows


def format_cost_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown table of :func:`cost_by_depth` rows."""
    lines = ["| depth | feature map | channels | conv 3x3x3 MiB | transformer MiB | transformer / conv |",
             "|" + " --- |" * 6]
    for r in rows:
        lines.append(f"| {r['depth']} | {'x'.join(map(str, r['size']))} | {r['channels']} | {r['conv_mib']:.3f} | "
                     f"{r['transformer_mib']:.3f} | {r['ratio']:.2f} |")
    return "\n".join(lines)


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown table of :func:`summarise` rows."""
    head = ("| lambda | final memory ratio | est. memory (GiB) | patch, batch | transformers | transformers by depth "
            "(0 = highest res.) | active paths | ops | val Dice | search time (s) |")
    lines = [head, "|" + " --- |" * 10]
    for r in rows:
        ops = ", ".join(f"{k} {v}" for k, v in r["ops"].items())
        dice = "n/a" if r["val_dice"] is None else f"{r['val_dice']:.3f}"
        ratio = "n/a" if r["ratio"] is None else f"{r['ratio']:.3f}"
        lines.append(
            f"| {r['lambda']} | {ratio} | {r['memory_gib']:.4f} | {r['patch']}, {r['batch']} | {r['transformers']} | "
            f"{r['by_depth']} | {r['paths']} | {ops} | {dice} | {r['seconds']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Command line entry point; returns the table rows."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = " ".join(argv)
    overrides: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, overrides = argv[:cut], argv[cut + 1:]
    parser = argparse.ArgumentParser(
        prog="python -m dast_components.search.sweep",
        description="Search once per memory factor lambda with the dast_search bundle and compare the decodes.",
    )
    parser.add_argument("dataset_dir", help="[REQUIRED] MSD-layout dataset folder (dataset.json)")
    parser.add_argument("--out", required=True,
                        help="[REQUIRED] folder of the searches (one bundle root per lambda; existing runs there are "
                             "overwritten)")
    parser.add_argument("--bundle", default="bundles/dast_search",
                        help="[OPTIONAL] bundle folder (bundles/dast_search)")
    parser.add_argument("--configs", nargs="+", default=["search", "quick"],
                        help="[OPTIONAL] configs to merge, in order (search quick)")
    parser.add_argument("--lambdas", nargs="+", type=float, default=[0.2, 0.5, 0.8],
                        help="[OPTIONAL] memory factors (0.2 0.5 0.8, the paper's)")
    parser.add_argument("--report", default=None, help="[OPTIONAL] also write the table (Markdown) to this file")
    args = parser.parse_args(argv)
    bundle, out = Path(args.bundle).resolve(), Path(args.out).resolve()
    if not (bundle / "configs").is_dir():
        raise SystemExit(f"--bundle {bundle} has no configs/ folder; point it at bundles/dast_search.")
    rows = []
    for lam in args.lambdas:
        root = out / f"lambda_{lam:g}"
        cmd = search_command(bundle, args.configs, root, args.dataset_dir, lam, overrides)
        print(f"[sweep] lambda {lam:g}: {' '.join(cmd)}", flush=True)
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
            raise SystemExit(f"the search for lambda {lam:g} failed (exit code {proc.returncode}); output above.")
        row = summarise(load_arch(root / "models" / "arch_code.json"), lam, seconds, final_memory_ratio(root / "eval"))
        print(f"[sweep] lambda {lam:g}: {row['memory_gib']:.4f} GiB, {row['transformers']} transformers "
              f"(by depth {row['by_depth']}), {seconds:.0f} s", flush=True)
        rows.append(row)
    table = format_table(rows)
    print(table)
    if args.report:
        report = Path(args.report)
        report.parent.mkdir(parents=True, exist_ok=True)
        text = (
            "# Memory factor sweep\n\n"
            f"Command: `python -m dast_components.search.sweep {command}`\n\n"
            f"Configs: {', '.join(args.configs)}; dataset: `{args.dataset_dir}`.\n\n"
            "Final memory ratio: expected cell memory / (all paths, costliest op) at the end of the search, which the "
            "memory term pulls towards lambda. Est. memory: `estimate_memory` of the decoded architecture at the "
            "configured training patch and batch. Transformers by depth: active transformer paths per output "
            "resolution.\n\n"
            f"{table}\n"
        )
        if rows:
            last = load_arch(out / f"lambda_{args.lambdas[-1]:g}" / "models" / "arch_code.json")
            text += (
                f"\nSaved-for-backward memory of one op per batch item at the training patch {rows[-1]['patch']} and "
                f"width {last.channel_mul} (`dast_components.search.sweep.cost_by_depth`): the memory term trades "
                "these against each other, so it pushes transformers towards the depths where they are cheaper "
                "than the conv they replace.\n\n"
                f"{format_cost_table(cost_by_depth(last, rows[-1]['patch']))}\n"
            )
        atomic_write_text(report, text)
    return rows


def cli(argv: Sequence[str] | None = None) -> int:
    """Console script ``dast-sweep``: :func:`main`, exit status 0 (an input error exits 1 with its message)."""
    main(argv)
    return 0


if __name__ == "__main__":
    main()
