#!/usr/bin/env bash
# Creates a fresh virtual environment holding only what a bundle's configs/metadata.json lists, installed the way
# the Model Zoo's CI does (ci/get_bundle_requirements.py: monai==monai_version, torch==pytorch_version,
# numpy==numpy_version and NAME==VERSION of required_packages_version; then `pip install -r`). Nothing of this
# repository is installed: the bundle's code comes from its release zip.
#
# Besides the environment, VENV/extras gets (with `pip install --target`, so that the environment itself stays as the
# metadata says) what the Model Zoo's CI adds for its checks (jsonschema, from its requirements-dev.txt) and what
# the ONNX export and its comparison need (onnx, onnxruntime). Put it on PYTHONPATH only for those steps.
#
# Usage: tests/standalone/make_env.sh BUNDLE_DIR VENV_DIR     (PYTHON=python3 may be set)
# Rerunning is cheap: the environment is rebuilt only when this script or the bundle's metadata changes.
set -euo pipefail
unset PYTHONPATH PYTHONHOME VIRTUAL_ENV  # nothing of the calling environment (e.g. this repository) may leak in

BUNDLE="$1"
VENV="$2"
PYTHON="${PYTHON:-python3}"
META="$BUNDLE/configs/metadata.json"
STAMP="$VENV/.dast_env_stamp"
WANT="$(cat "$0" "$META" | sha256sum | cut -d' ' -f1)"

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
    echo "bundle environment up to date: $VENV"
    exit 0
fi
if [[ -e "$VENV" && ! -f "$VENV/pyvenv.cfg" ]]; then
    echo "$VENV exists and is not a virtual environment; not replacing it" >&2
    exit 1
fi
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
REQ="$VENV/requirements.txt"
# the Model Zoo's get_bundle_requirements.py, restated (its file is not part of this repository)
"$PYTHON" - "$META" > "$REQ" <<'PY'
import json, sys
meta = json.load(open(sys.argv[1]))
print(f"monai=={meta['monai_version']}")
print(f"torch=={meta['pytorch_version']}")
print(f"numpy=={meta['numpy_version']}")
for key in ("optional_packages_version", "required_packages_version"):
    for name, version in meta.get(key, {}).items():
        print(f"{name}=={version}")
PY
echo "requirements from $META:"; cat "$REQ"
PIP=("$VENV/bin/python" -m pip install --quiet)
"${PIP[@]}" --upgrade pip
TORCH="$(grep '^torch==' "$REQ")"
"${PIP[@]}" "$TORCH"  # first, alone: the CPU build where the machine has it, never an unpinned CUDA download
"${PIP[@]}" -r "$REQ"
NUMPY="$(grep '^numpy==' "$REQ")"
"${PIP[@]}" --target "$VENV/extras" "jsonschema>=4" "onnx" "onnxruntime" "$NUMPY"
"$VENV/bin/python" -m pip list --format=freeze > "$VENV/installed.txt"
echo "$WANT" > "$STAMP"
echo "bundle environment ready: $VENV"
