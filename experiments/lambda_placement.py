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
Paper Fig. 3: how the memory factor lambda moves memory and transformer placement, over several seeds.

One ``dast_search`` bundle search per (lambda, seed), full 12 x 4 topology with token grid 8; per run the decoded
architecture's estimated training memory at ``--memory_patch`` (batch 2), transformers per resolution level, and the
last validation interval at which the decode changed (from ``models/arch_code_iterNNNNNN.json``). Writes
``results.json`` (every run, every lambda, environment), ``results.md``, ``architectures.png`` and ``cost_table.md``
to ``--out``; resumable (see :mod:`experiments.common`).

Command line (CPU defaults; the GPU recipe is in ``experiments/README.md``)::

    python -m experiments.lambda_placement --out experiments/results/lambda_placement_anneal64_96it \\
        [--dataset_dir DIR] [--lambdas 0.2 0.5 0.8] [--seeds 0 1 2] [--num_iterations 96] [--warmup_iterations 8] \\
        [--ramp_iterations 24] [--arch_lr_anneal_iterations 64] [--val_interval 8] [--channel_mul 0.125] \\
        [--patch 32] [--device cpu]
"""

from __future__ import annotations

import argparse
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from dast_components.networks.arch_io import ArchCode, load_arch
from dast_components.networks.memory import estimate_memory, filter_nums
from dast_components.search.sweep import cost_by_depth, depth_counts
from dast_components.utils import atomic_write_text
from experiments.common import (
    environment,
    load_record,
    mean_sd,
    read_csv_rows,
    search_command,
    search_finished,
    write_json,
)

__all__ = [
    "aggregate",
    "cost_by_depth",
    "depth_counts",
    "format_cost_table",
    "format_last_changes",
    "format_path_costs",
    "decode_changes",
    "format_table",
    "arch_lr_anneal_from",
    "full_weight_from",
    "last_change",
    "last_interval_changes",
    "main",
    "path_costs",
    "plot_architectures",
    "run_record",
]

_GIB = float(1024**3)
_OP_COLOURS = {"skip_connect": "#9e9e9e", "conv_3x3x3": "#1f77b4", "transformer": "#d62728"}


def _decode_key(arch: ArchCode) -> tuple:
    """What "the decoded architecture" is: active paths and the op of each active path."""
    return tuple(
        tuple(int(c) if a else -1 for a, c in zip(arow, crow)) for arow, crow in zip(arch.arch_code_a, arch.arch_code_c)
    )


def last_change(history: Sequence[tuple[int, Any]]) -> int | None:
    """Last iteration whose decode differs from the previous interval's (``history``: ``(iteration, key)`` sorted).

    ``None`` with fewer than two intervals or when the decode never changed.
    """
    changed = None
    for (_, prev), (it, key) in zip(history, history[1:]):
        if key != prev:
            changed = it
    return changed


def decode_changes(history: Sequence[tuple[int, Any]]) -> list[dict[str, int]]:
    """Per validation interval after the first: how many (block, path) places of the decode differ from the previous
    interval's (a path switched on or off, or its op changed). ``history``: ``(iteration, key)`` sorted, keys from
    :func:`_decode_key`."""
    return [{"iteration": int(it), "paths_changed": len(_changed_places(prev, key))}
            for (_, prev), (it, key) in zip(history, history[1:])]


def _changed_places(prev: Any, key: Any) -> list[tuple[int, int, int, int]]:
    """``(block, path, op before, op after)`` of each place where two :func:`_decode_key` keys differ (-1: off)."""
    return [(b, p, a, c) for b, (prow, krow) in enumerate(zip(prev, key))
            for p, (a, c) in enumerate(zip(prow, krow)) if a != c]


def last_interval_changes(history: Sequence[tuple[int, Any]], op_logits: torch.Tensor | Sequence | None = None,
                          ops: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The (block, path) places whose decode changed in the last validation interval, each with what changed.

    ``history``: ``(iteration, key)`` sorted, keys from :func:`_decode_key` (op index per place, -1: path off).
    ``op_logits``: the search's final op logits ``log_alpha_c``, shape ``(num_blocks, num_paths, num_ops)``; for a
    place whose op changed, ``probability_gap`` is the difference between its two largest op probabilities, i.e. how
    near the final op choice is to a tie (``None`` without logits, and for a path switched on or off, which the
    topology decode decides over whole paths, not per place).
    """
    if len(history) < 2:
        return []

    def name(i: int) -> str | int | None:
        return None if i < 0 else (ops[i] if ops is not None else i)

    out: list[dict[str, Any]] = []
    for b, p, a, c in _changed_places(history[-2][1], history[-1][1]):
        kind = "op" if a >= 0 and c >= 0 else ("path on" if c >= 0 else "path off")
        gap = None
        if kind == "op" and op_logits is not None:
            top = torch.softmax(torch.as_tensor(op_logits[b][p], dtype=torch.float64), -1).topk(2).values
            gap = float(top[0] - top[1])
        out.append({"block": b, "path": p, "kind": kind, "from": name(a), "to": name(c), "probability_gap": gap})
    return out


def _final_op_logits(bundle_root: Path) -> torch.Tensor | None:
    """``log_alpha_c`` of the search checkpoint ``eval/search_checkpoint.pt`` (its last iteration), or ``None``."""
    ckpt = Path(bundle_root) / "eval" / "search_checkpoint.pt"
    if not ckpt.is_file():
        return None
    state = torch.load(ckpt, map_location="cpu", weights_only=True).get("network", {})
    return next((v for k, v in state.items() if k.endswith("log_alpha_c")), None)


def run_record(bundle_root: Path, memory_lambda: float, seed: int, memory_patch: Sequence[int],
               seconds: float | None, command: Sequence[str]) -> dict[str, Any]:
    """The record of one finished search: decode, memory estimate, placement, history of decodes."""
    models = Path(bundle_root) / "models"
    arch = load_arch(models / "arch_code.json")
    history = []
    for path in sorted(models.glob("arch_code_iter*.json")):
        a = load_arch(path)
        history.append((int(path.stem.replace("arch_code_iter", "")), _decode_key(a), depth_counts(a)))
    rows = read_csv_rows(Path(bundle_root) / "eval" / "metrics.csv")
    dice = [float(r["val_dice"]) for r in rows if r.get("val_dice")]
    ratio = [float(r["memory_ratio"]) for r in rows if r.get("memory_ratio")]
    keys = [(it, key) for it, key, _ in history]
    return {
        "memory_lambda": memory_lambda,
        "seed": seed,
        "memory_patch": list(memory_patch),
        "memory_gib": estimate_memory(arch, list(memory_patch), 2) / _GIB,
        "transformers_by_depth": depth_counts(arch),
        "conv_by_depth": depth_counts(arch, "conv_3x3x3"),
        "skip_by_depth": depth_counts(arch, "skip_connect"),
        "active_paths": int(sum(sum(r) for r in arch.arch_code_a)),
        "final_memory_ratio": ratio[-1] if ratio else None,
        "final_val_dice": dice[-1] if dice else None,
        "iterations": int(rows[-1]["iteration"]) if rows else None,
        "last_change_iteration": last_change(keys),
        "changes_by_interval": decode_changes(keys),
        "last_interval_changes": last_interval_changes(keys, _final_op_logits(bundle_root), arch.ops),
        "history": [{"iteration": it, "transformers_by_depth": counts} for it, _, counts in history],
        "arch": arch.to_dict(),
        "seconds": seconds,
        "command": " ".join(command),
    }


def _flag(command: str, flag: str) -> int | None:
    """The integer after ``flag`` in a command line (``None`` when absent)."""
    words = command.split()
    return int(words[words.index(flag) + 1]) if flag in words[:-1] else None


def arch_lr_anneal_from(command: str) -> int | None:
    """First iteration (counted from 1) of the architecture learning rate's cosine, from a record's search
    ``command`` with ``--arch_lr_anneal_iterations``; ``None``: constant rate."""
    anneal, total = _flag(command, "--arch_lr_anneal_iterations"), _flag(command, "--num_iterations")
    return None if not anneal or total is None else total - anneal + 1


def full_weight_from(command: str) -> int | None:
    """First iteration (counted from 1, as the search logs count) at which the regularisers have full weight, from
    a record's search ``command``: ``warmup + ramp + 1`` with ``--ramp_iterations``, else the last iteration."""
    warmup, ramp = _flag(command, "--warmup_iterations"), _flag(command, "--ramp_iterations")
    total = _flag(command, "--num_iterations")
    if warmup is None or total is None:
        return None
    if not ramp:  # no ramp length (or 0, as on this command line): full weight at the last iteration
        return total
    return warmup + ramp + 1 if warmup + ramp + 1 <= total else None


def aggregate(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per lambda: memory (mean, sd), transformers per depth (mean, sd), last-change iterations, seeds."""
    out = []
    for lam in sorted({r["memory_lambda"] for r in records}):
        rs = sorted((r for r in records if r["memory_lambda"] == lam), key=lambda r: r["seed"])
        depths = len(rs[0]["transformers_by_depth"])
        out.append({
            "memory_lambda": lam,
            "seeds": [r["seed"] for r in rs],
            "memory_gib": mean_sd(r["memory_gib"] for r in rs),
            "transformers_by_depth": [mean_sd(r["transformers_by_depth"][d] for r in rs) for d in range(depths)],
            "transformers": mean_sd(sum(r["transformers_by_depth"]) for r in rs),
            "active_paths": mean_sd(r["active_paths"] for r in rs),
            "last_change_iteration": [r["last_change_iteration"] for r in rs],
            "iterations": [r["iterations"] for r in rs],
            "full_weight_from": [full_weight_from(r.get("command", "")) for r in rs],
            "arch_lr_anneal_from": [arch_lr_anneal_from(r.get("command", "")) for r in rs],
            "paths_changed_last": [r["changes_by_interval"][-1]["paths_changed"] if r.get("changes_by_interval")
                                   else None for r in rs],
            "final_val_dice": mean_sd(r["final_val_dice"] for r in rs),
        })
    return out


def format_last_changes(records: Sequence[dict[str, Any]]) -> str:
    """Markdown table of every place whose decode changed in a run's last validation interval
    (:func:`last_interval_changes`); a run that changed nothing there has no row."""
    lines = ["| lambda | seed | block | path | change | final probability gap of the two likeliest ops |",
             "|" + " --- |" * 6]
    for r in sorted(records, key=lambda r: (r["memory_lambda"], r["seed"])):
        changes = r.get("last_interval_changes")
        if changes is None:
            last = r["changes_by_interval"][-1]["paths_changed"] if r.get("changes_by_interval") else None
            if last:  # changed, but the record predates last_interval_changes (its run's files are gone)
                lines.append(f"| {r['memory_lambda']:g} | {r['seed']} | n/a | n/a | {last} places | n/a |")
            continue
        for c in changes:
            op = c["from"] if c["kind"] == "path off" else c["to"]
            change = f"{c['from']} -> {c['to']}" if c["kind"] == "op" else f"{c['kind']} ({op})"
            gap = "n/a" if c["probability_gap"] is None else f"{c['probability_gap']:.4f}"
            lines.append(f"| {r['memory_lambda']:g} | {r['seed']} | {c['block']} | {c['path']} | {change} | {gap} |")
    if len(lines) == 2:
        lines.append("| (none: no decode changed in its last interval) | | | | | |")
    return "\n".join(lines)


def _fmt(stat: dict[str, Any], digits: int = 1) -> str:
    if stat["mean"] is None:
        return "n/a"
    sd = "" if stat["sd"] is None else f" ± {stat['sd']:.{digits}f}"
    return f"{stat['mean']:.{digits}f}{sd}"


def _constant_if_none(values: Sequence[int | None] | None) -> str:
    return "constant" if not values or all(v is None for v in values) else str(values)


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown table of :func:`aggregate` rows."""
    lines = ["| lambda | seeds | est. memory at patch, batch 2 (GiB, mean ± sd) | transformers by depth (0 = highest "
             "res., mean ± sd) | transformers | active paths | last decode change (iteration per seed) | "
             "paths changed in the last interval (per seed) | iterations | "
             "regularisers at full weight from iteration | architecture learning rate annealed from iteration |",
             "|" + " --- |" * 11]
    for r in rows:
        by_depth = " / ".join(_fmt(s) for s in r["transformers_by_depth"])
        lines.append(f"| {r['memory_lambda']:g} | {len(r['seeds'])} | {_fmt(r['memory_gib'], 2)} | {by_depth} | "
                     f"{_fmt(r['transformers'])} | {_fmt(r['active_paths'])} | {r['last_change_iteration']} | "
                     f"{r.get('paths_changed_last')} | {r['iterations']} | {r.get('full_weight_from')} | "
                     f"{_constant_if_none(r.get('arch_lr_anneal_from'))} |")
    return "\n".join(lines)


def format_cost_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown table of :func:`~dast_components.search.sweep.cost_by_depth` rows (MiB to 2 decimals)."""
    lines = ["| depth | feature map | channels | conv 3x3x3 MiB | transformer MiB | transformer / conv |",
             "|" + " --- |" * 6]
    for r in rows:
        lines.append(f"| {r['depth']} | {'x'.join(map(str, r['size']))} | {r['channels']} | {r['conv_mib']:.2f} | "
                     f"{r['transformer_mib']:.2f} | {r['ratio']:.2f} |")
    return "\n".join(lines)


def path_costs(arch: ArchCode, patch_size: Sequence[int]) -> list[dict[str, Any]]:
    """MiB (float32, per batch item) of every path of one block per op, connection block included, as the memory
    term prices them (``path_cost_table``); with each path's input and output depth."""
    from dast_components.networks.memory import path_cost_table

    table = path_cost_table(filter_nums(arch.channel_mul, arch.num_depths), list(patch_size), arch.num_depths,
                            list(arch.ops), arch.use_downsample, arch.transformer_kwargs())
    paths = 3 * arch.num_depths - 2
    code2in = [(p + 1) // 3 - 1 + (p + 1) % 3 for p in range(paths)]
    code2out = ([d for d in range(arch.num_depths) for _ in range(3)])[1:-1]
    return [{"path": p, "in_depth": code2in[p], "out_depth": code2out[p],
             **{op: float(table[p][i]) * 4 / 2**20 for i, op in enumerate(arch.ops)}} for p in range(paths)]


def format_path_costs(rows: Sequence[dict[str, Any]], ops: Sequence[str]) -> str:
    """Markdown table of :func:`path_costs` rows."""
    lines = ["| path | depth in -> out | " + " | ".join(f"{op} MiB" for op in ops) + " |",
             "|" + " --- |" * (2 + len(ops))]
    for r in rows:
        lines.append(f"| {r['path']} | {r['in_depth']} -> {r['out_depth']} | "
                     + " | ".join(f"{r[op]:.1f}" for op in ops) + " |")
    return "\n".join(lines)


def plot_architectures(records: Sequence[dict[str, Any]], path: Path) -> None:
    """Fig. 3-like figure: one panel per (lambda, seed), blocks left to right, depth 0 on top, paths coloured by op."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dast_components.utils import atomic_path

    lams = sorted({r["memory_lambda"] for r in records})
    seeds = sorted({r["seed"] for r in records})
    fig, axes = plt.subplots(len(seeds), len(lams), figsize=(4.2 * len(lams), 2.2 * len(seeds)), squeeze=False)
    for i, seed in enumerate(seeds):
        for j, lam in enumerate(lams):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            rec = next((r for r in records if r["memory_lambda"] == lam and r["seed"] == seed), None)
            if rec is None:
                ax.set_title(f"lambda {lam:g}, seed {seed}: not run", fontsize=8)
                continue
            arch = ArchCode.from_dict(rec["arch"])
            paths = len(arch.arch_code_a[0])
            code2in = [(p + 1) // 3 - 1 + (p + 1) % 3 for p in range(paths)]
            code2out = ([d for d in range(arch.num_depths) for _ in range(3)])[1:-1]
            for b in range(arch.num_blocks):
                for p in range(paths):
                    if arch.arch_code_a[b][p]:
                        op = arch.ops[arch.arch_code_c[b][p]]
                        ax.plot([b, b + 1], [-code2in[p], -code2out[p]], color=_OP_COLOURS.get(op, "k"),
                                lw=2.2 if op == "transformer" else 1.0)
            ax.set_title(f"lambda {lam:g}, seed {seed}: {rec['memory_gib']:.1f} GiB, "
                         f"T {rec['transformers_by_depth']}", fontsize=8)
            ax.set_ylim(-arch.num_depths + 0.5, 0.5)
            ax.set_yticks([-d for d in range(arch.num_depths)], [f"d{d}" for d in range(arch.num_depths)], fontsize=7)
    handles = [plt.Line2D([], [], color=c, label=k) for k, c in _OP_COLOURS.items()]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8)
    fig.suptitle("Searched architectures\n(rows: seeds, columns: lambda; top = highest resolution)", fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 0.92))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def _settings(args: argparse.Namespace, data: Path, root: Path, lam: float, seed: int, resume: bool) -> dict:
    patch = [args.patch] * 3
    return {
        "dataset_dir": str(data), "cache_dir": str(root / "cache"), "num_blocks": 12, "num_depths": 4, "grid": 8,
        "channel_mul": args.channel_mul, "arch_channel_mul": args.channel_mul, "patch_size": patch,
        "train_patch_size": [args.memory_patch] * 3, "num_iterations": args.num_iterations,
        "warmup_iterations": args.warmup_iterations, "ramp_iterations": args.ramp_iterations or None,
        "arch_lr_anneal_iterations": args.arch_lr_anneal_iterations or None,
        "val_interval": args.val_interval, "device": args.device,
        "amp": args.device != "cpu", "tensorboard": False, "memory_lambda": lam, "seed": seed, "ops": "dast",
        "resume": resume,
    }


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Command line entry point; returns the aggregated rows."""
    parser = argparse.ArgumentParser(prog="python -m experiments.lambda_placement", description=__doc__.split("\n")[1])
    parser.add_argument("--out", default="experiments/results/lambda_placement_anneal64_96it",
                        help="[OPTIONAL] results folder")
    parser.add_argument("--dataset_dir", default=None,
                        help="[OPTIONAL] MSD-layout dataset (default: 8 synthetic phantoms written to OUT/work/data)")
    parser.add_argument("--work", default=None, help="[OPTIONAL] bundle roots of the runs (default OUT/work)")
    parser.add_argument("--lambdas", nargs="+", type=float, default=[0.2, 0.5, 0.8])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--num_iterations", type=int, default=96)
    parser.add_argument("--warmup_iterations", type=int, default=8)
    parser.add_argument("--ramp_iterations", type=int, default=24,
                        help="[OPTIONAL] iterations after the warm-up until the regularisers reach full weight (24: "
                             "full from iteration 33, then 64 iterations in which the decode can settle); 0: ramp to "
                             "the last iteration")
    parser.add_argument("--arch_lr_anneal_iterations", type=int, default=64,
                        help="[OPTIONAL] cosine of the architecture learning rate towards 0 over this many last "
                             "iterations (64: over the iterations at full weight), so that the decode settles; 0: "
                             "constant rate (DiNTS)")
    parser.add_argument("--val_interval", type=int, default=8)
    parser.add_argument("--channel_mul", type=float, default=0.125)
    parser.add_argument("--patch", type=int, default=32, help="[OPTIONAL] search patch edge (32)")
    parser.add_argument("--memory_patch", type=int, default=160, help="[OPTIONAL] patch edge of the estimate (160)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--report_only", action="store_true", help="[OPTIONAL] only rebuild outputs from records")
    args = parser.parse_args(argv)
    room = args.num_iterations - 1 - args.warmup_iterations
    if args.ramp_iterations and not 1 <= args.ramp_iterations <= room:
        parser.error(f"--ramp_iterations {args.ramp_iterations} must be in [1, {room}] (num_iterations - 1 - "
                     "warmup_iterations) to reach full weight before the last iteration, or 0 (ramp to the last "
                     "iteration).")
    if args.arch_lr_anneal_iterations and not 1 <= args.arch_lr_anneal_iterations <= room + 1:
        parser.error(f"--arch_lr_anneal_iterations {args.arch_lr_anneal_iterations} must be in [1, {room + 1}] "
                     "(num_iterations - warmup_iterations: iterations with an architecture step), or 0 (constant).")
    out = Path(args.out)
    work = Path(args.work) if args.work else out / "work"
    data = Path(args.dataset_dir) if args.dataset_dir else work / "data"
    if not args.report_only and args.dataset_dir is None and not (data / "dataset.json").is_file():
        from dast_components.data.synthetic import write_dataset

        write_dataset(data, layout="msd", num_cases=8, seed=0, shape=(64, 64, 48))
    for seed in args.seeds:  # seed-major: an interrupted run still has every lambda for the first seeds
        for lam in args.lambdas:
            name = f"lambda{lam:g}_seed{seed}"
            record_path = out / "records" / f"{name}.json"
            root = work / "runs" / name
            old = load_record(record_path)
            if (old is not None and ("changes_by_interval" not in old or "last_interval_changes" not in old)
                    and (root / "models" / "arch_code.json").is_file()):
                # a record from before decode_changes / last_interval_changes: rebuilt from its run's files, keeping
                # its wall time
                write_json(record_path, run_record(root, lam, seed, [args.memory_patch] * 3, old.get("seconds"),
                                                   old.get("command", "").split()))
                continue
            if args.report_only or old is not None:
                continue
            memory_patch = [args.memory_patch] * 3
            seconds = None
            if not search_finished(root, args.num_iterations):
                resume = (root / "eval" / "search_checkpoint.pt").is_file()
                cmd = search_command(root, _settings(args, data, root, lam, seed, resume))
                print(f"[lambda_placement] {name}: {' '.join(cmd)}", flush=True)
                root.mkdir(parents=True, exist_ok=True)
                start = time.perf_counter()
                with open(work / f"log_{name}.txt", "a") as log:
                    proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT)
                seconds = time.perf_counter() - start
                if proc.returncode != 0:
                    raise SystemExit(f"search {name} failed (exit {proc.returncode}); see {work / f'log_{name}.txt'}")
            cmd = search_command(root, _settings(args, data, root, lam, seed, False))
            if seconds is None:  # finished by an earlier call (or by hand): wall time from GNU time in its log
                seconds = _logged_seconds(work / f"log_{name}.txt")
            write_json(record_path, run_record(root, lam, seed, memory_patch, seconds, cmd))
    write_outputs(out, args.memory_patch)
    return aggregate(_records(out))


def _logged_seconds(log: Path) -> float | None:
    """Wall time in a log that ``/usr/bin/time -v`` wrote ("Elapsed (wall clock) time ...: [h:]m:ss.ss")."""
    if not log.is_file():
        return None
    for line in reversed(log.read_text(errors="replace").splitlines()):
        if "Elapsed (wall clock)" in line:
            parts = [float(p) for p in line.rsplit(" ", 1)[-1].split(":")]
            return sum(v * 60**i for i, v in enumerate(reversed(parts)))
    return None


def _records(out: Path) -> list[dict[str, Any]]:
    return [r for p in sorted((out / "records").glob("*.json")) if (r := load_record(p)) is not None]


def write_outputs(out: Path, memory_patch: int = 160) -> None:
    """``results.json``, ``results.md``, ``cost_table.md`` and ``architectures.png`` from the records in ``out``."""
    records = _records(out)
    if not records:
        return
    rows = aggregate(records)
    arch = ArchCode.from_dict(records[0]["arch"])
    costs = cost_by_depth(arch, [memory_patch] * 3)
    paths = path_costs(arch, [memory_patch] * 3)
    write_json(out / "results.json", {"environment": environment(), "summary": rows, "cost_by_depth": costs,
                                      "path_costs": paths, "runs": records})
    atomic_write_text(out / "results.md", "# Memory factor lambda vs memory and transformer placement\n\n"
                      + format_table(rows) + "\n\n## Places whose decode changed in the last validation interval\n\n"
                      + format_last_changes(records) + "\n")
    atomic_write_text(out / "cost_table.md", f"# Saved-for-backward memory per op at {memory_patch}^3, channel_mul "
                      f"{arch.channel_mul}\n\nOne op (`op_saved_elements`):\n\n" + format_cost_table(costs)
                      + "\n\nOne path of a block, connection block included, as the memory term prices it "
                      "(`path_cost_table`):\n\n" + format_path_costs(paths, arch.ops) + "\n")
    try:
        plot_architectures(records, out / "architectures.png")
    except ImportError:
        print("[lambda_placement] matplotlib not installed: no architectures.png", flush=True)


if __name__ == "__main__":
    main()
