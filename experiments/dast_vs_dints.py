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
The paper's Fig. 2 claim, measured: the searched DAST network retrains faster and validates better than the searched
DiNTS network at an equal memory budget.

1. **Search** both op pools with the same ``dast_search`` bundle workflow, data, seed, iterations and absolute memory
   budget (``--ops dast`` / ``--ops dints``, ``--memory_budget_gib``, in GiB of the retrained network at width 1.0
   and the paper's 160^3 patch, batch 2, as the search bundle prices it; the supernet itself is searched at the
   reduced width and patch of :mod:`experiments.lambda_placement`); each decoded architecture is copied to
   ``OUT/records/arch_<pool>.json`` with a record ``OUT/records/search_<pool>.json``.
2. **Retrain** each architecture with the ``dast_kits19_seg`` bundle (``train.json`` + ``quick.json``; width
   ``TRAIN_SETTINGS["channel_mul"]`` so that a CPU retrains it, and the iteration settings below) for every seed;
   the bundle's per-epoch CSV (training loss, validation Dice of the KiTS19 composite, kidney and tumor) becomes
   ``OUT/records/train_<pool>_seed<s>.json``.
3. **Compare**: per pool the final Dice, the best Dice and the area under the validation curve (trapezoid over
   iterations, divided by their span: the mean Dice over training), mean and sd over seeds; the paired difference
   DAST - DiNTS per seed (mean and sd); ``OUT/dast_vs_dints.{json,md,png}`` (the PNG: mean validation Dice and
   training loss per pool with a min-max band over seeds, like the paper's Fig. 2).

Records are the unit of resumption: a finished search or retraining is skipped when the command runs again; an
unfinished search continues from its checkpoint; an unfinished retraining restarts.

Command line (defaults: the CPU setting of ``experiments/README.md``)::

    python -m experiments.dast_vs_dints --out experiments/results/dast_vs_dints [--dataset_dir MSD_DIR]
        [--train_dataset_dir KITS19_DIR] [--budget_gib 24] [--seeds 0 1 2] [--search_iterations 80]
        [--train_iterations 800] [--val_interval 50] [--jobs 2] [--device cpu]
        [--search_args "..."] [--train_args "..."]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from statistics import mean, stdev
from typing import Any

from dast_components.networks.arch_io import load_arch
from dast_components.networks.memory import estimate_memory
from dast_components.search.sweep import depth_counts
from dast_components.utils import atomic_write_text
from experiments.lambda_placement import SETTINGS as SEARCH_SETTINGS
from experiments.runner import Job, loadavg, run_jobs

__all__ = ["POOLS", "TRAIN_SETTINGS", "compare", "curve_summary", "main", "read_training_log", "search_command",
           "train_command"]

ROOT = Path(__file__).resolve().parents[1]
SEARCH_BUNDLE = ROOT / "bundles" / "dast_search"
TRAIN_BUNDLE = ROOT / "bundles" / "dast_kits19_seg"
POOLS = ("dast", "dints")
DICE_KEY = "val_composite_dice"  # the retraining bundle's key metric (KiTS19 composite Dice)
_GIB = float(1024**3)

# The retraining bundle's override ids this experiment sets on top of quick.json (32^3 patch, batch 2): the width
# of the retrained networks (the searched architectures are exported at width 1.0); one place, so a renamed id is
# changed once.
TRAIN_SETTINGS: dict[str, Any] = {"channel_mul": 0.125}
MEMORY_PATCH = (160, 160, 160)


def _arg(value: Any) -> str:
    return json.dumps(value) if isinstance(value, list) else str(value)


def search_command(bundle_root: Path, dataset_dir: Path, pool: str, budget_gib: float, iterations: int, device: str,
                   resume: bool, extra: Sequence[str] = ()) -> list[str]:
    """The search bundle CLI call of one pool: the lambda experiment's settings, the pool and the absolute budget."""
    configs = "[" + ",".join(f"'{SEARCH_BUNDLE / 'configs' / c}'" for c in ("search.json", "quick.json")) + "]"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "search", "--config_file", configs,
           "--bundle_root", str(bundle_root), "--dataset_dir", str(dataset_dir), "--ops", pool,
           "--memory_budget_gib", str(budget_gib), "--seed", "0", "--num_iterations", str(iterations),
           "--device", f"$torch.device('{device}')", "--resume", str(resume)]
    for key, value in SEARCH_SETTINGS.items():
        cmd += [f"--{key}", _arg(value)]
    return cmd + list(extra)


def train_command(bundle_root: Path, dataset_dir: Path, arch_file: Path, pool: str, seed: int, iterations: int,
                  val_interval: int, device: str, extra: Sequence[str] = ()) -> list[str]:
    """The retraining bundle CLI call of one (architecture, seed); ``pool`` is the op pool it was searched with."""
    configs = "[" + ",".join(f"'{TRAIN_BUNDLE / 'configs' / c}'" for c in ("train.json", "quick.json")) + "]"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", configs,
           "--bundle_root", str(bundle_root), "--dataset_dir", str(dataset_dir), "--arch_file", str(arch_file),
           "--ops", pool, "--seed", str(seed), "--num_iterations", str(iterations), "--val_interval", str(val_interval),
           "--device", device]
    for key, value in TRAIN_SETTINGS.items():
        cmd += [f"--{key}", _arg(value)]
    return cmd + list(extra)


def read_training_log(path: Path) -> dict[str, list[float]]:
    """Iteration, training loss and validation Dice columns of the retraining bundle's per-epoch CSV; the Dice
    lists hold only the epochs that validated."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or DICE_KEY not in rows[0]:
        raise SystemExit(f"{path} has no '{DICE_KEY}' column: did the retraining validate (val_interval)?")
    out: dict[str, list[float]] = {"iteration": [], "train_loss": [], "val_iteration": [], "val_dice": []}
    for r in rows:
        out["iteration"].append(int(r["iteration"]))
        out["train_loss"].append(float(r["train_loss"]))
        if r.get(DICE_KEY):
            out["val_iteration"].append(int(r["iteration"]))
            out["val_dice"].append(float(r[DICE_KEY]))
    return out


def curve_summary(iterations: Sequence[int], dice: Sequence[float]) -> dict[str, float]:
    """Final and best Dice, and the area under the validation curve divided by the iterations it spans."""
    if not dice:
        raise ValueError("no validation Dice values")
    if len(dice) == 1:
        auc = dice[0]
    else:
        area = sum((x1 - x0) * (y0 + y1) / 2 for x0, x1, y0, y1 in zip(iterations, iterations[1:], dice, dice[1:]))
        auc = area / (iterations[-1] - iterations[0])
    return {"final_dice": dice[-1], "best_dice": max(dice), "auc_dice": auc}


def _sd(values: Sequence[float]) -> float:
    return stdev(values) if len(values) > 1 else 0.0


def compare(train_records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per pool mean/sd of the curve summaries and the paired DAST - DiNTS difference over the seeds both have."""
    out: dict[str, Any] = {"per_pool": {}, "paired": {}}
    for pool in POOLS:
        rs = [r for r in train_records if r["pool"] == pool]
        if rs:
            out["per_pool"][pool] = {k: {"mean": mean(r[k] for r in rs), "sd": _sd([r[k] for r in rs])}
                                     for k in ("final_dice", "best_dice", "auc_dice")}
            out["per_pool"][pool]["seeds"] = sorted(r["seed"] for r in rs)
    by = {(r["pool"], r["seed"]): r for r in train_records}
    seeds = sorted(s for (p, s) in by if p == "dast" and ("dints", s) in by)
    for k in ("final_dice", "best_dice", "auc_dice"):
        diffs = [by["dast", s][k] - by["dints", s][k] for s in seeds]
        if diffs:
            out["paired"][k] = {"mean": mean(diffs), "sd": _sd(diffs), "per_seed": diffs}
    out["paired"]["seeds"] = seeds
    return out


def _markdown(payload: dict[str, Any]) -> str:
    cmp_ = payload["comparison"]
    text = (
        "# DAST vs DiNTS: searched under one memory budget, retrained with one schedule (paper Fig. 2)\n\n"
        f"Command: `{payload['command']}`\n\n"
        f"Search data: {payload['search_dataset']}; retraining data: {payload['train_dataset']}. Budget "
        f"{payload['budget_gib']} GiB for both (estimated training memory at width 1.0, patch 160^3, batch 2); "
        f"supernet width {SEARCH_SETTINGS['channel_mul']} at patch {SEARCH_SETTINGS['patch_size']}, "
        f"{payload['search_iterations']} search iterations, seed 0; retraining at width "
        f"{TRAIN_SETTINGS['channel_mul']} (quick overlay: patch 32^3, batch 2), {payload['train_iterations']} "
        f"iterations, validation every {payload['val_interval']}, seeds "
        f"{payload['seeds']}. Load average {payload['environment']['loadavg_start']} -> "
        f"{payload['environment']['loadavg_end']}.\n\n"
        "| pool | ops of the searched architecture | transformers by depth | est. memory GiB at 160^3 |\n"
        "| --- | --- | --- | --- |\n"
    )
    for pool, s in payload["searches"].items():
        ops = ", ".join(f"{k} {v}" for k, v in s["ops"].items())
        text += f"| {pool} | {ops} | {s['transformers_by_depth']} | {s['est_memory_gib']:.2f} |\n"
    text += ("\n| pool | seeds | final Dice | best Dice | area under the validation curve |\n"
             "| --- | --- | --- | --- | --- |\n")
    for pool, s in cmp_["per_pool"].items():
        cells = " | ".join(f"{s[k]['mean']:.4f} +- {s[k]['sd']:.4f}"
                           for k in ("final_dice", "best_dice", "auc_dice"))
        text += f"| {pool} | {len(s['seeds'])} | {cells} |\n"
    if cmp_["paired"].get("final_dice"):
        cells = " | ".join(f"{cmp_['paired'][k]['mean']:+.4f} +- {cmp_['paired'][k]['sd']:.4f}"
                           for k in ("final_dice", "best_dice", "auc_dice"))
        text += f"| DAST - DiNTS, paired over seeds {cmp_['paired']['seeds']} | | {cells} |\n"
    return text


def _figure(train_records: Sequence[dict[str, Any]], path: Path) -> None:
    from dast_components.visualize._common import new_figure, save_figure

    fig = new_figure(11.0, 4.2)
    ax_dice, ax_loss = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for pool, colour in zip(POOLS, ("tab:red", "tab:blue")):
        rs = [r for r in train_records if r["pool"] == pool]
        if not rs:
            continue
        for ax, xkey, ykey in ((ax_dice, "val_iteration", "val_dice"), (ax_loss, "iteration", "train_loss")):
            n = min(len(r["curves"][ykey]) for r in rs)
            xs = rs[0]["curves"][xkey][:n]
            ys = [[r["curves"][ykey][i] for r in rs] for i in range(n)]
            ax.plot(xs, [mean(v) for v in ys], color=colour, label=f"{pool.upper()} (mean of {len(rs)} seeds)")
            ax.fill_between(xs, [min(v) for v in ys], [max(v) for v in ys], color=colour, alpha=0.2)
    ax_dice.set_xlabel("iteration")
    ax_dice.set_ylabel("validation Dice (KiTS19 composite)")
    ax_loss.set_xlabel("iteration")
    ax_loss.set_ylabel("training loss (epoch mean)")
    ax_dice.legend(fontsize=8)
    save_figure(fig, path)


def _dataset(given: str | None, out: Path, layout: str) -> tuple[Path, str]:
    if given:
        path = Path(given).resolve()
        if not path.is_dir():
            raise SystemExit(f"dataset folder {path} does not exist.")
        return path, f"`{given}`"
    path = out / "work" / f"data_{layout}"
    seed = "0" if layout == "msd" else "1"
    if not any(path.glob("*")):
        subprocess.run([sys.executable, "-m", "dast_components.data.synthetic", "--layout", layout, "--num_cases", "8",
                        "--seed", seed, "--out", str(path)], check=True, capture_output=True)
    return path, (f"8 synthetic {layout.upper()}-layout phantoms (`python -m dast_components.data.synthetic --layout "
                  f"{layout} --seed {seed}`)")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line entry point; returns the payload written to ``OUT/dast_vs_dints.json``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = "python -m experiments.dast_vs_dints " + " ".join(shlex.quote(a) for a in argv)
    parser = argparse.ArgumentParser(prog="python -m experiments.dast_vs_dints",
                                     description="Search DAST and DiNTS under one memory budget, retrain both with one "
                                                 "schedule over several seeds, compare (paper Fig. 2).")
    parser.add_argument("--out", required=True, help="[REQUIRED] results folder (records/, work/, the report)")
    parser.add_argument("--dataset_dir", default=None, help="[OPTIONAL] MSD-layout search data; default: phantoms")
    parser.add_argument("--train_dataset_dir", default=None,
                        help="[OPTIONAL] KiTS19-layout retraining data; default: phantoms")
    parser.add_argument("--budget_gib", type=float, default=24.0,
                        help="[OPTIONAL] absolute memory budget of both searches, GiB of the retrained network at "
                             "width 1.0, 160^3, batch 2 (24, the shipped architecture's)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="[OPTIONAL] retraining seeds (0 1 2)")
    parser.add_argument("--search_iterations", type=int, default=80, help="[OPTIONAL] (80)")
    parser.add_argument("--train_iterations", type=int, default=800, help="[OPTIONAL] (800)")
    parser.add_argument("--val_interval", type=int, default=50, help="[OPTIONAL] validation every N iterations (50)")
    parser.add_argument("--jobs", type=int, default=2, help="[OPTIONAL] runs at once (2)")
    parser.add_argument("--device", default="cpu", help="[OPTIONAL] torch device of every run (cpu)")
    parser.add_argument("--search_args", default="", help="[OPTIONAL] extra overrides of both searches, one string")
    parser.add_argument("--train_args", default="", help="[OPTIONAL] extra overrides of every retraining, one string")
    args = parser.parse_args(argv)
    if args.search_iterations <= SEARCH_SETTINGS["warmup_iterations"] and "--warmup_iterations" not in args.search_args:
        raise SystemExit(f"--search_iterations {args.search_iterations} must exceed the "
                         f"{SEARCH_SETTINGS['warmup_iterations']} warm-up iterations.")
    if args.val_interval < 1 or args.val_interval > args.train_iterations:
        raise SystemExit(f"--val_interval {args.val_interval} must be in 1..{args.train_iterations}.")
    out = Path(args.out).resolve()
    records = out / "records"
    records.mkdir(parents=True, exist_ok=True)
    start_load = loadavg()
    search_data, search_desc = _dataset(args.dataset_dir, out, "msd")
    train_data, train_desc = _dataset(args.train_dataset_dir, out, "kits19")

    def search_done(pool: str, root: Path) -> Any:
        def done(seconds: float) -> None:
            arch = load_arch(root / "models" / "arch_code.json")
            shutil.copyfile(root / "models" / "arch_code.json", records / f"arch_{pool}.tmp")
            os.replace(records / f"arch_{pool}.tmp", records / f"arch_{pool}.json")
            rec = {"pool": pool, "seconds": round(seconds, 1), "ops": arch.op_counts(),
                   "transformers_by_depth": depth_counts(arch),
                   "est_memory_gib": estimate_memory(arch, MEMORY_PATCH, 2) / _GIB,
                   "val_dice": arch.provenance.get("val_dice")}
            atomic_write_text(records / f"search_{pool}.json", json.dumps(rec, indent=2) + "\n")
        return done

    jobs = []
    for pool in POOLS:
        if not (records / f"search_{pool}.json").is_file():
            root = out / "work" / f"search_{pool}"
            resume = (root / "eval" / "search_checkpoint.pt").is_file()
            cmd = search_command(root, search_data, pool, args.budget_gib, args.search_iterations, args.device,
                                 resume, shlex.split(args.search_args))
            jobs.append(Job(f"search {pool}", cmd, root, search_done(pool, root)))
    run_jobs(jobs, args.jobs, tag="dast_vs_dints")

    def train_done(pool: str, seed: int, root: Path) -> Any:
        def done(seconds: float) -> None:
            curves = read_training_log(root / "eval" / "training_log_fold0.csv")
            rec = {"pool": pool, "seed": seed, "seconds": round(seconds, 1), "curves": curves,
                   **curve_summary(curves["val_iteration"], curves["val_dice"])}
            atomic_write_text(records / f"train_{pool}_seed{seed}.json", json.dumps(rec, indent=2) + "\n")
        return done

    jobs = []
    for seed in args.seeds:
        for pool in POOLS:
            if not (records / f"train_{pool}_seed{seed}.json").is_file():
                root = out / "work" / f"train_{pool}_seed{seed}"
                if root.exists():  # an unfinished retraining restarts (the bundle has no mid-run resume)
                    shutil.rmtree(root)
                (root / "models").mkdir(parents=True)
                cmd = train_command(root, train_data, records / f"arch_{pool}.json", pool, seed, args.train_iterations,
                                    args.val_interval, args.device, shlex.split(args.train_args))
                jobs.append(Job(f"retrain {pool} seed {seed}", cmd, root, train_done(pool, seed, root)))
    run_jobs(jobs, args.jobs, tag="dast_vs_dints")

    import monai
    import torch

    searches = {p: json.loads((records / f"search_{p}.json").read_text()) for p in POOLS}
    trains = [json.loads((records / f"train_{p}_seed{s}.json").read_text()) for s in args.seeds for p in POOLS]
    payload = {
        "command": command, "search_dataset": search_desc, "train_dataset": train_desc,
        "budget_gib": args.budget_gib, "search_iterations": args.search_iterations,
        "train_iterations": args.train_iterations, "val_interval": args.val_interval, "seeds": args.seeds,
        "search_settings": SEARCH_SETTINGS, "train_settings": TRAIN_SETTINGS,
        "search_args": args.search_args, "train_args": args.train_args,
        "environment": {"torch": torch.__version__, "monai": monai.__version__, "python": platform.python_version(),
                        "cpu_count": os.cpu_count(), "device": args.device, "loadavg_start": start_load,
                        "loadavg_end": loadavg()},
        "searches": searches,
        "comparison": compare(trains),
        "runs": [{k: v for k, v in r.items() if k != "curves"} for r in trains],
    }
    atomic_write_text(out / "dast_vs_dints.json", json.dumps(payload, indent=2) + "\n")
    atomic_write_text(out / "dast_vs_dints.md", _markdown(payload))
    _figure(trains, out / "dast_vs_dints.png")
    print(f"[dast_vs_dints] wrote {out / 'dast_vs_dints.md'}", flush=True)
    return payload


if __name__ == "__main__":
    main()
