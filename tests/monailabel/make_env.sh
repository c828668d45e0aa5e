#!/usr/bin/env bash
# Creates the MONAI Label test environment (default .venv-monailabel at the repository root; git-ignored).
#
# monailabel 0.8.5 cannot share the main .venv: it needs numpy<2 and jsonschema<4, and a plain
# `pip install monailabel==0.8.5` pulls monai[all extras], torchvision, sam2 and an unpinned torch (a multi-GB CUDA
# download whose torchvision then fails beside the CPU torch). So: the pinned CPU torch first, then monailabel
# without dependencies plus only what importing the monaibundle app's task classes needs.
#
# Usage: tests/monailabel/make_env.sh [VENV_DIR]    (PYTHON=python3.11 TORCH_VERSION=2.13.0 may be set)
# Rerunning is cheap: the environment is rebuilt only when this script changes (stamp file).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
VENV="${1:-$ROOT/.venv-monailabel}"
PYTHON="${PYTHON:-python3}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
STAMP="$VENV/.dast_env_stamp"
WANT="$(sha256sum "$0" | cut -d' ' -f1) torch=$TORCH_VERSION"

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
    echo "MONAI Label environment up to date: $VENV"
    exit 0
fi

if [[ -e "$VENV" && ! -f "$VENV/pyvenv.cfg" ]]; then
    echo "$VENV exists and is not a virtual environment; not replacing it" >&2
    exit 1
fi
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --quiet)

"${PIP[@]}" --upgrade pip
"${PIP[@]}" "torch==$TORCH_VERSION"
"${PIP[@]}" --no-deps "monailabel==0.8.5" "monai==1.6.1"
# What importing monailabel's LocalDatastore, BundleInferTask and BundleTrainTask (and running them) needs, found by
# importing them in a bare environment: settings (pydantic), datastore (filelock, watchdog, expiring dicts), the
# label writer (itk-io, pynrrd) and post transforms (scikit-image, shapely); monai's engines (ignite) and NIfTI
# (nibabel); dast_components (scipy, pyyaml, fire, tqdm). The second line is what `monailabel apps` and
# `monailabel start_server` import (uvicorn, auth, DICOM/girder datastores; pydicom-seg needs pydicom<3 and so
# dicomweb-client<0.60). torch is repeated so that nothing replaces the CPU build.
# Not installed: torchvision (see monailabel_driver.py), sam2, mlflow, openslide.
"${PIP[@]}" "torch==$TORCH_VERSION" \
    "numpy>=1.24,<2" "jsonschema<4" \
    "fastapi>=0.110.2" "pydantic>=2.7.0" "pydantic-settings>=2.2.1" "python-dotenv>=1.0.1" \
    "expiringdict>=1.2.2" "expiring_dict>=1.1.0" "cachetools>=5.3.3" "watchdog>=4.0.0" "filelock>=3.11.0" \
    "requests>=2.31.0" "itk-io>=5.3" "pynrrd>=1.0.0" "scikit-image>=0.22" "shapely>=2.0.4" \
    "pytorch-ignite>=0.4.11" "nibabel>=5.0" "scipy>=1.10" "pyyaml>=6.0" "fire>=0.5" "tqdm>=4.60" \
    "uvicorn>=0.29.0" "python-multipart>=0.0.9" "pyjwt>=2.8.0" "passlib>=1.7.4" "schedule>=1.2.1" \
    "timeloop>=1.0.2" "psutil" "girder-client>=3.2.3" "pydicom>=2.4.4,<3" "pydicom-seg>=0.4.1" \
    "dicomweb-client[gcp]>=0.59.1,<0.60"
# the project itself; its own requirements (numpy 2, jsonschema 4) must not leak in
"${PIP[@]}" --no-deps -e "$ROOT"

"$VENV/bin/python" "$ROOT/tests/monailabel/monailabel_driver.py" --check_imports
PYTHONPATH="$ROOT/tests/monailabel/torchvision_placeholder" "$VENV/bin/python" -c "import monailabel.main, monailabel.app"
echo "$WANT" > "$STAMP"
echo "MONAI Label environment ready: $VENV"
