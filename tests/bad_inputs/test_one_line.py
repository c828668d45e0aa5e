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
"""How a process that stops on an input error reports it: exit status 1 and the message as the last line, for the
bundle commands and the ``python -m dast_components...`` tools; the traceback with ``DAST_TRACEBACK=1``.

The in-process tests of the other files find the InputError in the exception chain; these show that such a chain
is what the process prints (the hook of ``dast_components.errors``), once for every entry point.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dast_components.data.checks import DataError
from dast_components.errors import InputError, MissingFileError, _report, find_input_error
from tests.bad_inputs.helpers import (
    assert_one_line,
    config_path,
    edit_image,
    run_command,
    search_config_path,
    write_kits19,
    write_tiny_arch,
    write_weights,
    written,
)

__all__: list[str] = []


def _wrapped(message: str) -> RuntimeError:
    """An input error as MONAI's config parser raises it: ``RuntimeError`` from the original."""
    try:
        try:
            raise DataError(message)
        except DataError as err:
            raise RuntimeError("Failed to evaluate ConfigExpression: $@datalist") from err
    except RuntimeError as outer:
        return outer


def test_wrapped_input_error_is_one_line(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DAST_TRACEBACK", raising=False)
    calls = []
    error = _wrapped("image 'x.nii.gz' has 3 NaN voxels")
    _report(lambda *a: calls.append(a), type(error), error, error.__traceback__)
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["dast_components: stopped on an input error (DAST_TRACEBACK=1 shows the traceback)",
                     "error: image 'x.nii.gz' has 3 NaN voxels"]
    assert not calls


def test_traceback_on_request_and_for_other_errors(capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setenv("DAST_TRACEBACK", "1")
    error = _wrapped("bad")
    _report(lambda *a: calls.append(a), type(error), error, error.__traceback__)
    monkeypatch.delenv("DAST_TRACEBACK")
    other = RuntimeError("a bug")
    _report(lambda *a: calls.append(a), type(other), other, None)
    assert [c[1] for c in calls] == [error, other] and capsys.readouterr().err == ""


def test_error_types() -> None:
    assert issubclass(DataError, InputError) and issubclass(InputError, ValueError)
    assert issubclass(MissingFileError, FileNotFoundError) and issubclass(MissingFileError, InputError)
    assert find_input_error(RuntimeError("x")) is None
    worker = DataError("Caught DataError in DataLoader worker process 0.\nOriginal Traceback (most recent call "
                       "last):\n  File ...\ndast_components.data.checks.DataError: label 'y' is bad")
    from dast_components.errors import _one_line

    assert _one_line(worker) == "label 'y' is bad"


def test_cli_tool_one_line(tmp_path: Path) -> None:
    proc = run_command([str(tmp_path / "nowhere"), "--out", str(tmp_path / "i.json")],
                       module="dast_components.data.intensity")
    assert_one_line(proc, "nowhere", "does not exist")
    assert written(tmp_path) == []


def test_cli_tool_nan_image_and_traceback_on_request(tmp_path: Path) -> None:
    data = write_kits19(tmp_path / "kits", num_cases=2)
    edit_image(data / "case_00001" / "imaging.nii.gz", lambda a: np.where(a > 0, np.nan, a))
    args = [str(data), "--out", str(tmp_path / "i.json")]
    assert_one_line(run_command(args, module="dast_components.data.intensity"), "case_00001", "NaN")
    proc = run_command(args, module="dast_components.data.intensity", env={"DAST_TRACEBACK": "1"})
    assert proc.returncode == 1 and "Traceback (most recent call last)" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1].startswith("dast_components.data.checks.DataError: image")
    assert not (tmp_path / "i.json").exists()


def test_other_errors_keep_their_traceback() -> None:
    proc = run_command(["-c", "import dast_components; raise RuntimeError('a bug')"], module="")
    assert proc.returncode == 1 and "Traceback" in proc.stdout and "RuntimeError: a bug" in proc.stdout


# ------------------------------------------------------------------ the bundle commands, as a user runs them


def _kits_cmd(tmp_path: Path, command: str, configs: list[str], data: Path, *extra: str) -> list[str]:
    files = "[" + ",".join(f"'{config_path(c)}'" for c in configs) + "]"
    arch = write_tiny_arch(tmp_path / "arch.json")
    return ["run", command, "--config_file", files, "--meta_file", config_path("metadata"), "--bundle_root",
            str(tmp_path / "bundle"), "--dataset_dir", str(data), "--arch_file", str(arch), "--num_workers", "0",
            *extra]


@pytest.mark.slow
def test_training_nan_image(tmp_path: Path) -> None:
    data = write_kits19(tmp_path / "kits", num_cases=5)
    edit_image(data / "case_00003" / "imaging.nii.gz", lambda a: np.where(a > 200, np.nan, a))
    proc = run_command(_kits_cmd(tmp_path, "training", ["train", "quick"], data, "--device", "cpu"))
    assert_one_line(proc, "case_00003", "NaN")
    assert written(tmp_path / "bundle") == []


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_training_cuda_without_cuda(tmp_path: Path) -> None:
    data = write_kits19(tmp_path / "kits", num_cases=5)
    proc = run_command(_kits_cmd(tmp_path, "training", ["train", "quick"], data, "--device", "cuda"))
    assert_one_line(proc, "device 'cuda'", "--device cpu")
    assert written(tmp_path / "bundle") == [] and not list(data.glob("dast_*"))


@pytest.mark.slow
def test_evaluating_weights_of_another_architecture(tmp_path: Path) -> None:
    data = write_kits19(tmp_path / "kits", num_cases=5)
    weights = write_weights(tmp_path / "w" / "model_fold0.pt", write_tiny_arch(tmp_path / "other.json", seed=7))
    proc = run_command(_kits_cmd(tmp_path, "evaluating", ["train", "evaluate", "quick"], data, "--device", "cpu",
                                 "--ckpt_dir", str(weights.parent), "--intensity", "{'lower': 0, 'upper': 200}"))
    line = assert_one_line(proc, "do not fit", "parameter(s)")
    assert len(line) < 1500
    assert written(tmp_path / "bundle") == []


@pytest.mark.slow
def test_inference_folder_with_one_bad_file(tmp_path: Path) -> None:
    import nibabel as nib

    inputs = tmp_path / "in"
    inputs.mkdir()
    nib.save(nib.Nifti1Image(np.zeros((40, 40, 40), np.float32), np.eye(4)), str(inputs / "a.nii.gz"))
    (inputs / "b.nii.gz").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(300))
    weights = write_weights(tmp_path / "w" / "model.pt", write_tiny_arch(tmp_path / "arch.json"))
    proc = run_command(_kits_cmd(tmp_path, "inference", ["inference", "quick"], inputs, "--device", "cpu",
                                 "--ckpt_path", str(weights), "--output_dir", str(tmp_path / "pred"),
                                 "--intensity", "{'lower': 0, 'upper': 200}"))
    assert_one_line(proc, "b.nii.gz", "cannot read input image")
    assert written(tmp_path / "pred") == []


@pytest.mark.slow
def test_search_output_not_writable(tmp_path: Path) -> None:
    from dast_components.data import write_dataset

    data = write_dataset(tmp_path / "msd", num_cases=4, shape=(32, 32, 32))
    (tmp_path / "a_file").write_text("")
    files = f"['{search_config_path('search')}','{search_config_path('quick')}']"
    proc = run_command(["run", "search", "--config_file", files, "--meta_file", search_config_path("metadata"),
                        "--bundle_root", str(tmp_path / "bundle"), "--dataset_dir", str(data), "--device", "cpu",
                        "--output_dir", str(tmp_path / "a_file" / "eval")])
    assert_one_line(proc, "output_dir", "a_file")
    assert written(tmp_path / "bundle") == []
