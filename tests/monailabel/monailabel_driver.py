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
"""Drive MONAI Label 0.8.5's ``monaibundle`` task classes headless on a bundle, as the app's server would.

Runs with the MONAI Label environment's Python (``tests/monailabel/make_env.sh``), never the main one::

    .venv-monailabel/bin/python tests/monailabel/monailabel_driver.py --check_imports
    .venv-monailabel/bin/python tests/monailabel/monailabel_driver.py --bundle B --studies S --out result.json

With ``--bundle``: opens ``S`` as a ``LocalDatastore`` (images ``S/*.nii.gz``, final labels
``S/labels/final/*.nii.gz``), builds ``BundleInferTask(B)`` like ``monaibundle``'s ``init_infers`` and segments the
first image; builds ``BundleTrainTask(B)`` like ``init_trainers`` and trains ``--max_epochs`` epochs on the labelled
images (single process, CPU); then segments again with the same task object, as a running server would. Writes what
it observed (labels, label file geometry and values, the training log, the weights before/after, the network and the
intensity window used after training) as JSON to ``--out``; the pytest side (``test_monailabel.py``) judges it.

torchvision: ``monailabel.transform.post`` (imported by ``BundleInferTask``) imports ``torchvision.utils.make_grid``
and ``save_image`` at module level, for its pathology transforms only. PyPI's Linux torchvision wheels for torch
2.13 are CUDA builds that do not import beside the CPU torch (``operator torchvision::nms does not exist``), and
the CPU builds are not on PyPI. When a working torchvision is installed it is used; otherwise this driver registers
a placeholder ``torchvision.utils`` whose two functions raise when called, so any code path that really needed
torchvision would fail loudly instead of passing. Radiology bundle inference and training never call them.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.machinery
import json
import logging
import os
import sys
import types
from pathlib import Path
from typing import Any

__all__ = ["check_imports", "drive", "ensure_torchvision"]

logger = logging.getLogger("monailabel_driver")


def ensure_torchvision() -> str:
    """Import torchvision, or register the placeholder described in the module docstring.

    Returns:
        ``"torchvision <version>"`` or ``"placeholder"``.
    """
    try:
        import torchvision  # noqa: F401

        return f"torchvision {torchvision.__version__}"
    except (ImportError, RuntimeError) as err:
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        reason = f"torchvision is not importable here ({type(err).__name__}: {err})"

    def _unavailable(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"{reason}; this MONAI Label test environment has no torchvision.")

    package = types.ModuleType("torchvision")
    package.__spec__ = importlib.machinery.ModuleSpec("torchvision", None, is_package=True)
    package.__path__ = []
    utils = types.ModuleType("torchvision.utils")
    utils.__spec__ = importlib.machinery.ModuleSpec("torchvision.utils", None)
    utils.make_grid = _unavailable
    utils.save_image = _unavailable
    package.utils = utils
    sys.modules["torchvision"] = package
    sys.modules["torchvision.utils"] = utils
    return "placeholder"


def check_imports() -> dict[str, str]:
    """Import what the ``monaibundle`` app's tasks need; return the versions found."""
    tv = ensure_torchvision()
    import monai
    import monailabel
    import numpy
    import torch
    from monailabel.datastore.local import LocalDatastore  # noqa: F401
    from monailabel.tasks.infer.bundle import BundleInferTask  # noqa: F401
    from monailabel.tasks.train.bundle import BundleTrainTask  # noqa: F401

    import dast_components.networks  # noqa: F401

    return {
        "monailabel": monailabel.__version__,
        "monai": monai.__version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "torchvision": tv,
    }


def _md5(path: Path) -> str | None:
    return hashlib.md5(path.read_bytes()).hexdigest() if path.is_file() else None


def _label_summary(label_file: str, image_file: str) -> dict[str, Any]:
    import nibabel as nib
    import numpy as np

    label, image = nib.load(label_file), nib.load(image_file)
    values = np.asarray(label.dataobj)
    return {
        "file": label_file,
        "shape": list(label.shape),
        "image_shape": list(image.shape),
        "affine_max_diff": float(np.abs(label.affine - image.affine).max()),
        "values": sorted(int(v) for v in np.unique(values)),
    }


def _window(task: Any) -> list[float] | None:
    """The intensity window (HU) the task's preprocessing would apply to the next request."""
    from monai.transforms import ScaleIntensityRanged

    for t in task.pre_transforms({"device": "cpu"}):
        if isinstance(t, ScaleIntensityRanged):
            return [float(t.scaler.a_min), float(t.scaler.a_max)]
        if callable(getattr(t, "window", None)):  # dast_components.transforms.ScaleIntensityFromCheckpointd
            w = t.window()
            return [float(w["lower"]), float(w["upper"])]
    return None


def _network_matches(task: Any, checkpoint: dict[str, Any]) -> bool:
    """Whether the network the task holds for ``cpu`` has exactly the weights of ``checkpoint`` (a state dict)."""
    import torch

    network = task._networks["cpu"][0]  # BasicInferTask's per-device cache: (network, mtime)
    state = network.state_dict()
    return set(state) == set(checkpoint) and all(torch.equal(state[k].cpu(), checkpoint[k]) for k in state)


def _infer(task: Any, datastore: Any, image_id: str) -> dict[str, Any]:
    image = datastore.get_image_uri(image_id)
    # what MONAILabelApp.infer passes on: the image path, the model name and the device
    label_file, result = task({"model": "dast_kits19_seg", "image": image, "device": "cpu"})
    summary = _label_summary(label_file, image)
    summary["result_json"] = {k: v for k, v in (result or {}).items() if isinstance(v, (int, float, str, list, dict))}
    os.remove(label_file)
    return summary


def drive(bundle: Path, studies: Path, max_epochs: int = 1, val_split: float = 0.34) -> dict[str, Any]:
    """Infer, train, infer again with the ``monaibundle`` app's task classes.

    Args:
        bundle: bundle folder (as it would sit in ``<app>/model/<name>``).
        studies: ``LocalDatastore`` folder.
        max_epochs: epochs of the training request.
        val_split: validation share of the training request.

    Returns:
        the observations (JSON-serialisable).
    """
    out: dict[str, Any] = {"versions": check_imports()}
    import torch
    from monailabel.datastore.local import LocalDatastore
    from monailabel.tasks.infer.bundle import BundleInferTask
    from monailabel.tasks.train.bundle import BundleTrainTask

    datastore = LocalDatastore(str(studies), extensions=("*.nii.gz", "*.nii"), auto_reload=False)
    out["datastore"] = {"images": len(datastore.list_images()), "labeled": len(datastore.get_labeled_images())}

    conf = {"preload": "false"}  # what `--conf` would hold; BundleInferTask reads 'preload'
    infer = BundleInferTask(str(bundle), conf)
    out["infer_valid"] = infer.is_valid()
    info = infer.info()
    out["infer_info"] = {"type": str(info["type"]), "labels": info["labels"], "dimension": info["dimension"],
                         "version": info.get("version"), "model_filename": info["config"].get("model_filename")}
    image_id = sorted(datastore.list_images())[0]
    out["infer_before"] = _infer(infer, datastore, image_id)
    out["window_before"] = _window(infer)

    model_pt = bundle / "models" / "model.pt"
    out["weights_before"] = _md5(model_pt)
    train = BundleTrainTask(str(bundle), conf)
    out["train_valid"] = train.is_valid()
    options = train.config()
    out["train_options"] = {k: options[k] for k in ("max_epochs", "val_split", "model_filename", "pretrained")}
    request = {
        "model": "dast_kits19_seg",
        "device": "cpu",
        "max_epochs": max_epochs,
        "val_split": val_split,
        "multi_gpu": False,
        "pretrained": True,
        "model_filename": options["model_filename"],
    }
    train(request, datastore)
    out["weights_after"] = _md5(model_pt)
    ckpt = torch.load(model_pt, map_location="cpu", weights_only=True)
    out["checkpoint_plain"] = all(isinstance(v, torch.Tensor) for v in ckpt.values())
    record = bundle / "models" / "model.json"
    out["checkpoint_intensity"] = json.loads(record.read_text()).get("intensity") if record.is_file() else None
    logs = sorted((bundle / "eval").glob("training_log*.csv"))
    out["training_log"] = logs[0].read_text().splitlines() if logs else []

    # the same task object, as in a running server: it reloads a network whose file changed (mtime)
    out["infer_after"] = _infer(infer, datastore, image_id)
    out["network_matches_checkpoint_after"] = _network_matches(infer, ckpt)
    out["window_after"] = _window(infer)
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line entry (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check_imports", action="store_true", help="only import the task classes, print versions")
    parser.add_argument("--bundle", type=Path, help="bundle folder")
    parser.add_argument("--studies", type=Path, help="LocalDatastore folder")
    parser.add_argument("--out", type=Path, help="JSON file for the observations")
    parser.add_argument("--max_epochs", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.check_imports:
        print(json.dumps(check_imports()))
        return 0
    if not (args.bundle and args.studies and args.out):
        parser.error("--bundle, --studies and --out are required (or --check_imports)")
    result = drive(args.bundle, args.studies, max_epochs=args.max_epochs)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
