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
"""Inference helpers: weight files with clear errors, the fold ensemble, input lists, KiTS19 output names."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn

from dast_components.inference import (
    FoldEnsemble,
    how_to_get_weights,
    inference_items,
    kits19_prediction_name,
    load_network,
    read_checkpoint,
    read_intensity,
    read_record,
)

__all__: list[str] = []


class Constant(nn.Module):
    """Logits ``logits`` everywhere; records its last input."""

    def __init__(self, logits: list[float]) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.tensor(logits))
        self.seen: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x.detach().clone()
        return self.logits.view(1, -1, 1, 1, 1).expand(x.shape[0], -1, *x.shape[2:])


def _save(path: Path, model: nn.Module, window: dict | None = None) -> Path:
    state = {"model": model.state_dict()}
    if window is not None:
        state["bundle"] = {"intensity": window}
    torch.save(state, path)
    return path


def test_missing_and_bad_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no trained weights at .*model\.pt.*run training.*download"):
        read_checkpoint(tmp_path / "models" / "model.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="list"):
        read_checkpoint(tmp_path / "list.pt")
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="weights_only"):
        read_checkpoint(tmp_path / "junk.pt")
    bare = Constant([0.0, 1.0])
    torch.save(bare.state_dict(), tmp_path / "bare.pt")
    assert set(read_checkpoint(tmp_path / "bare.pt")) == {"model"}
    with pytest.raises(ValueError, match="intensity window"):
        read_intensity(tmp_path / "bare.pt")
    _save(tmp_path / "w.pt", bare, {"lower": -10, "upper": 90})  # version 0.1.0: the window inside the checkpoint
    assert read_intensity(tmp_path / "w.pt") == {"lower": -10.0, "upper": 90.0}
    # current: a plain state dict and the training record next to it, which wins
    (tmp_path / "w.json").write_text('{"intensity": {"lower": -20, "upper": 80}, "fold": 1}')
    assert read_intensity(tmp_path / "w.pt") == {"lower": -20.0, "upper": 80.0}
    assert read_record(tmp_path / "bare.pt") == {} and read_record(tmp_path / "w.pt")["fold"] == 1
    (tmp_path / "bare.json").write_text("[1]")
    with pytest.raises(ValueError, match="JSON object"):
        read_record(tmp_path / "bare.pt")


def test_load_network_single_and_mismatch(tmp_path: Path) -> None:
    trained = Constant([1.0, 2.0, 3.0])
    path = _save(tmp_path / "model.pt", trained)
    fresh = Constant([0.0, 0.0, 0.0]).train()
    net = load_network(fresh, path, "cpu")
    assert net is fresh and not net.training
    torch.testing.assert_close(net.logits.data, torch.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="do not fit the network"):
        load_network(Constant([0.0, 0.0]), path, "cpu")
    with pytest.raises(FileNotFoundError, match="model_fold4.pt"):
        load_network(fresh, [path, tmp_path / "model_fold4.pt"], "cpu")


def test_ensemble_averages_softmax(tmp_path: Path) -> None:
    window = {"lower": 0.0, "upper": 100.0}
    a = _save(tmp_path / "a.pt", Constant([2.0, 0.0, 0.0]), window)
    b = _save(tmp_path / "b.pt", Constant([0.0, 0.0, 3.0]), window)
    ensemble = load_network(Constant([0.0, 0.0, 0.0]), [a, b], "cpu")
    assert isinstance(ensemble, FoldEnsemble) and len(ensemble.models) == 2
    x = torch.rand(2, 1, 4, 4, 4)
    probs = torch.softmax(ensemble(x), dim=1)
    expected = (torch.softmax(torch.tensor([2.0, 0.0, 0.0]), 0) + torch.softmax(torch.tensor([0.0, 0.0, 3.0]), 0)) / 2
    torch.testing.assert_close(probs[0, :, 0, 0, 0], expected)
    # one model: the ensemble is the model's own softmax
    single = FoldEnsemble([Constant([0.5, -1.0, 2.0])])
    torch.testing.assert_close(torch.softmax(single(x), 1), torch.softmax(single.models[0](x), 1))


def test_ensemble_maps_input_to_each_models_window() -> None:
    first, second = Constant([0.0]), Constant([0.0])
    ensemble = FoldEnsemble([first, second], [{"lower": 0.0, "upper": 100.0}, {"lower": 50.0, "upper": 150.0}])
    x = torch.tensor([0.0, 0.25, 0.75, 1.0]).view(1, 1, 4, 1, 1)  # 0, 25, 75, 100 HU in the first window
    ensemble(x)
    torch.testing.assert_close(first.seen.flatten(), x.flatten())
    torch.testing.assert_close(second.seen.flatten(), torch.tensor([0.0, 0.0, 0.25, 0.5]))
    with pytest.raises(ValueError, match="2 models but 1"):
        FoldEnsemble([first, second], [{"lower": 0.0, "upper": 1.0}])


def test_inference_items(tmp_path: Path) -> None:
    for case in ("case_00001", "case_00000"):
        (tmp_path / "kits" / case).mkdir(parents=True)
        (tmp_path / "kits" / case / "imaging.nii.gz").write_bytes(b"")
        (tmp_path / "kits" / case / "segmentation.nii.gz").write_bytes(b"")
    items = inference_items(tmp_path / "kits", check=False)  # listing only; the image checks: tests/bad_inputs
    assert [Path(i["image"]).parent.name for i in items] == ["case_00000", "case_00001"]
    assert all(i["image"].endswith("imaging.nii.gz") for i in items)
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "b.nii").write_bytes(b"")
    (tmp_path / "flat" / "a.nii.gz").write_bytes(b"")
    assert [Path(i["image"]).name for i in inference_items(tmp_path / "flat", check=False)] == ["a.nii.gz", "b.nii"]
    assert len(inference_items(tmp_path / "flat" / "a.nii.gz", check=False)) == 1
    with pytest.raises(ValueError, match="no images"):
        inference_items(tmp_path / "flat", "*.mha")
    with pytest.raises(ValueError, match="does not exist"):
        inference_items(tmp_path / "nowhere")


def test_prediction_names() -> None:
    assert kits19_prediction_name({"filename_or_obj": "/d/case_00042/imaging.nii.gz"}, None)["subject"] == (
        "prediction_00042"
    )
    assert kits19_prediction_name({"filename_or_obj": "/d/ct_7.nii.gz"}, None)["subject"] == "ct_7"
    assert kits19_prediction_name({"filename_or_obj": "/d/scan.nii"}, None)["subject"] == "scan"


def test_how_to_get_weights_names_existing_paths(tmp_path: Path) -> None:
    # bundle_root is an output folder without configs/: the message names the bundle's train.json instead
    text = how_to_get_weights(tmp_path / "models" / "model.pt")
    config = Path(text.split("--config_file ")[1].split()[0])
    assert config.is_file() and config.name == "train.json", text
    assert f"--bundle_root {tmp_path} " in text and "--fold" not in text.split("Train it")[0]
    # a bundle root with its own configs is named as is
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "train.json").write_text("{}")
    (tmp_path / "models").mkdir()
    torch.save({}, tmp_path / "models" / "model_fold2.pt")
    text = how_to_get_weights(tmp_path / "models" / "model.pt")
    assert f"--config_file {tmp_path / 'configs' / 'train.json'} " in text
    assert text.startswith(f"Found {tmp_path / 'models' / 'model_fold2.pt'}: pass --fold 2 to use model_fold2.pt.")


def test_weights_of_an_older_transformer_op_say_why(tmp_path: Path) -> None:
    from dast_components.networks.transformer import TransformerOp3D

    op = TransformerOp3D(16, grid=2)
    state = dict(op.state_dict())
    state["key_norm.weight"], state["key_norm.bias"] = torch.ones(16), torch.zeros(16)
    torch.save(state, tmp_path / "old.pt")
    with pytest.raises(ValueError, match="do not fit the network.*before bundle versions 0.3.1"):
        load_network(TransformerOp3D(16, grid=2), tmp_path / "old.pt", "cpu")
