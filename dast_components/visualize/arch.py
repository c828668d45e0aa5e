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
"""Architecture diagram of a searched DAST/DiNTS network (paper Fig. 3).

The search grid is drawn as resolutions (rows, depth 0 = the finest at the top) x levels (columns: the stem outputs,
then one column per block). Nodes active in ``node_a`` are solid and inactive ones faded; each active path of
``arch_code_a`` is an arrow from its input node ``(block, arch_code2in[p])`` to its output node
``(block + 1, arch_code2out[p])``, coloured by the op chosen in ``arch_code_c``. The title gives the op pool, the
memory factor lambda of the search and, when a patch size is given, the estimated training memory
(:func:`dast_components.networks.estimate_memory`).

Command line::

    python -m dast_components.visualize arch --arch_file models/arch_code.json --out arch.png --patch_size 160
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from dast_components.networks.arch_io import ArchCode, load_arch
from dast_components.networks.costs import filter_nums
from dast_components.networks.memory import estimate_memory
from dast_components.visualize._common import new_figure, save_figure

__all__ = ["OP_COLORS", "draw_architecture", "path_endpoints"]

logger = logging.getLogger(__name__)

#: Fixed colour and line style per op name, so that pictures of different searches compare at a glance.
OP_COLORS: dict[str, tuple[str, str]] = {
    "skip_connect": ("#7f7f7f", "--"),
    "conv_3x3x3": ("#1f77b4", "-"),
    "conv_3x3x1": ("#2ca02c", "-"),
    "conv_3x1x3": ("#17becf", "-"),
    "conv_1x3x3": ("#9467bd", "-"),
    "transformer": ("#d62728", "-"),
}
_FALLBACK_COLORS = ("#ff7f0e", "#8c564b", "#e377c2", "#bcbd22")
_PATH_GID = "dast-path:"


def path_endpoints(num_depths: int) -> list[tuple[int, int]]:
    """Input and output depth of each path of a block, in MONAI's ``TopologyConstruction`` numbering.

    Args:
        num_depths: resolutions of the grid.

    Returns:
        ``[(arch_code2in[p], arch_code2out[p]) for p in range(3 * num_depths - 2)]``.
    """
    if num_depths < 1:
        raise ValueError(f"num_depths must be >= 1, got {num_depths}.")
    paths = 3 * num_depths - 2
    code2in = [(p + 1) // 3 - 1 + (p + 1) % 3 for p in range(paths)]
    code2out = [d for d in range(num_depths) for _ in range(3)][1:-1]
    return list(zip(code2in, code2out))


def _op_style(ops: Sequence[str]) -> dict[str, tuple[str, str]]:
    styles, spare = {}, iter(_FALLBACK_COLORS)
    for name in ops:
        styles[name] = OP_COLORS.get(name) or (next(spare, "#000000"), "-")
    return styles


def _patch_triple(patch_size: int | Sequence[int]) -> tuple[int, int, int]:
    sizes = (int(patch_size),) * 3 if isinstance(patch_size, int) else tuple(int(s) for s in patch_size)
    if len(sizes) == 1:
        sizes = sizes * 3
    if len(sizes) != 3 or min(sizes) < 1:
        raise ValueError(f"patch_size must be a positive int or 3 positive ints (H, W, D), got {patch_size}.")
    return sizes  # type: ignore[return-value]


def _title(arch: ArchCode, patch: tuple[int, int, int] | None, batch_size: int) -> str:
    name = "DAST" if "transformer" in arch.ops else "DiNTS"
    lam = "n/a" if arch.memory_lambda is None else f"{arch.memory_lambda:g}"
    grid = f"{arch.num_blocks} blocks x {arch.num_depths} depths"
    line1 = f"{name} architecture: {grid}, channel_mul {arch.channel_mul:g}"
    line2 = f"op pool [{', '.join(arch.ops)}]\nmemory factor lambda = {lam}"
    if patch is not None:
        side = f"{patch[0]}^3" if len(set(patch)) == 1 else "x".join(str(s) for s in patch)
        try:
            gib = estimate_memory(arch, patch, batch_size=batch_size) / 2**30
            line2 += f"   est. training memory {gib:.2f} GiB (patch {side}, batch {batch_size})"
        except ValueError as err:  # e.g. a patch the memory model cannot size
            logger.warning("no memory estimate for patch %s: %s", patch, err)
            line2 += f"   est. memory n/a at patch {side}"
    return f"{line1}\n{line2}"


def draw_architecture(
    arch: ArchCode | str | os.PathLike,
    out_path: str | os.PathLike,
    patch_size: int | Sequence[int] | None = None,
    batch_size: int = 2,
    dpi: int = 120,
) -> dict[str, int]:
    """Draw the search grid with the active nodes and paths of ``arch``, paths coloured by op, and write a PNG.

    Args:
        arch: an :class:`~dast_components.networks.ArchCode` or an architecture file (``models/arch_code.json`` or a
            MONAI DiNTS ``.pt``).
        out_path: PNG file to write (atomically; the folder is created).
        patch_size: training patch (an int is a cube) at which the title states the estimated training memory;
            ``None`` (default) leaves the estimate out.
        batch_size: batch size of that estimate. Defaults to 2.
        dpi: resolution of the PNG. Defaults to 120.

    Returns:
        the number of path arrows drawn per op name (every op of the pool is a key), counted from the arrows added
        to the figure; equal to ``arch.op_counts()`` for a valid architecture.

    Example::

        counts = draw_architecture("bundles/dast_kits19_seg/models/arch_code.json", "arch.png", patch_size=160)
    """
    if not isinstance(arch, ArchCode):
        arch = load_arch(arch)
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    patch = None if patch_size is None else _patch_triple(patch_size)
    from matplotlib.lines import Line2D
    from matplotlib.patches import FancyArrowPatch

    nb, nd = arch.num_blocks, arch.num_depths
    fig = new_figure(2.2 + 0.85 * (nb + 1), 1.9 + 1.05 * nd, dpi=dpi)
    ax = fig.add_subplot(1, 1, 1)
    styles = _op_style(arch.ops)
    ends = path_endpoints(nd)

    # paths first (below the nodes); each arrow carries its op name in its gid so the counts come from the figure
    for b in range(nb):
        for p, (d_in, d_out) in enumerate(ends):
            if not arch.arch_code_a[b][p]:
                continue
            op = arch.ops[arch.arch_code_c[b][p]]
            color, style = styles[op]
            arrow = FancyArrowPatch(
                (b, d_in), (b + 1, d_out), arrowstyle="-|>", mutation_scale=11, color=color, linestyle=style,
                linewidth=2.6 if op == "transformer" else 1.8, shrinkA=9, shrinkB=9, zorder=2,
            )
            arrow.set_gid(f"{_PATH_GID}{op}:b{b:02d}_p{p:02d}")
            ax.add_patch(arrow)

    for level, row in enumerate(arch.node_a):
        for depth, active in enumerate(row):
            ax.scatter(
                [level], [depth], s=140, zorder=3, edgecolors="black" if active else "#bbbbbb", linewidths=1.0,
                c="white" if active else "#eeeeee", alpha=1.0 if active else 0.5,
            )

    channels = filter_nums(arch.channel_mul, nd)
    first = int(arch.use_downsample)
    ax.set_yticks(range(nd))
    ax.set_yticklabels([f"depth {d}\n1/{2 ** (d + first)} res, {channels[d]} ch" for d in range(nd)], fontsize=8)
    ax.set_xticks(range(nb + 1))
    ax.set_xticklabels(["stem"] + [str(b) for b in range(1, nb + 1)], fontsize=8)
    ax.set_xlabel("level (output of block)")
    ax.set_xlim(-0.5, nb + 0.5)
    ax.set_ylim(nd - 0.5, -0.5)  # depth 0 (finest) at the top
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)

    counts = dict.fromkeys(arch.ops, 0)
    for patch_artist in ax.patches:
        gid = patch_artist.get_gid() or ""
        if gid.startswith(_PATH_GID):
            counts[gid[len(_PATH_GID):].split(":")[0]] += 1

    handles = [
        Line2D([], [], color=styles[op][0], linestyle=styles[op][1], linewidth=2.2, label=f"{op} ({counts[op]})")
        for op in arch.ops
    ]
    handles.append(Line2D([], [], marker="o", linestyle="", markerfacecolor="white", markeredgecolor="black",
                          markersize=8, label="active node"))
    handles.append(Line2D([], [], marker="o", linestyle="", markerfacecolor="#eeeeee", markeredgecolor="#bbbbbb",
                          markersize=8, alpha=0.5, label="inactive node"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False,
              title="op (active paths)", title_fontsize=8)
    # a figure title spans the legend too, so small grids do not cut it off
    ax.figure.suptitle(_title(arch, patch, int(batch_size)), fontsize=9, x=0.01, ha="left")
    path = save_figure(fig, out_path)
    logger.info("wrote architecture diagram %s (%s)", path, ", ".join(f"{k}: {v}" for k, v in counts.items()))
    return counts
