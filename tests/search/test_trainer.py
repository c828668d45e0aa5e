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
"""The search trainer as search.json wires it, on in-memory tensors: exports, checkpoints, resume, budgets, checks."""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path

import pytest
import torch
from ignite.engine import Events
from monai.bundle import ConfigParser
from torch.utils.data import DataLoader

from dast_components.networks import DASTNet, estimate_memory, load_arch
from dast_components.search import check_search_settings, decode_within_budget, prepare_data

__all__: list[str] = []

PATCH = [16, 16, 16]
SEARCH_JSON = Path(__file__).resolve().parents[2] / "bundles" / "dast_search" / "configs" / "search.json"


def _items(n: int, size: int, seed: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        label = torch.zeros(1, size, size, size)
        label[:, 4:12, 4:12, 4:12] = 1
        label[:, 6:9, 6:9, 6:9] = 2
        out.append({"image": label / 2 + 0.1 * torch.rand(1, size, size, size, generator=g), "label": label})
    return out


def _parser(tmp_path, num_iterations=4, warmup=2, val_interval=2, resume=False, num_blocks=2, patch=PATCH,
            memory_budget_gib=None) -> ConfigParser:
    """search.json with a tiny space and in-memory loaders in place of the dataset (``initialize`` is not run)."""
    torch.manual_seed(0)
    parser = ConfigParser()
    parser.read_config(str(SEARCH_JSON))
    parser.update({
        "bundle_root": str(tmp_path), "device": "$torch.device('cpu')", "amp": False, "tensorboard": False,
        "num_blocks": num_blocks, "num_depths": 2, "grid": 2, "channel_mul": 0.125, "arch_channel_mul": None,
        "patch_size": list(patch), "train_patch_size": PATCH, "num_iterations": num_iterations,
        "warmup_iterations": warmup, "val_interval": val_interval, "memory_lambda": 0.5, "resume": resume,
        "learning_rate": 0.05, "arch_learning_rate": 0.05, "sw_batch_size": 2, "sw_overlap": 0.25,
        "memory_budget_gib": memory_budget_gib, "seed": 0,
        "search#dataloader": DataLoader(_items(2, 16, 0), batch_size=2),
        "search#arch_dataloader": DataLoader(_items(2, 16, 1), batch_size=2),
        "validate#dataloader": DataLoader(_items(1, 24, 2), batch_size=1),
        "validate#inferer#roi_size": PATCH,
    })
    return parser


def _run(parser: ConfigParser) -> dict:
    parser.get_parsed_content("search#trainer").run()
    return parser.get_parsed_content("search#export").summary


def _metrics(tmp_path) -> list[dict[str, str]]:
    with open(tmp_path / "eval" / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def _root_cause(err: BaseException) -> BaseException:
    """The error a config component raised (MONAI wraps it in "Failed to instantiate component")."""
    while err.__cause__ is not None:
        err = err.__cause__
    return err


def test_run_exports_architecture_checkpoint_and_metrics(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="dast_components.search.handlers")
    summary = _run(_parser(tmp_path))
    arch_file = tmp_path / "models" / "arch_code.json"
    assert summary["arch_file"] == str(arch_file) and summary["iteration"] == 4
    for it in (2, 4):
        assert (tmp_path / "models" / f"arch_code_iter{it:06d}.json").is_file()
    assert (tmp_path / "models" / "arch_code.png").stat().st_size > 0  # the diagram of the final architecture
    arch = load_arch(arch_file, ops="dast", grid=2)
    assert arch.provenance["iteration"] == 4 and arch.memory_lambda == pytest.approx(0.5)
    assert arch.provenance["estimated_memory_gib"] == pytest.approx(estimate_memory(arch, PATCH, 2) / 1024**3, abs=1e-4)
    assert arch.provenance["val_dice"] is not None and arch.provenance["config_hash"] == summary["config_hash"]
    net = DASTNet(arch_file, in_channels=1, num_classes=3)
    assert net(torch.rand(1, 1, *PATCH)).shape == (1, 3, *PATCH)
    state = torch.load(tmp_path / "eval" / "search_checkpoint.pt", weights_only=True)
    assert state["search"]["trainer"]["iteration"] == 4 and "dints_space.log_alpha_c" in state["network"]
    rows = _metrics(tmp_path)
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3, 4]
    assert [bool(r["arch_loss"]) for r in rows] == [False, False, True, True]  # warm-up, then search
    assert rows[0]["val_dice"] == "" and rows[1]["val_dice"] != "" and rows[3]["est_memory_gib"] != ""
    assert rows[1]["val_dice_1"] != "" and rows[0]["memory_ratio"] != "" and float(rows[0]["lr"]) == 0.05 and rows[0]["seconds"]
    lines = [r.getMessage() for r in caplog.records if "iter" in r.getMessage() and "ETA" in r.getMessage()]
    assert len(lines) == 4 and "memory ratio" in lines[-1] and "4/4" in lines[-1] and "val dice" in lines[-1]
    assert "[warmup] iter 1/4" in lines[0] and "[search]" in lines[2]


def test_resume_continues_from_checkpoint(tmp_path, caplog):
    _run(_parser(tmp_path, num_iterations=3, warmup=1, val_interval=3))
    first = _metrics(tmp_path)
    saved = torch.load(tmp_path / "eval" / "search_checkpoint.pt", weights_only=True)
    with open(tmp_path / "eval" / "metrics.csv", "a") as f:  # a row written after the checkpoint, then killed
        f.write("4,4,9.9\n")
    caplog.set_level(logging.INFO)
    parser = _parser(tmp_path, num_iterations=5, warmup=1, val_interval=3, resume=True)
    trainer = parser.get_parsed_content("search#trainer")
    loaded = {}
    trainer.add_event_handler(Events.STARTED, lambda e: loaded.update(
        {k: v.clone() for k, v in parser.get_parsed_content("network").state_dict().items()}))
    trainer.run()
    summary = parser.get_parsed_content("search#export").summary
    assert summary["iteration"] == 5
    assert any("resumed at iteration 3" in r.getMessage() for r in caplog.records)
    assert any("num_iterations 3 -> 5" in r.getMessage() for r in caplog.records)
    for key, value in saved["network"].items():
        assert torch.equal(loaded[key], value), key
    rows = _metrics(tmp_path)
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3, 4, 5]
    assert [r["loss"] for r in rows[:3]] == [r["loss"] for r in first] and rows[3]["loss"] != "9.9"
    assert torch.load(tmp_path / "eval" / "search_checkpoint.pt", weights_only=True)["search"]["trainer"][
        "iteration"] == 5


def test_resume_rejects_another_search_space_and_keeps_the_checkpoint(tmp_path):
    _run(_parser(tmp_path, num_iterations=2, warmup=1, val_interval=2))
    before = (tmp_path / "eval" / "search_checkpoint.pt").read_bytes()
    with pytest.raises(RuntimeError) as info:  # refused while the trainer is built, before anything runs
        _run(_parser(tmp_path, num_iterations=4, warmup=1, val_interval=2, resume=True, num_blocks=3))
    assert "num_blocks: checkpoint 2 vs config 3" in str(_root_cause(info.value))
    assert (tmp_path / "eval" / "search_checkpoint.pt").read_bytes() == before


def test_resume_refuses_a_checkpoint_of_the_old_loop_before_running(tmp_path):
    (tmp_path / "eval").mkdir()
    torch.save({"iteration": 2, "network": {}}, tmp_path / "eval" / "search_checkpoint.pt")  # dast_search 0.2.x
    with pytest.raises(RuntimeError) as info:  # raised while the trainer is built, before anything runs
        _parser(tmp_path, resume=True).get_parsed_content("search#trainer")
    assert "written by dast_search 0.2.x" in str(_root_cause(info.value))


def test_interrupt_keeps_the_last_complete_checkpoint(tmp_path):
    _run(_parser(tmp_path, num_iterations=2, warmup=1, val_interval=2))
    before = (tmp_path / "eval" / "search_checkpoint.pt").read_bytes()
    parser = _parser(tmp_path, num_iterations=6, warmup=1, val_interval=2, resume="true")  # the CLI's string
    trainer = parser.get_parsed_content("search#trainer")

    def stop(engine):
        if engine.state.iteration == 3:
            raise KeyboardInterrupt

    trainer.add_event_handler(Events.ITERATION_STARTED, stop)
    with pytest.raises(KeyboardInterrupt):
        trainer.run()
    assert (tmp_path / "eval" / "search_checkpoint.pt").read_bytes() == before  # iteration 2, complete
    assert [int(r["iteration"]) for r in _metrics(tmp_path)] == [1, 2]
    assert _run(_parser(tmp_path, num_iterations=6, warmup=1, val_interval=2, resume="True"))["iteration"] == 6


def test_resume_false_string_starts_a_new_search(tmp_path, caplog):
    _run(_parser(tmp_path, num_iterations=2, warmup=1, val_interval=2))
    caplog.set_level(logging.INFO)
    assert _run(_parser(tmp_path, num_iterations=2, warmup=1, val_interval=2, resume="false"))["iteration"] == 2
    assert any("starting a new search" in r.getMessage() for r in caplog.records)


def test_resume_without_checkpoint_starts_over(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    assert _run(_parser(tmp_path, num_iterations=2, warmup=1, val_interval=2, resume=True))["iteration"] == 2
    assert any("resume requested but" in r.getMessage() for r in caplog.records)


def test_budget_keeps_every_export_within(tmp_path):
    probe = _parser(tmp_path / "probe")
    plain = decode_within_budget(probe.get_parsed_content("search_space"), None, PATCH, 2)
    budget = plain.estimate / 1024**3 * 0.97
    parser = _parser(tmp_path, memory_budget_gib=budget)
    _run(parser)
    for it in (2, 4):
        arch = json.loads((tmp_path / "models" / f"arch_code_iter{it:06d}.json").read_text())
        assert arch["provenance"]["estimated_memory_gib"] * 1024**3 <= budget * 1024**3 + 1
        assert arch["provenance"]["memory_budget_gib"] == pytest.approx(budget)
    assert parser.get_parsed_content("search#memory_loss").memory_lambda < 1.0


def test_impossible_budget_fails_at_start(tmp_path):
    with pytest.raises(RuntimeError) as info:
        _run(_parser(tmp_path, memory_budget_gib=1e-6))
    assert "alone need" in str(_root_cause(info.value))
    assert not (tmp_path / "eval" / "search_checkpoint.pt").exists()


def test_bad_settings_fail_early(tmp_path):
    with pytest.raises(RuntimeError) as info:
        _parser(tmp_path, patch=[20, 20, 20]).get_parsed_content("search#trainer")
    assert "patch_size [20, 20, 20] must be 3 positive multiples of 8" in str(_root_cause(info.value))
    with pytest.raises(RuntimeError) as info:
        _parser(tmp_path, num_iterations=2, warmup=2).get_parsed_content("search#trainer")
    assert "warmup_iterations must be in [0, num_iterations=2)" in str(_root_cause(info.value))
    with pytest.raises(ValueError, match="unknown op name"):
        check_search_settings([32] * 3, [32] * 3, 3, ["skip_connect", "conv_5x5x5"])
    with pytest.raises(ValueError, match="train_patch_size"):
        check_search_settings([32] * 3, [48] * 3, 4, "dast")
    check_search_settings([96] * 3, [160] * 3, 4, "dints", 10, 5)


def test_prepare_data_single_process(tmp_path):
    from dast_components.data import DataError, write_dataset

    write_dataset(tmp_path / "data", num_cases=4, shape=(16, 16, 16))
    data = prepare_data(tmp_path / "data", output_dir=tmp_path / "out")
    assert sum(len(data[k]) for k in ("train_weights", "train_arch", "validation")) == 4
    assert data["intensity"]["lower"] < data["intensity"]["upper"]
    with pytest.raises(DataError):
        prepare_data(tmp_path / "missing")


def test_ramp_iterations_hold_full_weight(tmp_path):
    parser = _parser(tmp_path, num_iterations=6, warmup=2, val_interval=6)
    parser["ramp_iterations"] = 2
    trainer = parser.get_parsed_content("search#trainer")
    ramps = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: ramps.append(e.state.output.get("ramp")))
    trainer.run()
    assert ramps == [None, None, 0.0, 0.5, 1.0, 1.0]
    assert parser.get_parsed_content("search#export").description()["ramp_iterations"] == 2
    with pytest.raises(RuntimeError) as info:
        bad = _parser(tmp_path / "bad")
        bad["ramp_iterations"] = 0
        bad.get_parsed_content("search#trainer")
    assert "ramp_iterations must be an integer in [1, " in str(_root_cause(info.value))
    with pytest.raises(RuntimeError) as info:
        bad = _parser(tmp_path / "long", num_iterations=6, warmup=2)
        bad["ramp_iterations"] = 4  # full weight only after the last iteration
        bad.get_parsed_content("search#trainer")
    assert "got 4" in str(_root_cause(info.value))


def test_arch_lr_anneal_iterations_cosine_to_the_end(tmp_path, caplog):
    parser = _parser(tmp_path, num_iterations=6, warmup=2, val_interval=6)
    parser["arch_lr_anneal_iterations"] = 3
    trainer = parser.get_parsed_content("search#trainer")
    base = trainer.arch_base_lrs[0]
    rates = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: rates.append(e.state.output.get("arch_lr")))
    with caplog.at_level(logging.INFO):
        trainer.run()
    assert any("arch lr 7.32e-03" in r.getMessage() and "6/6" in r.getMessage() for r in caplog.records)
    factors = [0.5 * (1 + math.cos(math.pi * k / 4)) for k in (1, 2, 3)]
    assert rates[:3] == [None, None, pytest.approx(base)]
    assert rates[3:] == [pytest.approx(base * f) for f in factors]
    assert trainer.step_fn.arch_optimizer.param_groups[0]["lr"] == pytest.approx(base * factors[-1])
    assert parser.get_parsed_content("search#export").description()["arch_lr_anneal_iterations"] == 3
    with pytest.raises(RuntimeError) as info:
        bad = _parser(tmp_path / "bad", num_iterations=6, warmup=2)
        bad["arch_lr_anneal_iterations"] = 5  # more than the 4 iterations with an architecture step
        bad.get_parsed_content("search#trainer")
    assert "arch_lr_anneal_iterations must be an integer in [1, num_iterations - warmup_iterations = 4]" in str(_root_cause(info.value))


def test_arch_lr_anneal_continues_after_a_resume(tmp_path):
    parser = _parser(tmp_path, num_iterations=6, warmup=2, val_interval=4)
    parser["arch_lr_anneal_iterations"] = 3
    trainer = parser.get_parsed_content("search#trainer")
    base = trainer.arch_base_lrs[0]
    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=4), lambda e: e.terminate())  # killed after the save
    trainer.run()
    assert torch.load(tmp_path / "eval" / "search_checkpoint.pt", weights_only=True)["search"]["trainer"][
        "iteration"] == 4
    parser = _parser(tmp_path, num_iterations=6, warmup=2, val_interval=4, resume=True)
    parser["arch_lr_anneal_iterations"] = 3
    trainer = parser.get_parsed_content("search#trainer")
    rates = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: rates.append(e.state.output.get("arch_lr")))
    trainer.run()
    assert rates == [pytest.approx(base * 0.5 * (1 + math.cos(math.pi * k / 4))) for k in (2, 3)]
