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
"""Helpers of the retraining workflow: epochs from iterations, patch checks, checkpoint record, CSV log, ranks,
intensity window of a training list."""

from __future__ import annotations

import json

import csv
import json
import re
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events
from monai.handlers import CheckpointLoader, CheckpointSaver, StatsHandler

from dast_components.data import prepare_kits19_data
from dast_components.data.synthetic import write_dataset
from dast_components.training import (
    CheckpointRecord,
    IterationValidation,
    TrainingLog,
    WeightRecord,
    cache_memory_rate,
    check_patch_size,
    epochs_for_iterations,
    handlers_for_rank,
    training_intensity,
)

__all__: list[str] = []


def test_epochs_for_iterations() -> None:
    assert epochs_for_iterations(40000, 84) == 477  # 168 training cases of KiTS19 at batch 2
    assert epochs_for_iterations(40, 2) == 20
    assert epochs_for_iterations(5, 10) == 1
    with pytest.raises(ValueError, match="training list is empty"):
        epochs_for_iterations(10, 0)
    with pytest.raises(ValueError, match="num_iterations"):
        epochs_for_iterations(0, 3)


def test_check_patch_size() -> None:
    assert check_patch_size([160, 160, 160], 32) == [160, 160, 160]
    with pytest.raises(ValueError, match=r"multiples of 32.*e\.g\. \[160, 160, 32\]"):
        check_patch_size([150, 160, 20], 32)
    with pytest.raises(ValueError, match="multiples"):
        check_patch_size([32, 32], 16)


def test_checkpoint_record_loads_weights_only(tmp_path: Path) -> None:
    record = CheckpointRecord(intensity={"lower": -54.5, "upper": 242.0}, pixdim=[1.0, 1.0, 1.0], arch={"ops": ["a"]})
    torch.save({"bundle": record.state_dict()}, tmp_path / "c.pt")
    loaded = torch.load(tmp_path / "c.pt", weights_only=True)["bundle"]
    other = CheckpointRecord()
    other.load_state_dict(loaded)
    assert other.state_dict() == record.state_dict()


def test_weight_record_follows_the_checkpoint_saver(tmp_path: Path) -> None:
    """The saver writes a plain state dict; the record lands next to it only when the weights were (re)written."""
    net = torch.nn.Linear(2, 1)
    evaluator = Engine(lambda engine, batch: None)
    scores = iter([0.5, 0.4, 0.9])
    evaluator.add_event_handler(Events.EPOCH_COMPLETED, lambda e: e.state.metrics.update(dice=next(scores)))
    CheckpointSaver(str(tmp_path), {"model": net}, save_key_metric=True, key_metric_filename="model.pt",
                    key_metric_name="dice").attach(evaluator)
    record = WeightRecord(tmp_path, ["model.pt", None], intensity={"lower": -5.0, "upper": 95.0}, fold=0)
    record.attach(evaluator)
    evaluator.run([0])
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    assert set(state) == {"weight", "bias"}  # a plain state dict: what ckpt_export loads without key_in_ckpt
    written = json.loads((tmp_path / "model.json").read_text())
    assert written == {"weights": "model.pt", "intensity": {"lower": -5.0, "upper": 95.0}, "fold": 0}
    (tmp_path / "model.json").unlink()
    evaluator.run([0])  # worse score: weights unchanged, no record rewritten
    assert not (tmp_path / "model.json").exists()
    evaluator.run([0])  # better: new weights, new record
    assert (tmp_path / "model.json").is_file()
    with pytest.raises(ValueError, match=r"\.pt"):
        WeightRecord(tmp_path, ["model.ts"])
    with pytest.raises(TypeError):
        WeightRecord(tmp_path, ["model.pt"], bad=object())


def test_handlers_for_rank(tmp_path: Path) -> None:
    net = torch.nn.Linear(1, 1)
    handlers = [CheckpointLoader(str(tmp_path / "m.pt"), {"model": net}), StatsHandler(), None,
                CheckpointSaver(str(tmp_path), {"model": net}), TrainingLog(tmp_path)]
    assert len(handlers_for_rank(handlers, rank=0)) == 4
    assert [type(h).__name__ for h in handlers_for_rank(handlers, rank=1)] == ["CheckpointLoader"]
    assert handlers_for_rank(None) == []


@pytest.mark.parametrize(
    "batches, epochs, interval, expected",
    [
        ([0], 30, 15, [15, 30]),  # one training case: an epoch is one iteration
        ([0] * 84, 1, 40, [40, 80, 84]),  # 168 cases at batch 2; the last iteration always validates
        ([0] * 3, 2, 4, [4, 6]),
    ],
)
def test_iteration_validation_counts_iterations(batches: list, epochs: int, interval: int, expected: list) -> None:
    from monai.engines import Evaluator

    seen: list[int] = []
    trainer = Engine(lambda e, b: None)
    evaluator = Evaluator(device="cpu", val_data_loader=[0], epoch_length=1, iteration_update=lambda e, b: seen.append(
        trainer.state.iteration))
    IterationValidation(interval=interval, validator=evaluator).attach(trainer)
    trainer.run(batches, max_epochs=epochs)
    assert seen == expected
    with pytest.raises(ValueError, match="val_interval"):
        IterationValidation(interval=0, validator=evaluator)


def test_training_log(tmp_path: Path) -> None:
    evaluator = Engine(lambda e, b: None)

    @evaluator.on(Events.EPOCH_COMPLETED)
    def _metric(engine: Engine) -> None:
        engine.state.metrics["val_composite_dice"] = 0.5

    trainer = Engine(lambda e, b: [{"loss": torch.tensor(float(b))}])

    @trainer.on(Events.EPOCH_COMPLETED(every=2))
    def _validate(engine: Engine) -> None:  # what ValidationHandler does, registered before the log
        evaluator.run([0])
    optimizer = torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=1e-3)
    TrainingLog(tmp_path, evaluator=evaluator, optimizer=optimizer, filename="log.csv").attach(trainer)
    trainer.run([1.0, 3.0], max_epochs=3)
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert [r["iteration"] for r in rows] == ["2", "4", "6"]
    assert float(rows[0]["train_loss"]) == 2.0 and float(rows[0]["learning_rate"]) == 1e-3
    assert [r["val_composite_dice"] for r in rows] == ["", "0.5", ""]


def test_training_intensity(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "kits", layout="kits19", num_cases=5, seed=4, shape=(20, 24, 16))
    prepared = prepare_kits19_data(data, fold=1)
    same = training_intensity(prepared["training"], dataset_dir=data, fold=1, output_dir=tmp_path / "out")
    assert same == prepared["intensity"]
    assert not (tmp_path / "out").exists(), "the bundle's own split must reuse prepare_kits19_data's cache"
    # a list from elsewhere (MONAI Label): computed once, then cached under output_dir
    subset = prepared["training"][:2]
    first = training_intensity(subset, dataset_dir=data, fold=1, output_dir=tmp_path / "out")
    cached = list((tmp_path / "out").glob("dast_intensity_*.json"))
    assert len(cached) == 1 and first["upper"] > first["lower"]
    assert training_intensity(subset, dataset_dir=None, output_dir=tmp_path / "out") == first
    with pytest.raises(ValueError, match="empty"):
        training_intensity([], output_dir=tmp_path)


def test_cache_memory_rate(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "kits", layout="kits19", num_cases=4, seed=4, shape=(20, 24, 16))
    items = prepare_kits19_data(data, fold=0, num_folds=2)["training"]
    assert cache_memory_rate(items, [1.0, 1.0, 1.0], 1.0, available=2**34) == 1.0
    assert cache_memory_rate(items, [1.0, 1.0, 1.0], 0.0, available=1) == 0.0
    with pytest.raises(ValueError, match=r"--cache_rate 0\.0 "):
        cache_memory_rate(items, [1.0, 1.0, 1.0], 1.0, available=1)
    # the suggested cache_rate fits the same memory
    with pytest.raises(ValueError, match="needs about") as info:
        cache_memory_rate(items, [0.5, 0.5, 0.5], 1.0, available=2**20)
    suggested = float(re.search(r"--cache_rate ([0-9.]+) ", str(info.value)).group(1))
    assert 0.0 < suggested < 1.0
    assert cache_memory_rate(items, [0.5, 0.5, 0.5], suggested, available=2**20) == suggested
    with pytest.raises(ValueError, match="cache_rate must be in"):
        cache_memory_rate(items, [1.0, 1.0, 1.0], 1.5)


def test_clipped_class_warns_once_per_run(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Lung-like cases: the window of all labelled voxels misses the tumour; a run (which prepares the data twice,
    for the datalist and for the window) warns once, and the fold's cache records the per-class shares."""
    import logging

    import nibabel as nib
    import numpy as np

    rng = np.random.default_rng(0)
    for k in range(2):
        label = np.zeros((24, 24, 12), np.uint8)
        label[2:22, 2:22, 2:10] = 1
        label[10:13, 10:13, 4:7] = 2
        image = np.where(label == 1, rng.normal(-900, 30, label.shape), -1000.0)
        image = np.where(label == 2, rng.normal(40, 10, label.shape), image).astype(np.int16)
        case = tmp_path / "lung" / f"case_{k:05d}"
        case.mkdir(parents=True)
        nib.save(nib.Nifti1Image(image, np.diag([1.0, 1.0, 5.0, 1.0])), str(case / "imaging.nii.gz"))
        nib.save(nib.Nifti1Image(label, np.diag([1.0, 1.0, 5.0, 1.0])), str(case / "segmentation.nii.gz"))
    with caplog.at_level(logging.WARNING):
        prepared = prepare_kits19_data(tmp_path / "lung", fold=0, num_folds=2)
        window = training_intensity(prepared["training"], dataset_dir=tmp_path / "lung", fold=0, num_folds=2,
                                    output_dir=tmp_path / "out")
    assert window["upper"] < -500
    warned = [r.getMessage() for r in caplog.records if "clips most of class 2" in r.getMessage()]
    assert len(warned) == 1, warned
    cache = json.loads((tmp_path / "lung" / "dast_intensity_kits19_fold0.json").read_text())
    assert cache["classes"]["2"]["inside_window"] < 0.5 <= cache["classes"]["1"]["inside_window"]
