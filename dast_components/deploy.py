"""Fast CPU inference: the bundle's network exported to ONNX and run with ONNX Runtime or OpenVINO.

Used by ``bundles/dast_kits19_seg/configs/inference_onnx.json``. The network (one model or a
:class:`~dast_components.inference.FoldEnsemble`) is exported once with PyTorch's TorchScript-based exporter
(``torch.onnx.export(..., dynamo=False)``; the dynamo exporter needs ``onnxscript``), written atomically into a
cache directory under a name keyed by a hash of the weights and window size (new weights, a new window or a new
architecture give a new file), and checked once per runtime against eager PyTorch on a random input (max abs
difference of the logits <= ``tolerance`` times the largest logit when that exceeds 1, else an error; the result is
kept in a JSON beside the file, so later runs skip the check). :class:`OnnxPredictor` (ONNX Runtime) or
:class:`OpenVinoPredictor` (OpenVINO, float32) then runs it inside MONAI's sliding window. Pre- and post-processing
are those of ``inference.json``; only the network call changes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dast_components.errors import InputError
from dast_components.utils import atomic_path, atomic_write_text

__all__ = ["DEFAULT_TOLERANCE", "RUNTIMES", "OnnxPredictor", "OpenVinoPredictor", "export_onnx", "onnx_network",
           "weights_key"]

logger = logging.getLogger(__name__)

RUNTIMES = ("onnxruntime", "openvino")
"""Runtimes :func:`onnx_network` can run the exported file with."""

DEFAULT_TOLERANCE = 1e-3
"""Largest accepted absolute difference between the runtime's and eager PyTorch's logits on the check input (relative
to the largest logit when that exceeds 1)."""


def weights_key(network: nn.Module, window: Sequence[int]) -> str:
    """A short hash of ``network``'s parameters and buffers, its class and the window size.

    Args:
        network: the eager network.
        window: the spatial input size (D, H, W) the export is made for.

    Returns:
        16 hex digits; equal for equal weights, architecture and window.
    """
    h = hashlib.sha256()
    h.update(type(network).__qualname__.encode())
    h.update(repr(tuple(int(w) for w in window)).encode())
    for name, value in network.state_dict().items():
        h.update(name.encode())
        h.update(repr(tuple(value.shape)).encode())
        h.update(value.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def export_onnx(network: nn.Module, path: str | os.PathLike, window: Sequence[int], in_channels: int = 1) -> Path:
    """Export ``network`` (eval mode, CPU) to ONNX at ``path`` atomically (temporary file, then rename).

    The batch dimension is dynamic; the spatial size is fixed to ``window``.

    Args:
        network: the eager network, input (B, in_channels, D, H, W) -> logits (B, C, D, H, W).
        path: where to write the ``.onnx`` file (its folder is created).
        window: (D, H, W) of the sliding window.
        in_channels: input channels.

    Returns:
        the written path.
    """
    path = Path(path)
    example = torch.zeros(1, in_channels, *[int(w) for w in window])
    with atomic_path(path) as tmp, torch.no_grad():
        torch.onnx.export(
            network.cpu().eval(),
            (example,),
            str(tmp),
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    return path


class _RuntimePredictor(nn.Module):
    """An ONNX file run by another runtime behind the interface of an ``nn.Module``: ``forward`` takes
    (B, C_in, D, H, W) on any device and returns float32 logits (B, C, D, H, W) on the same device, so MONAI's
    ``SlidingWindowInferer`` and ``SupervisedEvaluator`` use it as they use the eager network."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"no ONNX file at {self.path}.")
        #: the runtime's threads: ``threads``, else ``OMP_NUM_THREADS`` when set, else 0 (the runtime's choice)
        self.threads = threads if threads is not None else int(os.environ.get("OMP_NUM_THREADS", "0") or 0)

    def run(self, arr: np.ndarray) -> np.ndarray:
        """The logits of a contiguous float32 array (B, C_in, D, H, W)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, D, H, W) -> float32 logits (B, C, D, H, W) on ``x``'s device."""
        arr = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        return torch.from_numpy(np.asarray(self.run(arr), dtype=np.float32)).to(x.device)


class OnnxPredictor(_RuntimePredictor):
    """Runs an ONNX file with ONNX Runtime (CPUExecutionProvider) behind the interface of an ``nn.Module``."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise InputError(
                "inference_onnx.json needs onnxruntime: pip install 'onnxruntime==1.32.0' (or pip install .[onnx])."
            ) from e
        super().__init__(path, threads)
        options = ort.SessionOptions()
        if self.threads > 0:
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def run(self, arr: np.ndarray) -> np.ndarray:
        """The logits of ``arr`` by ONNX Runtime."""
        (out,) = self.session.run(None, {self.input_name: arr})
        return out


class OpenVinoPredictor(_RuntimePredictor):
    """Runs an ONNX file with OpenVINO on the CPU behind the interface of an ``nn.Module`` (as :class:`OnnxPredictor`).

    The model is compiled in float32 (``INFERENCE_PRECISION_HINT`` ``f32``: no bf16/fp16 shortcuts). Even so its
    logits differ from eager PyTorch by more than ONNX Runtime's on the shipped architecture (see the bundle docs);
    ``onnx_network`` checks them against its tolerance.
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        try:
            import openvino as ov
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise InputError("onnx_runtime 'openvino' needs OpenVINO: pip install 'openvino==2026.4.1'.") from e
        super().__init__(path, threads)
        config: dict[str, object] = {"INFERENCE_PRECISION_HINT": "f32"}
        if self.threads > 0:
            config["INFERENCE_NUM_THREADS"] = self.threads
        self.compiled = ov.Core().compile_model(str(self.path), "CPU", config)
        self.output = self.compiled.output(0)

    def run(self, arr: np.ndarray) -> np.ndarray:
        """The logits of ``arr`` by OpenVINO."""
        return self.compiled([arr])[self.output]


def onnx_network(
    network: nn.Module,
    window: Sequence[int],
    cache_dir: str | os.PathLike,
    in_channels: int = 1,
    tolerance: float = DEFAULT_TOLERANCE,
    threads: int | None = None,
    seed: int = 0,
    runtime: str = "onnxruntime",
) -> OnnxPredictor | OpenVinoPredictor:
    """The ONNX Runtime or OpenVINO predictor for ``network``, exporting it on first use and checking it once
    against eager PyTorch.

    Args:
        network: the loaded eager network (e.g. from ``dast_components.inference.load_network``).
        window: (D, H, W) of the sliding window (the export's fixed spatial size).
        cache_dir: folder for ``<weights_key>.onnx`` (reused while weights, architecture and window are the same).
        in_channels: input channels.
        tolerance: largest accepted max abs difference of the logits on a random (1, in_channels, *window) input,
            relative to the largest absolute eager logit when that exceeds 1 (float32 kernels of another runtime
            sum in another order: their error grows with the logits' scale).
        threads: the runtime's threads (default: ``OMP_NUM_THREADS`` if set, else the runtime's choice).
        seed: seed of the check input.
        runtime: ``"onnxruntime"`` (:class:`OnnxPredictor`) or ``"openvino"`` (:class:`OpenVinoPredictor`).

    Raises:
        InputError: an unknown ``runtime``, ``cache_dir`` is not a writable folder, or the runtime's output differs
            from eager by more than ``tolerance`` (the file is removed so the next run re-exports).

    Returns:
        the predictor (an ``nn.Module``) for the sliding window.
    """
    if runtime not in RUNTIMES:
        raise InputError(f"onnx_runtime must be one of {list(RUNTIMES)}, got {runtime!r}.")
    cache = Path(cache_dir)
    if cache.exists() and not cache.is_dir():
        raise InputError(f"onnx_cache_dir {cache} exists and is not a folder.")
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"onnx_cache_dir {cache} cannot be created: {e}") from e
    network = network.cpu().eval()
    path = cache / f"dast_{weights_key(network, window)}.onnx"
    record_path = path.with_suffix(".json")
    if not path.is_file():
        logger.info("exporting the network to %s (window %s)", path, list(window))
        export_onnx(network, path, window, in_channels)
        record_path.unlink(missing_ok=True)
    predictor = (OnnxPredictor if runtime == "onnxruntime" else OpenVinoPredictor)(path, threads)
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    checked = record.get(runtime)
    if checked is not None and checked.get("tolerance") == tolerance and checked.get("seed") == seed:
        logger.info("%s: %s was checked against eager PyTorch when cached (max abs logit difference %.3g)",
                    runtime, path.name, checked["max_abs_diff"])
        return predictor
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, in_channels, *[int(w) for w in window], generator=g)
    with torch.no_grad():
        ref = network(x).float()
    diff = float((predictor(x) - ref).abs().max())
    scale = max(1.0, float(ref.abs().max()))
    if not diff <= tolerance * scale:
        path.unlink(missing_ok=True)
        record_path.unlink(missing_ok=True)
        raise InputError(
            f"{runtime} output of {path} differs from eager PyTorch by {diff:.3g} (max abs, logits) > tolerance "
            f"{tolerance:g} x {scale:.3g} (the largest logit, at least 1); use inference.json instead."
        )
    record[runtime] = {"max_abs_diff": diff, "max_abs_logit": float(ref.abs().max()), "tolerance": tolerance,
                       "seed": seed}
    atomic_write_text(record_path, json.dumps(record, indent=2) + "\n")
    logger.info("%s matches eager PyTorch within %.3g (max abs logit difference; tolerance %g x %.3g)", runtime,
                diff, tolerance, scale)
    return predictor
