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
Helpers shared by the benchmark scripts: device and AMP set-up, timing, peak memory, and result files.

Timing: every measurement is a warm-up followed by several repeats; the median wall time is the figure, and the
process CPU time (all threads) is recorded beside it because the machines these run on are shared and a busy
neighbour stretches wall time more than CPU time. ``os.getloadavg()`` is stored before and after each script.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` after a reset; on CPU the maximum
running total of the allocator events that ``torch.profiler.profile(profile_memory=True)`` records (it agrees with
the kernel's peak RSS), added to the bytes already live when the measured call starts, which the caller names.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "RESULTS_DIR",
    "add_common_args",
    "resolve_device",
    "autocast",
    "make_grad_scaler",
    "synchronize",
    "loadavg",
    "environment",
    "time_call",
    "summarise_times",
    "tensor_bytes",
    "optimizer_state_tensors",
    "MemoryTracker",
    "peak_memory",
    "markdown_table",
    "mib",
    "write_results",
    "cubic",
]

#: Default folder of the result files.
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def add_common_args(parser: argparse.ArgumentParser, warmup: int = 1, repeats: int = 3) -> argparse.ArgumentParser:
    """Add ``--device``, ``--out_dir``, ``--warmup``, ``--repeats`` and ``--threads`` to a script's parser."""
    parser.add_argument(
        "--device", default="cpu", help="[OPTIONAL] cpu or cuda[:N]; cuda turns AMP (float16 autocast) on (cpu)"
    )
    parser.add_argument(
        "--out_dir", default=str(RESULTS_DIR), help="[OPTIONAL] result folder; same-named files are replaced"
    )
    parser.add_argument("--warmup", type=int, default=warmup, help=f"[OPTIONAL] untimed runs first ({warmup})")
    parser.add_argument("--repeats", type=int, default=repeats, help=f"[OPTIONAL] timed runs; median kept ({repeats})")
    parser.add_argument(
        "--threads", type=int, default=None, help="[OPTIONAL] torch intra-op threads (torch's default)"
    )
    return parser


def resolve_device(name: str, threads: int | None = None) -> torch.device:
    """
    The ``torch.device`` of a ``--device`` value, checked to be usable.

    Args:
        name: ``cpu``, ``cuda`` or ``cuda:N``.
        threads: intra-op threads to set (``None`` keeps torch's default).

    Raises:
        ValueError: an unknown device type, or CUDA asked for where none is available.
    """
    device = torch.device(name)
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device must be cpu or cuda[:N], got {name!r}.")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name!r} asked for, but torch {torch.__version__} sees no CUDA device.")
    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be >= 1, got {threads}.")
        torch.set_num_threads(threads)
    return device


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """Float16 autocast on CUDA (the bundles' ``amp``) unless ``enabled`` is False; nothing on CPU (float32)."""
    if device.type == "cuda" and enabled:
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def make_grad_scaler(device: torch.device, enabled: bool = True) -> torch.amp.GradScaler:
    """A gradient scaler, enabled on CUDA only (where AMP is on) and only if ``enabled``."""
    return torch.amp.GradScaler(device.type, enabled=device.type == "cuda" and enabled)


def synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work so wall times are complete; nothing on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def loadavg() -> list[float]:
    """``os.getloadavg()`` (1, 5, 15 minutes) as a list, or an empty list where the platform has none."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device, amp: bool = True) -> dict[str, Any]:
    """Versions, device name, threads and load average, for the ``environment`` entry of a result file."""
    import monai

    amp = device.type == "cuda" and amp
    env: dict[str, Any] = {
        "device": str(device),
        "device_type": device.type,
        "device_name": _cpu_name(),
        "amp": amp,
        "amp_dtype": "float16" if amp else None,
        "torch": torch.__version__,
        "monai": monai.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
        # the vector ISA of torch's CPU kernels (AVX2, AVX512): timings from machines that differ here do not compare
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "loadavg_start": loadavg(),
        "command": " ".join(["python", "-m", _module_name(), *sys.argv[1:]]),
    }
    if device.type == "cuda":
        env["device_name"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
        env["cudnn"] = torch.backends.cudnn.version()
        env["cpu_name"] = _cpu_name()
    return env


def _module_name() -> str:
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return spec.name if spec is not None and spec.name else Path(sys.argv[0]).name


def time_call(fn: Callable[[], Any], device: torch.device) -> tuple[float, float]:
    """
    Run ``fn`` once and return ``(wall_seconds, process_cpu_seconds)``; CUDA work is waited for.
    """
    synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    synchronize(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def summarise_times(samples: Sequence[tuple[float, float]]) -> dict[str, Any]:
    """Median, minimum and all values of wall and CPU seconds of repeated :func:`time_call` results."""
    if not samples:
        raise ValueError("no timed runs to summarise (--repeats must be >= 1).")
    walls = [round(w, 4) for w, _ in samples]
    cpus = [round(c, 4) for _, c in samples]
    return {
        "wall_median_s": round(statistics.median(walls), 4),
        "wall_min_s": min(walls),
        "cpu_median_s": round(statistics.median(cpus), 4),
        "wall_s": walls,
        "cpu_s": cpus,
    }


def tensor_bytes(tensors: Iterable[torch.Tensor | None]) -> int:
    """Bytes of the storages behind ``tensors`` (``None`` skipped), each storage counted once."""
    storages: dict[tuple[str, int], int] = {}
    for t in tensors:
        if t is None:
            continue
        st = t.untyped_storage()
        storages[(str(t.device), st.data_ptr())] = st.nbytes()
    return sum(storages.values())


def optimizer_state_tensors(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The tensors an optimiser keeps between steps (momentum buffers, Adam moments and steps)."""
    return [v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]


class MemoryTracker:
    """
    Peak memory of one call, overall and per named phase (e.g. ``forward``, ``backward``).

    On CUDA the allocator statistics are read around each phase; on CPU ``torch.profiler`` memory events are summed
    in time order and phases are found by their ``record_function`` ranges. All figures are absolute: the bytes live
    at the start (``baseline_bytes``) plus the running total.

    Args:
        device: where the measured call runs.

    Example::

        tracker = MemoryTracker(device)

        def step():
            with tracker.phase("forward"):
                loss = loss_fn(net(x), y)
            with tracker.phase("backward"):
                loss.backward()

        result = tracker.measure(step, live_tensors=list(net.parameters()) + [x, y])
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._cuda_phases: dict[str, dict[str, int]] = {}
        self._cuda_peak = 0

    @contextlib.contextmanager
    def phase(self, name: str):
        """Mark a phase of the measured call; its start level and peak are reported under ``phases[name]``."""
        if self.device.type != "cuda":
            with torch.profiler.record_function(f"phase::{name}"):
                yield
            return
        synchronize(self.device)
        # the reset below forgets the peak so far: keep it for the whole call's figure
        self._cuda_peak = max(self._cuda_peak, int(torch.cuda.max_memory_allocated(self.device)))
        start = int(torch.cuda.memory_allocated(self.device))
        torch.cuda.reset_peak_memory_stats(self.device)
        try:
            yield
        finally:
            synchronize(self.device)
            peak = int(torch.cuda.max_memory_allocated(self.device))
            self._cuda_peak = max(self._cuda_peak, peak)
            self._cuda_phases[name] = {"start_bytes": start, "peak_bytes": peak}

    def measure(self, fn: Callable[[], Any], live_tensors: Iterable[torch.Tensor | None] = ()) -> dict[str, Any]:
        """
        Run ``fn`` once and return ``peak_bytes``, ``baseline_bytes``, ``rise_bytes`` and ``phases``.

        Args:
            fn: the call to measure; it may use :meth:`phase`.
            live_tensors: on CPU, the tensors already allocated that belong to the measurement (parameters,
                optimiser state, inputs): their storages are ``baseline_bytes``. Ignored on CUDA, where the
                allocator's current count is the baseline.
        """
        if self.device.type == "cuda":
            return self._measure_cuda(fn)
        return self._measure_cpu(fn, tensor_bytes(live_tensors))

    def _measure_cuda(self, fn: Callable[[], Any]) -> dict[str, Any]:
        self._cuda_phases, self._cuda_peak = {}, 0
        synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        baseline = int(torch.cuda.memory_allocated(self.device))
        fn()
        synchronize(self.device)
        peak = max(int(torch.cuda.max_memory_allocated(self.device)), self._cuda_peak)
        return {"peak_bytes": peak, "baseline_bytes": baseline, "rise_bytes": peak - baseline,
                "phases": dict(self._cuda_phases)}

    def _measure_cpu(self, fn: Callable[[], Any], baseline: int) -> dict[str, Any]:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
        results = getattr(prof.profiler, "kineto_results", None)
        if results is None:
            raise RuntimeError(
                f"torch {torch.__version__}: the profiler gives no kineto results, so CPU peak memory cannot be read."
            )
        events = list(results.events())
        memory = sorted((e.start_ns(), e.nbytes()) for e in events if e.name() == "[memory]")
        ranges = {
            e.name()[len("phase::"):]: (e.start_ns(), e.end_ns()) for e in events if e.name().startswith("phase::")
        }
        running, peak = 0, 0
        phases = {name: {"start_bytes": None, "peak_bytes": None} for name in ranges}
        for t, nbytes in memory:
            for name, (start, end) in ranges.items():
                if t >= start and phases[name]["start_bytes"] is None:
                    phases[name]["start_bytes"] = baseline + running
                    phases[name]["peak_bytes"] = baseline + running
            running += nbytes
            peak = max(peak, running)
            for name, (start, end) in ranges.items():
                if start <= t <= end:
                    phases[name]["peak_bytes"] = max(phases[name]["peak_bytes"], baseline + running)
        return {"peak_bytes": baseline + peak, "baseline_bytes": baseline, "rise_bytes": peak, "phases": phases}


def peak_memory(
    fn: Callable[[], Any], device: torch.device, live_tensors: Iterable[torch.Tensor | None] = ()
) -> dict[str, Any]:
    """
    Peak memory of one call of ``fn``: the bytes live when it starts plus the largest rise during it.

    Shorthand for ``MemoryTracker(device).measure(fn, live_tensors)``; see :class:`MemoryTracker`.
    """
    return MemoryTracker(device).measure(fn, live_tensors)


def mib(nbytes: float) -> float:
    """Bytes -> MiB rounded to 0.1."""
    return round(float(nbytes) / 2**20, 1)


def cubic(values: Sequence[int]) -> tuple[int, int, int]:
    """A spatial size from one value (cube) or three values."""
    values = [int(v) for v in values]
    if len(values) == 1:
        return (values[0],) * 3
    if len(values) != 3 or min(values) < 1:
        raise ValueError(f"a spatial size needs 1 or 3 positive values, got {values}.")
    return tuple(values)  # type: ignore[return-value]


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub markdown table; floats keep 3 significant digits."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are shared files
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_results(
    out_dir: str | os.PathLike, name: str, device: torch.device, payload: dict[str, Any], markdown: str
) -> tuple[Path, Path]:
    """
    Write ``<out_dir>/<name>_<device type>.json`` and ``.md`` atomically.

    ``payload["environment"]["loadavg_end"]`` is filled here.

    Returns:
        the JSON and markdown paths.
    """
    out = Path(out_dir)
    payload.setdefault("environment", {})["loadavg_end"] = loadavg()
    stem = f"{name}_{device.type}"
    json_path, md_path = out / f"{stem}.json", out / f"{stem}.md"
    _write_atomic(json_path, json.dumps(payload, indent=2) + "\n")
    env = payload["environment"]
    header = (
        f"# {name} on {env.get('device_name', device.type)} ({device.type}"
        f"{', ' + env['cpu_capability'] if env.get('cpu_capability') else ''})\n\n"
        f"torch {env.get('torch')}, monai {env.get('monai')}, {env.get('torch_threads')} threads, "
        f"AMP {'on' if env.get('amp') else 'off'}, load average {env.get('loadavg_start')} -> "
        f"{env.get('loadavg_end')}.\n\nCommand: `{env.get('command')}`\n\n"
    )
    _write_atomic(md_path, header + markdown)
    return json_path, md_path
