#!/usr/bin/env bash
# `make demo`: the whole DAST pipeline on synthetic CT phantoms, with the same commands you would run on real data.
# search (dast_search, quick overlay) -> retrain (dast_kits19_seg) -> evaluate (KiTS19 metric) -> infer -> pictures.
# Outputs go to $DEMO_DIR (default demo_output); the bundles in the repository are not modified.
set -euo pipefail
PY=${PY:-python}
OUT=${DEMO_DIR:-demo_output}
S=bundles/dast_search/configs
K=bundles/dast_kits19_seg/configs
mkdir -p "$OUT"
step() { printf '\n== %s\n' "$*"; }

step "1/6 synthetic data: 8 MSD-layout cases for the search, 8 KiTS19-layout cases for retraining"
$PY -m dast_components.data.synthetic --layout msd --num_cases 8 --out "$OUT/data_msd"
$PY -m dast_components.data.synthetic --layout kits19 --num_cases 8 --out "$OUT/data_kits19" --seed 1

step "2/6 architecture search (bundles/dast_search, quick overlay)"
$PY -m monai.bundle run search --config_file "['$S/search.json','$S/quick.json']" \
    --bundle_root bundles/dast_search --dataset_dir "$OUT/data_msd" \
    --ckpt_dir "$OUT/search/models" --output_dir "$OUT/search/eval" --device cpu
ARCH="$OUT/search/models/arch_code.json"

step "3/6 retraining the searched architecture (bundles/dast_kits19_seg, quick overlay, fold 0)"
KB="$OUT/kits19_bundle"
mkdir -p "$KB/models"
COMMON=(--bundle_root "$KB" --dataset_dir "$OUT/data_kits19" --arch_file "$ARCH" --device cpu)
$PY -m monai.bundle run training --config_file "['$K/train.json','$K/quick.json']" "${COMMON[@]}"

step "4/6 evaluation on the validation fold in original geometry (KiTS19 metric)"
$PY -m monai.bundle run evaluating --config_file "['$K/train.json','$K/evaluate.json','$K/quick.json']" "${COMMON[@]}"

step "5/6 inference: masks in each input's original array order, shape and affine"
$PY -m monai.bundle run inference --config_file "['$K/inference.json','$K/quick.json']" "${COMMON[@]}"

step "6/6 pictures: searched architecture, attention of one transformer op, curves"
$PY -m dast_components.visualize arch --arch_file "$ARCH" --out "$OUT/arch.png" --patch_size 32
$PY -m dast_components.visualize attention --bundle_root "$KB" --arch_file "$ARCH" \
    --image "$OUT/data_kits19/case_00000/imaging.nii.gz" --out "$OUT/attention" --device cpu
$PY -m dast_components.visualize curves --runs "search=$OUT/search/eval/metrics.csv" \
    "retrain=$KB/eval/training_log_fold0.csv" --out "$OUT/curves.png"

step "done"
echo "architecture: $ARCH ($OUT/arch.png)"
echo "KiTS19 metric: $KB/eval/kits19_fold0_summary.json (per case: $KB/eval/kits19_fold0_per_case.csv)"
echo "predictions:   $KB/eval/predictions/"
echo "pictures:      $OUT/arch.png $OUT/attention/ $OUT/curves.png"
