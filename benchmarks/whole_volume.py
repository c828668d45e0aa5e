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
Whole-CT inference through the bundle itself, measured (issue 16 item 1).

One KiTS-sized synthetic CT (``--shape`` 512 x 512 x 200 voxels at ``--spacing`` 0.78 x 0.78 x 2.5 mm, KiTS19 layout,
``dast_components.data.synthetic``) is segmented by ``python -m monai.bundle run inference`` of
``bundles/dast_kits19_seg`` (load, RAS, resample to ``pixdim``, intensity window, sliding window, inverse
resampling, NIfTI writing), once per (network, setting), each in its own process under ``/usr/bin/time`` (wall time
and peak resident memory of the whole process). Networks, all with random weights (speed does not depend on them):

- ``dast``: the shipped architecture ``bundles/dast_kits19_seg/models/arch_code.json``;
- ``dints``: the DiNTS architecture searched with the same command and memory budget
  (``benchmarks/archs/dints_arch_code.json``), through the same bundle with ``--ops dints``;
- ``dynunet``: nnU-Net's 3d_fullres-like ``DynUNet`` of ``benchmarks.inference`` (same window and overlap), through
  a config overlay that replaces ``network_def``.

Settings (``--settings``):

- ``shipped``: ``inference.json`` as shipped (1 mm, 160^3 windows, overlap 0.5, ``sw_batch_size`` 2, eager PyTorch);
- ``fast``: the fastest documented CPU setting: ``inference_onnx.json`` (the network through ONNX Runtime, or
  ``--runtime openvino``) with overlap 0.25; same resampling and window;

plus the number of windows, and for ``fast`` the time of a first run on a tiny case (which exports and checks the
network once; the timed run reuses the cached file), and the share of voxels whose label equals the ``shipped``
run's when both ran. Writes ``whole_volume_cpu.json`` / ``.md`` (atomically, as every benchmark here).

Example::

    python -m benchmarks.whole_volume --threads 1 --models dast dynunet --settings fast
    python -m benchmarks.whole_volume --threads 2 --shape 256 256 100 --spacing 1.56 1.56 5.0   # same extent, faster
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

from benchmarks.common import environment, markdown_table, resolve_device, write_results
from benchmarks.inference import SEARCHED_DINTS_ARCH, build_model, dast_arch, num_windows
from dast_components.data.synthetic import write_dataset
from dast_components.networks import DASTNet

__all__ = ["SETTINGS", "main", "resampled_size"]

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "bundles" / "dast_kits19_seg" / "configs"
SETTINGS = ("shipped", "fast")
#: intensity window (HU) passed to every run: the weights are random, so no training record carries one
WINDOW = [-79.0, 304.0]


def resampled_size(shape: Sequence[int], spacing: Sequence[float], pixdim: Sequence[float]) -> list[int]:
    """Voxels of a ``shape`` volume at ``spacing`` mm after resampling to ``pixdim`` mm (what the windows cover)."""
    return [int(round(n * s / p)) for n, s, p in zip(shape, spacing, pixdim)]


def _bundle_root(tmp: Path, model: str, patch: int) -> tuple[Path, list[str], dict[str, Any]]:
    """A bundle root with random weights for ``model``, the extra config files and the overrides it needs."""
    root = tmp / f"bundle_{model}"
    (root / "models").mkdir(parents=True, exist_ok=True)
    arch, _ = dast_arch()
    torch.manual_seed(0)
    extra: list[str] = []
    overrides: dict[str, Any] = {}
    if model in ("dast", "dints"):
        source = SEARCHED_DINTS_ARCH if model == "dints" else CONFIGS.parent / "models" / "arch_code.json"
        shutil.copy(source, root / "models" / "arch_code.json")
        net = DASTNet(root / "models" / "arch_code.json", in_channels=1, num_classes=3)
        if model == "dints":
            overrides["ops"] = "dints"
    else:
        net = build_model(model, patch, arch)
        overlay = {
            # the same DynUNet as benchmarks.inference (one definition)
            "network_def": f"$__import__('benchmarks.inference', fromlist=['build_model']).build_model('{model}', "
                           f"{patch}, None)",
            "initialize": ["$dast_components.data.check_device(@device)",
                           "$dast_components.data.check_writable_dir(@output_dir, 'output_dir')",
                           "$monai.utils.set_determinism(seed=0)"],
        }
        path = tmp / f"{model}_network.json"
        path.write_text(json.dumps(overlay, indent=4))
        extra.append(str(path))
    torch.save(net.state_dict(), root / "models" / "model.pt")
    return root, extra, overrides


def _run(root: Path, data: Path, out: Path, configs: list[str], overrides: dict[str, Any], threads: int,
         timeout: int, model_overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    files = "[" + ",".join(f"'{c}'" for c in configs) + "]"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "inference", "--config_file", files, "--bundle_root",
           str(root), "--dataset_dir", str(data), "--output_dir", str(out), "--device", "cpu",
           "--intensity", json.dumps(WINDOW), "--num_workers", "0"]
    for key, value in {**overrides, **(model_overrides or {})}.items():
        cmd += [f"--{key}", json.dumps(value)]
    stats = out.parent / f"{out.name}_time.txt"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(["/usr/bin/time", "-f", "%e %M", "-o", str(stats), *cmd], env=env, cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise SystemExit(f"inference failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout[-3000:]}")
    wall, rss_kib = stats.read_text().split()[-2:]
    return {"wall_s": round(float(wall), 1), "peak_rss_mib": round(int(rss_kib) / 1024, 1)}


def _mask(out: Path) -> np.ndarray:
    files = sorted(out.rglob("*.nii.gz"))
    if not files:
        raise SystemExit(f"no mask written under {out}")
    return np.asarray(nib.load(str(files[0])).dataobj)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line entry point; returns the results payload."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.whole_volume", description=__doc__.split("\n")[1])
    parser.add_argument("--models", nargs="+", default=["dast", "dynunet"], choices=["dast", "dints", "dynunet"])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS)
    parser.add_argument("--shape", type=int, nargs=3, default=[512, 512, 200], help="[OPTIONAL] voxels (H W D)")
    parser.add_argument("--spacing", type=float, nargs=3, default=[0.78, 0.78, 2.5], help="[OPTIONAL] mm")
    parser.add_argument("--threads", type=int, default=2, help="[OPTIONAL] threads of every run (2)")
    parser.add_argument("--runtime", default="onnxruntime", choices=["onnxruntime", "openvino"],
                        help="[OPTIONAL] runtime of the fast setting (onnxruntime: the overlay's default)")
    parser.add_argument("--fast_overlap", type=float, default=0.25, help="[OPTIONAL] overlap of the fast setting")
    parser.add_argument("--timeout", type=int, default=7200, help="[OPTIONAL] seconds per run")
    parser.add_argument("--out_dir", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    device = resolve_device("cpu", args.threads)
    env = environment(device, amp=False)
    shipped = json.loads((CONFIGS / "inference.json").read_text())
    patch, pixdim, overlap = shipped["patch_size"], shipped["pixdim"], shipped["sw_overlap"]
    extent = [n * s for n, s in zip(args.shape, args.spacing)]
    setting_info = {
        "shipped": {"configs": ["inference.json"], "overrides": {}, "overlap": overlap, "runtime": "eager"},
        "fast": {"configs": ["inference.json", "inference_onnx.json"],
                 "overrides": {"sw_overlap": args.fast_overlap, "onnx_runtime": args.runtime},
                 "overlap": args.fast_overlap, "runtime": args.runtime},
    }
    runs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data = write_dataset(tmp / "data", layout="kits19", num_cases=1, shape=args.shape, spacing=args.spacing)
        tiny = write_dataset(tmp / "tiny", layout="kits19", num_cases=1, shape=(32, 32, 32), spacing=(1.0, 1.0, 1.0))
        for model in args.models:
            root, extra, model_overrides = _bundle_root(tmp, model, patch[0])
            masks: dict[str, np.ndarray] = {}
            for setting in args.settings:
                info = setting_info[setting]
                configs = [str(CONFIGS / c) for c in info["configs"]] + extra
                out = tmp / f"out_{model}_{setting}"
                first_use = None
                if setting == "fast":  # first use exports and checks the network once (cached in models/onnx)
                    print(f"[whole_volume] {model} / {setting}: export on a tiny case ...", flush=True)
                    first_use = _run(root, tiny, tmp / f"tiny_{model}", configs, info["overrides"], args.threads,
                                     args.timeout, model_overrides)["wall_s"]
                print(f"[whole_volume] {model} / {setting} ...", flush=True)
                result = _run(root, data, out, configs, info["overrides"], args.threads, args.timeout, model_overrides)
                if first_use is not None:
                    result["first_use_on_tiny_case_s"] = first_use
                masks[setting] = _mask(out)
                result.update({"model": model, "setting": setting, "runtime": info["runtime"],
                               "overlap": info["overlap"],
                               "windows": num_windows(resampled_size(args.shape, args.spacing, pixdim), patch,
                                                      info["overlap"])})
                if setting == "fast" and "shipped" in masks:
                    result["label_agreement_with_shipped"] = round(float((masks["fast"] == masks["shipped"]).mean()),
                                                                   5)
                runs[f"{model}_{setting}"] = result
                print(f"[whole_volume] {model} / {setting}: {result}", flush=True)
    settings = {"shape": args.shape, "spacing": args.spacing, "extent_mm": extent, "pixdim": pixdim,
                "patch_size": patch, "sw_batch_size": shipped["sw_batch_size"], "threads": args.threads,
                "fast": setting_info["fast"], "weights": "random (seed 0)"}
    payload = {"environment": env, "settings": settings, "runs": runs}
    rows = [[r["model"], r["setting"], r["runtime"], r["overlap"], r["windows"], r["wall_s"],
             round(r["wall_s"] / 60, 1), r["peak_rss_mib"], r.get("label_agreement_with_shipped", "")]
            for r in runs.values()]
    md = (f"One synthetic CT of {args.shape[0]} x {args.shape[1]} x {args.shape[2]} voxels at "
          f"{' x '.join(map(str, args.spacing))} mm (KiTS19 layout), `python -m monai.bundle run inference` per row "
          f"(load, RAS, {pixdim} mm, window {patch}, sliding window, inverse resampling, NIfTI), {args.threads} "
          f"thread(s), random weights; wall time and peak memory of the whole process (`/usr/bin/time`).\n\n")
    md += markdown_table(["model", "setting", "runtime", "overlap", "windows", "wall s", "min", "peak RSS MiB",
                          "labels equal to shipped"], rows) + "\n"
    if "dast" in args.models and "dynunet" in args.models:
        for setting in args.settings:
            d, n = runs.get(f"dast_{setting}"), runs.get(f"dynunet_{setting}")
            if d and n:
                md += f"\n{setting}: DAST / DynUNet wall time {d['wall_s'] / n['wall_s']:.2f}x.\n"
    json_path, md_path = write_results(args.out_dir, "whole_volume", device, payload, md)
    print(f"wrote {json_path} and {md_path}")
    return payload


if __name__ == "__main__":
    main()
