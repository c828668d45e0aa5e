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
from __future__ import annotations

import csv

import pytest

from dast_components.visualize import draw_curves, parse_run_spec, read_metrics
from dast_components.visualize.__main__ import main


def _write_csv(path, rows):
    columns = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def _run(path, scale=1.0):
    rows = [
        {"epoch": e, "iteration": 10 * e, "train_loss": scale / e, "learning_rate": 1e-3,
         "val_mean_dice": 0.1 * e if e % 2 == 0 else ""}
        for e in range(1, 7)
    ]
    return _write_csv(path, rows)


def test_read_metrics_skips_empty_cells_and_other_columns(tmp_path):
    series = read_metrics(_run(tmp_path / "m.csv"))
    assert set(series) == {"train_loss", "val_mean_dice"}
    assert series["train_loss"][0] == [10.0, 20.0, 30.0, 40.0, 50.0, 60.0]
    assert series["val_mean_dice"] == ([20.0, 40.0, 60.0], pytest.approx([0.2, 0.4, 0.6]))


def test_two_runs_into_one_png(tmp_path):
    out = tmp_path / "figs" / "curves.png"
    drawn = draw_curves({"DAST": _run(tmp_path / "a.csv"), "DiNTS": _run(tmp_path / "b.csv", 2.0)}, out, dpi=50)
    assert drawn == {"DAST": ["train_loss", "val_mean_dice"], "DiNTS": ["train_loss", "val_mean_dice"]}
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_loss_only_run(tmp_path):
    path = _write_csv(tmp_path / "search.csv", [{"iteration": i, "loss": 1.0 / i, "memory_ratio": 0.5}
                                                 for i in range(1, 4)])
    assert draw_curves([f"search={path}"], tmp_path / "c.png") == {"search": ["loss"]}


def test_missing_iteration_column_is_a_clear_error(tmp_path):
    path = _write_csv(tmp_path / "bad.csv", [{"epoch": 1, "train_loss": 0.5}])
    with pytest.raises(ValueError, match="no 'iteration' column.*epoch"):
        draw_curves({"bad": path}, tmp_path / "c.png")
    assert not (tmp_path / "c.png").exists()


def test_no_drawable_column_and_missing_file(tmp_path):
    path = _write_csv(tmp_path / "lr.csv", [{"iteration": 1, "learning_rate": 0.1}])
    with pytest.raises(ValueError, match="loss"):
        draw_curves({"lr": path}, tmp_path / "c.png")
    with pytest.raises(FileNotFoundError):
        draw_curves({"x": tmp_path / "missing.csv"}, tmp_path / "c.png")
    with pytest.raises(ValueError, match="event files"):
        read_metrics(tmp_path)


def test_run_spec():
    assert parse_run_spec("DAST=runs/a/metrics.csv")[0] == "DAST"
    assert parse_run_spec("runs/lambda0.5/metrics.csv")[0] == "lambda0.5"
    with pytest.raises(ValueError, match="NAME=PATH"):
        parse_run_spec("=x.csv")


def test_tensorboard_folder(tmp_path):
    pytest.importorskip("tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(tmp_path / "tb"))
    for step in range(1, 5):
        writer.add_scalar("train/loss", 1.0 / step, step)
        writer.add_scalar("val/mean_dice", 0.2 * step, step)
        writer.add_scalar("lr", 0.1, step)
    writer.close()
    series = read_metrics(tmp_path / "tb")
    assert set(series) == {"train/loss", "val/mean_dice"}
    assert series["train/loss"][0] == [1.0, 2.0, 3.0, 4.0]


def test_cli(tmp_path, capsys):
    out = tmp_path / "curves.png"
    runs = [f"A={_run(tmp_path / 'a.csv')}", f"B={_run(tmp_path / 'b.csv')}"]
    main(["curves", "--runs", *runs, "--out", str(out), "--dpi", "50"])
    assert out.is_file()
    assert "A: train_loss, val_mean_dice" in capsys.readouterr().out
