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
"""Compare a bundle's exported TorchScript and ONNX files with its eager network on one random input.

Run in the bundle's environment (onnxruntime on the path) from the bundle folder::

    python compare_exports.py --config_file "['configs/inference.json', ...]" --shape 1,1,32,32,32 \
        [--override KEY=PYTHON_LITERAL ...]

Reads ``models/model.pt`` (plain state dict), ``models/model.ts``, ``models/model.onnx``; prints one JSON line with
the largest absolute differences and exits non-zero if either exceeds ``--atol``.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config_file", required=True)
    parser.add_argument("--shape", required=True)
    parser.add_argument("--override", action="append", default=[])
    parser.add_argument("--atol", type=float, default=1e-3)
    args = parser.parse_args(argv)
    sys.path.insert(0, os.getcwd())  # the bundle root: its dast_components copy

    import numpy as np
    import onnxruntime
    import torch
    from monai.bundle import ConfigParser

    config = ConfigParser()
    config.read_config(ast.literal_eval(args.config_file))
    config.read_meta("configs/metadata.json")
    config["bundle_root"] = os.getcwd()
    for item in args.override:
        key, value = item.split("=", 1)
        config[key] = ast.literal_eval(value)
    net = config.get_parsed_content("network_def")
    net.load_state_dict(torch.load("models/model.pt", map_location="cpu", weights_only=True), strict=True)
    net.eval()
    shape = [int(s) for s in args.shape.split(",")]
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        eager = net(x)
        scripted = torch.jit.load("models/model.ts", map_location="cpu").eval()(x)
    session = onnxruntime.InferenceSession("models/model.onnx", providers=["CPUExecutionProvider"])
    onnx_out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    result = {
        "shape": list(eager.shape),
        "torchscript_max_abs_diff": float((scripted - eager).abs().max()),
        "onnx_max_abs_diff": float(np.abs(onnx_out - eager.numpy()).max()),
        "onnxruntime": onnxruntime.__version__,
    }
    print(json.dumps(result))
    ok = list(onnx_out.shape) == list(eager.shape) and max(result["torchscript_max_abs_diff"],
                                                             result["onnx_max_abs_diff"]) <= args.atol
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
