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
Start-up of the search bundle: the data split (rank 0 first under ``torchrun``) and the settings check.

- :func:`prepare_data`: ``search_data`` of ``search.json``.
- :func:`check_search_settings`: run by ``initialize``, so that a bad patch size, op name or schedule stops the
  bundle before any data is read.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import ignite.distributed as idist
import torch.distributed as dist

from dast_components.data import prepare_search_data, prepare_search_datalist
from dast_components.errors import InputError
from dast_components.networks.cells import resolve_ops
from dast_components.utils import check_patch_size

__all__ = ["check_search_settings", "prepare_data"]


def prepare_data(
    dataset_dir: str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    num_classes: int = 3,
    seed: int = 0,
    datalist: str | os.PathLike | None = None,
) -> dict:
    """
    :func:`dast_components.data.prepare_search_data` (or, with ``datalist``,
    :func:`~dast_components.data.prepare_search_datalist`), run by rank 0 first under ``torchrun``.

    The other ranks wait, then read the split and intensity caches rank 0 wrote instead of reading every volume
    again; when rank 0 fails (bad dataset), every rank raises with rank 0's message.

    Args:
        dataset_dir: MSD task folder with ``dataset.json``.
        output_dir: fallback cache folder when ``dataset_dir`` is read-only.
        cache_dir: cache folder (default: ``dataset_dir`` when writable).
        num_classes: label classes including background.
        seed: split seed.
        datalist: a MONAI datalist JSON (``training`` / ``validation``) used instead of ``dataset_dir``: the
            training list is halved into the weight and architecture splits; caches go to ``output_dir``.

    Returns:
        ``{"train_weights", "train_arch", "validation": [{"image", "label"}], "intensity": {"lower", "upper"}}``.
    """
    def _prepare() -> dict:
        if datalist is not None:
            return prepare_search_datalist(datalist, cache_dir or output_dir or ".", num_classes=num_classes, seed=seed)
        return prepare_search_data(dataset_dir, cache_dir=cache_dir, num_classes=num_classes, seed=seed,
                                   output_dir=output_dir)

    rank, world = idist.get_rank(), idist.get_world_size()
    if world == 1:
        return _prepare()
    result = _prepare_rank0_first(_prepare, rank)
    if len(result["validation"]) < world:
        raise InputError(f"{len(result['validation'])} validation case(s) for {world} processes: every process needs "
                         "at least one (the validation is distributed); use fewer processes or more validation cases.")
    return result


def _prepare_rank0_first(prepare: Any, rank: int) -> dict:
    """Run ``prepare`` on rank 0, then (reusing its caches) on the others; rank 0's failure stops every rank."""
    result: dict | None = None
    failure: list[str | None] = [None]
    if rank == 0:
        try:
            result = prepare()
        except Exception as err:  # noqa: BLE001  re-raised below after telling the other ranks
            failure[0] = f"{type(err).__name__}: {err}"
            dist.broadcast_object_list(failure, src=0)
            raise
    dist.broadcast_object_list(failure, src=0)
    if failure[0] is not None:
        raise InputError(f"rank 0 could not prepare the search data: {failure[0]}")
    return result if result is not None else prepare()


def check_search_settings(
    patch_size: Sequence[int],
    train_patch_size: Sequence[int],
    num_depths: int,
    ops: str | Sequence[str],
    num_iterations: int | None = None,
    warmup_iterations: int | None = None,
    use_downsample: bool = True,
) -> None:
    """
    Fail fast on settings that would otherwise fail deep inside the search (the bundle's ``initialize`` calls it).

    Args:
        patch_size: search patch; a multiple of ``2 ** (num_depths + use_downsample)``.
        train_patch_size: retraining patch (where the memory estimate applies); same rule.
        num_depths: resolutions of the search space.
        ops: op pool name or op names (:func:`~dast_components.networks.resolve_ops`).
        num_iterations: total iterations, >= 1.
        warmup_iterations: weight-only iterations, in ``[0, num_iterations)``.
        use_downsample: whether the DiNTS stems halve the input first.

    Raises:
        ValueError: naming the setting, its value and what is expected.
    """
    resolve_ops(ops)
    if int(num_depths) < 1:
        raise InputError(f"num_depths must be >= 1, got {num_depths}.")
    stride = 2 ** (int(num_depths) + int(use_downsample))
    check_patch_size(patch_size, stride, "patch_size")
    check_patch_size(train_patch_size, stride, "train_patch_size")
    if num_iterations is not None and int(num_iterations) < 1:
        raise InputError(f"num_iterations must be >= 1, got {num_iterations}.")
    if warmup_iterations is not None and num_iterations is not None:
        if not 0 <= int(warmup_iterations) < int(num_iterations):
            raise InputError(f"warmup_iterations must be in [0, num_iterations={num_iterations}), got "
                             f"{warmup_iterations}: the search needs at least one architecture step.")
