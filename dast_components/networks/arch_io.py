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
Architecture files: the decoded architecture of a search, as human-readable JSON.

``models/arch_code.json`` is the contract between the search bundle and the retraining bundle. JSON (rather than a
``.pt`` file) keeps it diffable, loadable without unpickling, and out of MONAI Label's ``models/*.pt`` weight scan.
:func:`load_arch` also reads MONAI DiNTS ``.pt`` files (the DiNTS tutorial's and Auto3DSeg's ``arch_code`` keys).
See docs/design.md, "Architecture files".
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dast_components.errors import InputError, MissingFileError
from dast_components.networks.cells import resolve_ops
from dast_components.utils import atomic_write_text

__all__ = ["ArchCode", "save_arch", "load_arch", "check_topology", "ARCH_SCHEMA_VERSION"]

ARCH_SCHEMA_VERSION = 1


def _int_matrix(x: Any) -> list[list[int]]:
    arr = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x)
    return [[int(v) for v in row] for row in arr.reshape(arr.shape[0], -1)]


@dataclass
class ArchCode:
    """
    A decoded DAST/DiNTS architecture.

    Attributes:
        ops: op pool in order; ``arch_code_c`` indexes it.
        node_a: ``(num_blocks + 1, num_depths)`` node activation (row 0 = stem inputs).
        arch_code_a: ``(num_blocks, 3 * num_depths - 2)`` path activation.
        arch_code_c: ``(num_blocks, 3 * num_depths - 2)`` op index of each path.
        num_blocks, num_depths: search grid.
        channel_mul: channel multiplier of the searched network (32 * 2**d * channel_mul channels at depth d).
        use_downsample: whether the stems halve the input first.
        grid, num_heads, num_layers, mlp_ratio: transformer op settings (tokens = grid**3).
        memory_lambda: memory factor of the search, if any.
        provenance: free-form record (search config hash, iteration, validation Dice, ...).
    """

    ops: tuple[str, ...]
    node_a: list[list[int]]
    arch_code_a: list[list[int]]
    arch_code_c: list[list[int]]
    num_blocks: int
    num_depths: int
    channel_mul: float = 1.0
    use_downsample: bool = True
    grid: int = 8
    num_heads: int = 8
    num_layers: int = 1
    mlp_ratio: float = 2.0
    memory_lambda: float | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.ops = resolve_ops(self.ops)
        self.node_a = _int_matrix(self.node_a)
        self.arch_code_a = _int_matrix(self.arch_code_a)
        self.arch_code_c = _int_matrix(self.arch_code_c)
        paths = 3 * self.num_depths - 2
        for key, rows, cols in (
            ("node_a", self.num_blocks + 1, self.num_depths),
            ("arch_code_a", self.num_blocks, paths),
            ("arch_code_c", self.num_blocks, paths),
        ):
            mat = getattr(self, key)
            if len(mat) != rows or any(len(r) != cols for r in mat):
                shape = (len(mat), len(mat[0]) if mat else 0)
                raise InputError(f"{key} has shape {shape}, expected ({rows}, {cols}) for {self.num_blocks} blocks "
                                 f"x {self.num_depths} depths.")
        bad = sorted({c for row in self.arch_code_c for c in row if not 0 <= c < len(self.ops)})
        if bad:
            raise InputError(f"arch_code_c holds op indices {bad}, but the op pool {list(self.ops)} has "
                             f"{len(self.ops)} ops: the code was made for another op pool.")

    @property
    def paths(self) -> dict[str, str]:
        """Readable map of the active paths, e.g. ``{"b03_p07": "transformer"}``."""
        return {
            f"b{b:02d}_p{p:02d}": self.ops[self.arch_code_c[b][p]]
            for b in range(self.num_blocks)
            for p in range(3 * self.num_depths - 2)
            if self.arch_code_a[b][p]
        }

    def op_counts(self) -> dict[str, int]:
        """Number of active paths using each op."""
        counts = dict.fromkeys(self.ops, 0)
        for name in self.paths.values():
            counts[name] += 1
        return counts

    def transformer_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the transformer op memory model."""
        return {
            "grid": self.grid, "num_heads": self.num_heads, "num_layers": self.num_layers, "mlp_ratio": self.mlp_ratio
        }

    def monai_arch_code(self) -> list[np.ndarray]:
        """``[arch_code_a, arch_code_c]`` as numpy arrays, the form MONAI's ``TopologyInstance`` takes."""
        return [np.asarray(self.arch_code_a, dtype=np.float32), np.asarray(self.arch_code_c, dtype=np.int64)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": ARCH_SCHEMA_VERSION,
            "ops": list(self.ops),
            "num_blocks": self.num_blocks,
            "num_depths": self.num_depths,
            "channel_mul": self.channel_mul,
            "use_downsample": self.use_downsample,
            "transformer": {
                "grid": self.grid,
                "num_heads": self.num_heads,
                "num_layers": self.num_layers,
                "mlp_ratio": self.mlp_ratio,
            },
            "lambda": self.memory_lambda,
            "op_counts": self.op_counts(),
            "paths": self.paths,
            "node_a": self.node_a,
            "arch_code_a": self.arch_code_a,
            "arch_code_c": self.arch_code_c,
            "provenance": self.provenance,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> ArchCode:
        missing = [k for k in ("ops", "node_a", "arch_code_a", "arch_code_c") if k not in data]
        if missing:
            raise InputError(f"architecture {source} lacks key(s) {missing}.")
        tr = data.get("transformer", {})
        node_a = np.asarray(data["node_a"])
        try:
            return cls(
                ops=tuple(data["ops"]),
                node_a=node_a,
                arch_code_a=data["arch_code_a"],
                arch_code_c=data["arch_code_c"],
                num_blocks=int(data.get("num_blocks", node_a.shape[0] - 1)),
                num_depths=int(data.get("num_depths", node_a.shape[1])),
                channel_mul=float(data.get("channel_mul", 1.0)),
                use_downsample=bool(data.get("use_downsample", True)),
                grid=int(tr.get("grid", 8)),
                num_heads=int(tr.get("num_heads", 8)),
                num_layers=int(tr.get("num_layers", 1)),
                mlp_ratio=float(tr.get("mlp_ratio", 2.0)),
                memory_lambda=data.get("lambda"),
                provenance=dict(data.get("provenance", {})),
            )
        except ValueError as err:
            raise InputError(f"invalid architecture file {source}: {err}") from None


def check_topology(arch: ArchCode) -> None:
    """
    Raise ``ValueError`` unless the topology is consistent: every active path reads an active node, and each row
    ``node_a[b + 1]`` is the OR of the outputs of the active paths of block ``b``.
    """
    paths = 3 * arch.num_depths - 2
    code2in = [(i + 1) // 3 - 1 + (i + 1) % 3 for i in range(paths)]
    code2out = ([d for d in range(arch.num_depths) for _ in range(3)])[1:-1]
    for b in range(arch.num_blocks):
        out = [0] * arch.num_depths
        for p in range(paths):
            if arch.arch_code_a[b][p]:
                if not arch.node_a[b][code2in[p]]:
                    raise InputError(f"block {b} path {p} reads inactive node (block {b}, depth {code2in[p]}).")
                out[code2out[p]] = 1
        if out != list(arch.node_a[b + 1]):
            raise InputError(f"node_a row {b + 1} is {arch.node_a[b + 1]} but block {b}'s active paths give {out}.")
    if not any(arch.node_a[-1]):
        raise InputError("the architecture has no active output node.")


def save_arch(path: str | os.PathLike, arch: Any, **provenance: Any) -> Path:
    """
    Write a decoded architecture as JSON, atomically.

    Args:
        path: output file (``.json``).
        arch: an :class:`ArchCode`, or a search space (anything with ``decode_arch()``) whose current decode is saved.
        provenance: recorded under ``provenance`` (e.g. ``config_hash``, ``iteration``, ``val_dice``); ``lambda``
            (or ``memory_lambda``) is stored at the top level.

    Returns:
        the written path.
    """
    if not isinstance(arch, ArchCode):
        if not hasattr(arch, "decode_arch"):
            raise TypeError(f"save_arch needs an ArchCode or a search space with decode_arch(), got {type(arch)}.")
        arch = arch.decode_arch()
    lam = provenance.pop("lambda", provenance.pop("memory_lambda", None))
    if lam is not None:
        arch.memory_lambda = float(lam)
    arch.provenance.update({k: _jsonable(v) for k, v in provenance.items()})
    return atomic_write_text(path, json.dumps(arch.to_dict(), indent=4) + "\n")


def _jsonable(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v


def _load_pt(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001  DiNTS files hold numpy arrays: allow exactly numpy's array reconstruction
        safe: list[Any] = [np.ndarray, np.dtype]
        # the array reconstructor, under both of its names: numpy 2 pickles it as numpy._core.multiarray, numpy 1.x
        # as numpy.core.multiarray (numpy 1.26 has a numpy._core stub without multiarray), and a file may come from
        # either, so the one this numpy has is allowed under each name
        reconstruct = None
        for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
            try:
                reconstruct = importlib.import_module(module)._reconstruct
                break
            except (ImportError, AttributeError):
                continue
        if reconstruct is not None:
            safe += [(reconstruct, f"{m}._reconstruct") for m in ("numpy._core.multiarray", "numpy.core.multiarray")]
        safe.extend(type(np.dtype(t)) for t in ("int64", "int32", "float64", "float32", "bool"))
        try:
            with torch.serialization.safe_globals(safe):
                return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001
            raise InputError(f"cannot read architecture file {path} with weights_only=True: {err}") from None


def load_arch(
    path: str | os.PathLike,
    ops: str | Sequence[str] | None = None,
    grid: int | None = None,
) -> ArchCode:
    """
    Read an architecture file.

    Args:
        path: a DAST ``.json`` file, or a MONAI DiNTS ``.pt`` file (keys ``node_a``, ``arch_code_a``, ``arch_code_c``,
            as written by the DiNTS tutorial and Auto3DSeg). DiNTS files carry no op names: their pool is ``ops``
            (default ``"dints"``).
        ops: if given, the op pool the caller expects; a file made for another pool is rejected.
        grid: if given, the transformer token grid the caller expects; a file with another grid is rejected.

    Raises:
        FileNotFoundError: no such file (a :class:`~dast_components.errors.MissingFileError`).
        ValueError: unreadable file, one made for another op pool or grid, or an inconsistent topology
            (:func:`check_topology`); an :class:`~dast_components.errors.InputError`.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"architecture file {path} does not exist; run the dast_search bundle to make one.")
    expected = resolve_ops(ops) if ops is not None else None
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise InputError(f"architecture file {path} is not valid JSON: {err}") from None
        arch = ArchCode.from_dict(data, source=str(path))
    else:
        data = _load_pt(path)
        if not isinstance(data, dict) or "arch_code_a" not in data:
            raise InputError(f"{path} is not a DiNTS architecture file (no 'arch_code_a' key).")
        pool = expected or resolve_ops("dints")
        code_c = np.asarray(data["arch_code_c"])
        if code_c.ndim == 3:  # one-hot (blocks, paths, ops)
            if code_c.shape[-1] != len(pool):
                raise InputError(f"{path} codes {code_c.shape[-1]} ops per path, but the requested op pool "
                                 f"{list(pool)} has {len(pool)}.")
            code_c = code_c.argmax(-1)
        if code_c.size and int(code_c.max()) >= len(pool):
            raise InputError(f"{path} uses op index {int(code_c.max())}, outside the requested op pool {list(pool)} "
                             f"of {len(pool)} ops.")
        node_a = np.asarray(data["node_a"])
        arch = ArchCode.from_dict(
            {
                "ops": pool,
                "node_a": node_a,
                "arch_code_a": data["arch_code_a"],
                "arch_code_c": code_c,
                "num_blocks": node_a.shape[0] - 1,
                "num_depths": node_a.shape[1],
                "provenance": {"source": str(path), "iteration": _jsonable(data.get("iter_num"))},
            },
            source=str(path),
        )
    if expected is not None and arch.ops != expected:
        raise InputError(f"architecture file {path} was searched with op pool {list(arch.ops)}, but the config "
                         f"asks for {list(expected)}.")
    if grid is not None and "transformer" in arch.ops and int(grid) != arch.grid:
        raise InputError(f"architecture file {path} was searched with transformer grid {arch.grid}, but the "
                         f"config asks for grid {grid}.")
    try:
        check_topology(arch)
    except InputError as err:
        raise InputError(f"architecture file {path} is inconsistent: {err} Export it again with the dast_search "
                         "bundle (or repair node_a / arch_code_a).") from None
    return arch
