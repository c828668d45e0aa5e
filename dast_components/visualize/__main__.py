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
"""Command line of :mod:`dast_components.visualize`.

::

    python -m dast_components.visualize arch --arch_file models/arch_code.json --out arch.png [--patch_size 160]
    python -m dast_components.visualize attention --bundle_root bundles/dast_kits19_seg --image CT.nii.gz --out DIR
    python -m dast_components.visualize curves --runs DAST=a/metrics.csv DiNTS=b/metrics.csv --out curves.png
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from dast_components.visualize.arch import draw_architecture
from dast_components.visualize.attention import write_attention_maps
from dast_components.visualize.curves import draw_curves

__all__ = ["cli", "main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dast_components.visualize",
        description="Pictures of a DAST search: architecture diagram, attention maps, training curves (needs "
        "matplotlib: pip install 'dast_components[plot]').",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    arch = sub.add_parser("arch", help="draw a searched architecture (grid, active paths coloured by op)")
    arch.add_argument("--arch_file", required=True, help="[REQUIRED] models/arch_code.json (or a MONAI DiNTS .pt)")
    arch.add_argument("--out", required=True, help="[REQUIRED] PNG file; replaced if it exists")
    arch.add_argument("--patch_size", type=int, nargs="+", default=None,
                      help="[OPTIONAL] training patch (one int = cube, or H W D); adds the estimated training memory "
                      "to the title (builds the network once to count parameters)")
    arch.add_argument("--batch_size", type=int, default=2, help="[OPTIONAL] batch of the memory estimate (2)")
    arch.add_argument("--dpi", type=int, default=120, help="[OPTIONAL] PNG resolution (120)")

    att = sub.add_parser("attention", help="segmentation-attention maps of a trained KiTS19 bundle over one volume")
    att.add_argument("--bundle_root", required=True, help="[REQUIRED] the bundle folder (bundles/dast_kits19_seg)")
    att.add_argument("--image", required=True, help="[REQUIRED] CT volume (NIfTI)")
    att.add_argument("--out", required=True, help="[REQUIRED] output folder; same-named files in it are replaced")
    att.add_argument("--weights", default=None, help="[OPTIONAL] weight file (BUNDLE/models/model.pt)")
    att.add_argument("--arch_file", default=None, help="[OPTIONAL] architecture (BUNDLE/models/arch_code.json)")
    att.add_argument("--channel_mul", type=float, default=None,
                     help="[OPTIONAL] channel multiplier used in training, if it overrode the architecture's")
    att.add_argument("--device", default="cpu", help="[OPTIONAL] torch device of the forward pass (cpu)")
    att.add_argument("--intensity", type=float, nargs=2, metavar=("LOWER", "UPPER"), default=None,
                     help="[OPTIONAL] HU window scaled to [0, 1]; default: the training statistics found in the "
                     "bundle, else the volume's min/max (less faithful: the log says so)")
    att.add_argument("--roi_size", nargs="+", default=["auto"],
                     help="[OPTIONAL] sliding-window size (one int = cube, or H W D); the attention is computed on the "
                     "window centred on the predicted mask. 'auto' (default): the training patch recorded with the "
                     "weights when the volume is larger; 'none': the whole volume in one pass (memory grows with it)")
    att.add_argument("--dpi", type=int, default=100, help="[OPTIONAL] PNG resolution (100)")

    curves = sub.add_parser("curves", help="loss and validation Dice against iteration of one or more runs")
    curves.add_argument("--runs", required=True, nargs="+", metavar="NAME=PATH",
                        help="[REQUIRED] metrics CSV files (with an 'iteration' column) or TensorBoard folders")
    curves.add_argument("--out", required=True, help="[REQUIRED] PNG file; replaced if it exists")
    curves.add_argument("--title", default=None, help="[OPTIONAL] figure title (the run names)")
    curves.add_argument("--dpi", type=int, default=120, help="[OPTIONAL] PNG resolution (120)")
    return parser


def _size(values: list[int] | None) -> Any:
    if values is None or len(values) == 1:
        return None if values is None else values[0]
    return values


def _roi(values: list[str]) -> Any:
    if len(values) == 1 and values[0].lower() in ("auto", "none"):
        return None if values[0].lower() == "none" else "auto"
    try:
        return _size([int(v) for v in values])
    except ValueError:
        raise ValueError(f"--roi_size takes 'auto', 'none' or 1 or 3 ints, got {values}.") from None


def main(argv: Sequence[str] | None = None) -> Any:
    """Parse ``argv`` and run the sub-command; returns what the underlying function returns."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "arch":
        counts = draw_architecture(args.arch_file, args.out, patch_size=_size(args.patch_size),
                                   batch_size=args.batch_size, dpi=args.dpi)
        print(f"wrote {args.out}: " + ", ".join(f"{op} {n}" for op, n in counts.items()))
        return counts
    if args.command == "attention":
        intensity = None if args.intensity is None else {"lower": args.intensity[0], "upper": args.intensity[1]}
        result = write_attention_maps(
            args.bundle_root, args.image, args.out, weights=args.weights, arch_file=args.arch_file,
            device=args.device, intensity=intensity, roi_size=_roi(args.roi_size), channel_mul=args.channel_mul,
            dpi=args.dpi,
        )
        print(f"wrote {len(result['ops'])} attention maps (NIfTI + PNG) to {args.out}")
        return result
    drawn = draw_curves(args.runs, args.out, title=args.title, dpi=args.dpi)
    print(f"wrote {args.out}: " + "; ".join(f"{name}: {', '.join(cols) or 'nothing'}" for name, cols in drawn.items()))
    return drawn


def cli(argv: Sequence[str] | None = None) -> int:
    """Console script ``dast-visualize``: :func:`main`, exit status 0; a bad input exits 1 with its message."""
    try:
        main(argv)
    except (ValueError, FileNotFoundError, ImportError) as error:  # bad input: the message, not a traceback
        raise SystemExit(f"error: {error}") from None
    return 0


if __name__ == "__main__":
    sys.exit(cli())
