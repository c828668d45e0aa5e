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
Paper Fig. 2: the searched DAST network vs the searched DiNTS network, retrained with the same schedule.

1. Search both op pools (``--ops dast`` / ``--ops dints``) with the ``dast_search`` bundle: same data, workflow,
   iterations and absolute memory budget (``--memory_budget_gib`` at ``--memory_patch``^3, batch 2).
2. Retrain each searched architecture with the ``dast_kits19_seg`` bundle (``quick.json`` overlay plus the schedule
   given here) for every seed; its ``eval/training_log_fold0.csv`` gives training loss and validation Dice per
   validation interval.
3. Per op pool: final Dice, best Dice, normalised area under the validation curve (mean, sd over seeds); paired
   difference DAST - DiNTS per seed (mean, sd); ``curves.png`` (mean and band of one sd over seeds).

Writes ``results.json`` (every run, environment), ``results.md`` and ``curves.png`` to ``--out``; one record per
search and per retraining in ``records/``, so a stopped run resumes (records present are skipped; a search resumes
from its bundle checkpoint; a retraining that was stopped restarts, the bundle has no training resume).

Default data: hard synthetic phantoms (:func:`write_hard_phantoms`) written to ``OUT/work``; ``--dataset_dir``
(MSD layout, for the search) and ``--train_dataset_dir`` (KiTS19 layout, for the retraining) take real data.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dast_components.utils import atomic_write_text
from experiments.common import (
    bundle_command,
    environment,
    load_record,
    mean_sd,
    read_csv_rows,
    search_command,
    search_finished,
    write_json,
)

__all__ = [
    "TRAIN_OVERRIDE_IDS",
    "aggregate",
    "curve_area",
    "format_table",
    "main",
    "paired",
    "plot_curves",
    "train_command",
    "write_hard_phantoms",
]

#: every retraining bundle config id this experiment overrides
TRAIN_OVERRIDE_IDS: tuple[str, ...] = (
    "dataset_dir", "cache_dir", "arch_file", "ops", "num_iterations", "val_interval", "seed", "device", "fold",
)
TRAIN_CONFIGS = ("bundles/dast_kits19_seg/configs/train.json", "bundles/dast_kits19_seg/configs/quick.json")
METRIC = "val_composite_dice"
OPS = ("dast", "dints")


def write_hard_phantoms(out: Path, layout: str, num_cases: int, noise_sd: float, tumor_contrast: float,
                        seed: int = 0, shape: Sequence[int] = (64, 64, 48)) -> Path:
    """Synthetic phantoms made harder: extra Gaussian noise (HU sd ``noise_sd``) and the tumor's contrast to the
    kidney scaled by ``tumor_contrast`` (1 = unchanged, 0 = the tumor takes the kidney's mean intensity)."""
    import nibabel as nib

    from dast_components.data.synthetic import write_dataset
    from dast_components.utils import atomic_path

    write_dataset(out, layout=layout, num_cases=num_cases, seed=seed, shape=tuple(shape))
    if layout == "msd":
        pairs = [(p, out / "labelsTr" / p.name) for p in sorted((out / "imagesTr").glob("*.nii.gz"))]
    else:
        pairs = [(d / "imaging.nii.gz", d / "segmentation.nii.gz") for d in sorted(out.glob("case_*"))]
    rng = np.random.default_rng(seed + 1000)
    for image_path, label_path in pairs:
        img = nib.load(str(image_path))
        data = np.asarray(img.dataobj).astype(np.float32)
        label = np.asarray(nib.load(str(label_path)).dataobj)
        kidney = float(data[label == 1].mean())
        tumor = label == 2
        data[tumor] = kidney + tumor_contrast * (data[tumor] - kidney)
        data += rng.normal(0.0, noise_sd, size=data.shape).astype(np.float32)
        new = nib.Nifti1Image(np.round(np.clip(data, -1024, 3071)).astype(np.int16), img.affine, img.header)
        with atomic_path(image_path) as tmp:
            nib.save(new, tmp)
    return out


def train_command(bundle_root: Path, settings: dict[str, Any], configs: Sequence[str] = TRAIN_CONFIGS) -> list[str]:
    """The KiTS bundle's ``training`` workflow with ``settings`` (keys from :data:`TRAIN_OVERRIDE_IDS`)."""
    return bundle_command("training", bundle_root, settings, configs, TRAIN_OVERRIDE_IDS)


def curve_area(iterations: Sequence[float], values: Sequence[float]) -> float | None:
    """Area under the validation curve divided by its iteration span (the curve's mean height); ``None`` if < 2
    points. A single number that rewards converging fast as well as ending high."""
    if len(values) < 2:
        return None
    x = np.asarray(iterations, dtype=float)
    y = np.asarray(values, dtype=float)
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2 / (x[-1] - x[0]))


def _curve(record: dict[str, Any]) -> tuple[list[int], list[float]]:
    pts = [(int(r["iteration"]), float(r[METRIC])) for r in record["log"] if r.get(METRIC) not in (None, "")]
    return [p[0] for p in pts], [p[1] for p in pts]


def aggregate(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per op pool final / best Dice and curve area (mean, sd over seeds); the paired DAST - DiNTS differences."""
    per_run: dict[str, dict[int, dict[str, float | None]]] = {}
    for r in records:
        it, dice = _curve(r)
        per_run.setdefault(r["ops"], {})[r["seed"]] = {
            "final": dice[-1] if dice else None, "best": max(dice) if dice else None, "area": curve_area(it, dice)}
    summary = {}
    for ops, runs in per_run.items():
        summary[ops] = {k: mean_sd(v[k] for v in runs.values()) for k in ("final", "best", "area")}
        summary[ops]["seeds"] = sorted(runs)
    return {"per_ops": summary, "paired": paired(per_run)}


def paired(per_run: dict[str, dict[int, dict[str, float | None]]]) -> dict[str, Any]:
    """DAST - DiNTS per seed present in both, for final, best and area: values, mean and sd."""
    a, b = per_run.get("dast", {}), per_run.get("dints", {})
    seeds = sorted(set(a) & set(b))
    out: dict[str, Any] = {"seeds": seeds}
    for k in ("final", "best", "area"):
        diffs = [a[s][k] - b[s][k] for s in seeds if a[s][k] is not None and b[s][k] is not None]
        out[k] = {"differences": diffs, **mean_sd(diffs)}
    return out


def _fmt(stat: dict[str, Any]) -> str:
    if stat["mean"] is None:
        return "n/a"
    return f"{stat['mean']:.4f}" + ("" if stat["sd"] is None else f" ± {stat['sd']:.4f}")


def format_table(agg: dict[str, Any]) -> str:
    """Markdown table of :func:`aggregate`'s result."""
    lines = ["| network | seeds | final Dice | best Dice | area under val. curve / span |", "|" + " --- |" * 5]
    for ops, s in agg["per_ops"].items():
        lines.append(f"| {ops} | {len(s['seeds'])} | {_fmt(s['final'])} | {_fmt(s['best'])} | {_fmt(s['area'])} |")
    p = agg["paired"]
    lines.append(f"| DAST - DiNTS (paired, seeds {p['seeds']}) | {len(p['seeds'])} | {_fmt(p['final'])} | "
                 f"{_fmt(p['best'])} | {_fmt(p['area'])} |")
    return "\n".join(lines)


def plot_curves(records: Sequence[dict[str, Any]], path: Path) -> None:
    """Fig. 2-like figure: validation Dice (mean and one-sd band over seeds) and training loss per op pool."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dast_components.utils import atomic_path

    fig, (ax_d, ax_l) = plt.subplots(1, 2, figsize=(9, 3.5))
    for ops in sorted({r["ops"] for r in records}):
        rs = [r for r in records if r["ops"] == ops]
        curves = [_curve(r) for r in rs]
        n = min(len(c[1]) for c in curves)
        if n:
            x = np.asarray(curves[0][0][:n])
            y = np.asarray([c[1][:n] for c in curves])
            ax_d.plot(x, y.mean(0), label=f"{ops} ({len(rs)} seeds)")
            ax_d.fill_between(x, y.mean(0) - y.std(0), y.mean(0) + y.std(0), alpha=0.25)
        losses = [[(int(row["iteration"]), float(row["train_loss"])) for row in r["log"]] for r in rs]
        m = min(len(v) for v in losses)
        if m:
            lx = np.asarray([p[0] for p in losses[0][:m]])
            ly = np.asarray([[p[1] for p in v[:m]] for v in losses])
            ax_l.plot(lx, ly.mean(0), label=ops)
            ax_l.fill_between(lx, ly.mean(0) - ly.std(0), ly.mean(0) + ly.std(0), alpha=0.25)
    ax_d.set(xlabel="iteration", ylabel="validation composite Dice", title="validation")
    ax_l.set(xlabel="iteration", ylabel="training loss (epoch mean)", title="training")
    ax_d.legend(fontsize=8)
    ax_l.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def _run(cmd: list[str], log: Path) -> float:
    print(f"[dast_vs_dints] {' '.join(cmd)}", flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "a") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[4]} failed (exit {proc.returncode}); see {log}")
    return time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line entry point; returns the aggregate."""
    parser = argparse.ArgumentParser(prog="python -m experiments.dast_vs_dints", description=__doc__.split("\n")[1])
    parser.add_argument("--out", default="experiments/results/dast_vs_dints")
    parser.add_argument("--dataset_dir", default=None, help="[OPTIONAL] MSD-layout search data (default: phantoms)")
    parser.add_argument("--train_dataset_dir", default=None,
                        help="[OPTIONAL] KiTS19-layout retraining data (default: phantoms)")
    parser.add_argument("--work", default=None, help="[OPTIONAL] bundle roots (default OUT/work)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="[OPTIONAL] retraining seeds")
    parser.add_argument("--search_iterations", type=int, default=24)
    parser.add_argument("--search_warmup", type=int, default=8)
    parser.add_argument("--num_iterations", type=int, default=2000, help="[OPTIONAL] retraining iterations (2000)")
    parser.add_argument("--val_interval", type=int, default=100)
    parser.add_argument("--memory_budget_gib", type=float, default=2.0,
                        help="[OPTIONAL] absolute budget at --memory_patch^3, batch 2, for both searches (2.0 GiB:"
                             " binds at channel_mul 0.125, where the untrained decode is ~3.7 GiB)")
    parser.add_argument("--memory_patch", type=int, default=160)
    parser.add_argument("--channel_mul", type=float, default=0.125)
    parser.add_argument("--patch", type=int, default=32)
    parser.add_argument("--num_cases", type=int, default=10, help="[OPTIONAL] phantom cases per dataset (10)")
    parser.add_argument("--noise_sd", type=float, default=40.0, help="[OPTIONAL] extra phantom noise, HU (40)")
    parser.add_argument("--tumor_contrast", type=float, default=0.3, help="[OPTIONAL] tumor contrast scale (0.3)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--report_only", action="store_true")
    args = parser.parse_args(argv)
    out = Path(args.out)
    work = Path(args.work) if args.work else out / "work"
    search_data = Path(args.dataset_dir) if args.dataset_dir else work / "data_msd"
    train_data = Path(args.train_dataset_dir) if args.train_dataset_dir else work / "data_kits19"
    if not args.report_only:
        for path, layout, given in ((search_data, "msd", args.dataset_dir), (train_data, "kits19",
                                                                             args.train_dataset_dir)):
            marker = path / ".experiment_phantoms_done"
            if given is None and not marker.is_file():
                write_hard_phantoms(path, layout, args.num_cases, args.noise_sd, args.tumor_contrast)
                marker.write_text("")
        for ops in OPS:
            rec_path = out / "records" / f"search_{ops}.json"
            if load_record(rec_path) is not None:
                continue
            root = work / f"search_{ops}"
            settings = {
                "dataset_dir": str(search_data), "cache_dir": str(root / "cache"), "num_blocks": 12, "num_depths": 4,
                "grid": 8, "channel_mul": args.channel_mul, "arch_channel_mul": args.channel_mul,
                "patch_size": [args.patch] * 3, "train_patch_size": [args.memory_patch] * 3,
                "num_iterations": args.search_iterations, "warmup_iterations": args.search_warmup,
                "val_interval": max(1, args.search_iterations // 4), "device": args.device,
                "amp": args.device != "cpu", "tensorboard": False, "memory_budget_gib": args.memory_budget_gib,
                "seed": 0, "ops": ops,
            }
            seconds = None
            if not search_finished(root, args.search_iterations):
                settings["resume"] = (root / "eval" / "search_checkpoint.pt").is_file()
                seconds = _run(search_command(root, settings), work / f"log_search_{ops}.txt")
            arch = json.loads((root / "models" / "arch_code.json").read_text())
            write_json(rec_path, {"ops": ops, "settings": {k: v for k, v in settings.items() if k != "resume"},
                                  "arch": arch, "seconds": seconds})
        for seed in args.seeds:
            for ops in OPS:
                rec_path = out / "records" / f"train_{ops}_seed{seed}.json"
                if load_record(rec_path) is not None:
                    continue
                root = work / f"train_{ops}_seed{seed}"
                arch_file = root / "arch_code.json"
                root.mkdir(parents=True, exist_ok=True)
                write_json(arch_file, load_record(out / "records" / f"search_{ops}.json")["arch"])
                settings = {"dataset_dir": str(train_data), "cache_dir": str(root / "cache"),
                            "arch_file": str(arch_file), "ops": ops, "num_iterations": args.num_iterations,
                            "val_interval": args.val_interval, "seed": seed, "device": args.device, "fold": 0}
                seconds = _run(train_command(root, settings), work / f"log_train_{ops}_seed{seed}.txt")
                log = read_csv_rows(root / "eval" / "training_log_fold0.csv")
                write_json(rec_path, {"ops": ops, "seed": seed, "settings": settings, "seconds": seconds,
                                      "log": log})
    records = [r for p in sorted((out / "records").glob("train_*.json")) if (r := load_record(p)) is not None]
    if not records:
        return {}
    agg = aggregate(records)
    data_note = {"search_dataset": args.dataset_dir or f"phantoms: {args.num_cases} cases, noise_sd {args.noise_sd}, "
                 f"tumor_contrast {args.tumor_contrast}", "train_dataset": args.train_dataset_dir or "phantoms (same)"}
    write_json(out / "results.json", {"environment": environment(), "data": data_note, "summary": agg,
                                      "runs": records})
    atomic_write_text(out / "results.md", "# DAST vs DiNTS, retrained\n\n" + format_table(agg) + "\n")
    try:
        plot_curves(records, out / "curves.png")
    except ImportError:
        print("[dast_vs_dints] matplotlib not installed: no curves.png", flush=True)
    return agg


if __name__ == "__main__":
    main()
