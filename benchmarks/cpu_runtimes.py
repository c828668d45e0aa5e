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
CPU runtimes for one sliding window: eager PyTorch vs ONNX Runtime vs OpenVINO (issue 16 item 2).

For each network (the shipped DAST architecture ``bundles/dast_kits19_seg/models/arch_code.json`` with random
weights, and the nnU-Net-like ``DynUNet`` of ``benchmarks.inference`` as a reference) and each window size: the
network is exported once with :func:`dast_components.deploy.export_onnx` (the exporter ``inference_onnx.json`` uses),
then one window (batch ``--batch``) is run by eager PyTorch (``torch.inference_mode``), by ONNX Runtime
(:class:`dast_components.deploy.OnnxPredictor`, CPUExecutionProvider) and, when ``openvino`` is installed, by
OpenVINO (:class:`dast_components.deploy.OpenVinoPredictor`: the same ONNX file compiled for ``CPU`` in
float32). All three get ``--threads`` threads. The runtimes alternate
within each repeat (warm-up first); the medians, the speed-up over eager, and the largest absolute logit difference
from eager are recorded. The sliding window's pre- and post-processing are the same for every runtime, so the
per-window speed-up is the whole-volume speed-up up to the (runtime-independent) resampling and saving.

Example::

    python -m benchmarks.cpu_runtimes --threads 1                 # 160^3 (the bundle's window) and 96^3
    python -m benchmarks.cpu_runtimes --threads 1 --sizes 96 --models dast
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
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
from benchmarks.inference import build_model, dast_arch
from dast_components.deploy import OnnxPredictor, OpenVinoPredictor, export_onnx
from dast_components.errors import InputError

__all__ = ["RUNTIMES", "main", "runtime_callables"]

RUNTIMES = ("eager", "onnxruntime", "openvino")


def runtime_callables(
    network: nn.Module, window: Sequence[int], batch: int, threads: int, workdir: Path
) -> tuple[dict[str, Callable[[], Any]], dict[str, str], torch.Tensor]:
    """
    Export ``network`` and return one zero-argument callable per available runtime, the skipped ones with their
    reason, and each runtime's logits on one random input (for the differences).

    Returns:
        ``(calls, skipped, input)``; ``calls[name]()`` returns the logits as a float32 tensor.
    """
    path = export_onnx(network, workdir / "net.onnx", window)
    x = torch.rand(batch, 1, *window, generator=torch.Generator().manual_seed(0))
    calls: dict[str, Callable[[], Any]] = {}

    def eager() -> torch.Tensor:
        with torch.inference_mode():
            return network(x).float()

    calls["eager"] = eager
    ort = OnnxPredictor(path, threads=threads)
    calls["onnxruntime"] = lambda: ort(x)
    skipped: dict[str, str] = {}
    try:
        ov = OpenVinoPredictor(path, threads=threads)
    except InputError as err:  # openvino not installed
        skipped["openvino"] = str(err)
    else:
        calls["openvino"] = lambda: ov(x)
    return calls, skipped, x


def _markdown(results: dict[str, Any]) -> str:
    rows = []
    for key, entry in results["runs"].items():
        eager = entry["times"]["eager"]["wall_median_s"]
        for name in RUNTIMES:
            if name in entry["skipped"]:
                rows.append([entry["model"], entry["window"], name, "skipped", "", "", "", entry["skipped"][name]])
                continue
            t = entry["times"][name]["wall_median_s"]
            rows.append([entry["model"], entry["window"], name, t, round(eager / t, 2),
                         entry["max_abs_diff"].get(name, 0.0), entry["argmax_agreement"].get(name, 1.0),
                         f"max abs logit {entry['max_abs_logit']}" if name == "eager" else ""])
    s = results["settings"]
    text = (f"One sliding window per call, batch {s['batch']}, {s['threads']} thread(s) for every runtime, random "
            f"weights; warm-up {s['warmup']}, then {s['repeats']} repeats with the runtimes alternating; medians.\n\n")
    text += markdown_table(["model", "window", "runtime", "s / call (median)", "speed-up vs eager",
                            "max abs logit diff", "argmax agreement", "note"], rows)
    return text + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line entry point; returns the results payload."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cpu_runtimes", description=__doc__.split("\n")[1])
    add_common_args(parser, warmup=1, repeats=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[160, 96],
                        help="[OPTIONAL] window edges (160: the bundle's inference window; 96)")
    parser.add_argument("--models", nargs="+", default=["dast", "dynunet"], choices=["dast", "dynunet"])
    parser.add_argument("--batch", type=int, default=1, help="[OPTIONAL] windows per call (1)")
    args = parser.parse_args(argv)
    if args.device != "cpu":
        raise SystemExit("this benchmark compares CPU runtimes: --device cpu only.")
    device = resolve_device("cpu", args.threads)
    threads = torch.get_num_threads()
    env = environment(device, amp=False)
    import onnxruntime

    env["onnxruntime"] = onnxruntime.__version__
    try:
        import openvino

        env["openvino"] = openvino.__version__
    except ImportError:
        env["openvino"] = None
    arch, arch_info = dast_arch()
    settings = {"sizes": args.sizes, "models": args.models, "batch": args.batch, "threads": threads,
                "warmup": args.warmup, "repeats": args.repeats, "dast_architecture": arch_info}
    runs: dict[str, Any] = {}
    for size in args.sizes:
        window = [size] * 3
        for model in args.models:
            torch.manual_seed(0)
            net = build_model(model, size, arch).eval()
            with tempfile.TemporaryDirectory() as tmp:
                calls, skipped, _ = runtime_callables(net, window, args.batch, threads, Path(tmp))
                ref = calls["eager"]()
                outs = {name: fn() for name, fn in calls.items() if name != "eager"}
                diffs = {name: round(float((out - ref).abs().max()), 6) for name, out in outs.items()}
                agree = {name: round(float((out.argmax(1) == ref.argmax(1)).float().mean()), 6)
                         for name, out in outs.items()}
                for _ in range(max(0, args.warmup - 1)):
                    for fn in calls.values():
                        fn()
                samples: dict[str, list[tuple[float, float]]] = {name: [] for name in calls}
                for _ in range(args.repeats):
                    for name, fn in calls.items():
                        samples[name].append(time_call(fn, device))
            times = {name: summarise_times(s) for name, s in samples.items()}
            runs[f"{model}_{size}"] = {"model": model, "window": window, "times": times, "skipped": skipped,
                                      "max_abs_diff": diffs, "max_abs_logit": round(float(ref.abs().max()), 4),
                                      "argmax_agreement": agree}
            line = ", ".join(f"{n} {t['wall_median_s']:.2f} s" for n, t in times.items())
            print(f"[cpu_runtimes] {model} {size}^3: {line}; max abs diff {diffs}", flush=True)
    payload = {"environment": env, "settings": settings, "runs": runs}
    json_path, md_path = write_results(args.out_dir, "cpu_runtimes", device, payload, _markdown(payload))
    print(f"wrote {json_path} and {md_path}")
    return payload


if __name__ == "__main__":
    main()
