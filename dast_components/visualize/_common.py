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
"""Shared plotting helpers of :mod:`dast_components.visualize`: the optional matplotlib import and atomic PNG writes.

matplotlib is an optional dependency (``pip install dast_components[plot]``). It is imported only when a picture is
drawn, and figures are built as ``matplotlib.figure.Figure`` objects attached to the Agg canvas, so drawing never
switches the global pyplot backend of the caller (a notebook keeps its own) and works without a display.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dast_components.utils import atomic_path

__all__ = ["new_figure", "save_figure"]


def _matplotlib() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ImportError(
            "drawing pictures needs matplotlib, an optional dependency of dast_components: "
            "install it with `pip install 'dast_components[plot]'` (or `pip install matplotlib`)."
        ) from None
    return matplotlib


def new_figure(width: float, height: float, dpi: int = 120) -> Any:
    """A matplotlib ``Figure`` of ``width`` x ``height`` inches on an Agg canvas (no pyplot state), with constrained
    layout so that titles, legends and colour bars fit without a second ``bbox_inches="tight"`` render.

    Raises:
        ImportError: matplotlib is not installed (the message says how to install it).
    """
    _matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Any, path: str | os.PathLike) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically (temporary file in the same folder, then ``os.replace``).

    Args:
        fig: a figure from :func:`new_figure`.
        path: output file; its folder is created if missing.

    Returns:
        ``path`` as a ``Path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
