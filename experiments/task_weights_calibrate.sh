#!/usr/bin/env bash
# Calibration of the task-weights protocol (issue 23): does any fixed combination of rotation and
# colourisation beat the primary task alone once single-task is trained out? CIFAR-10 JPEGs,
# 10-class primary task, 2000 stratified training images of which 400 are carved off as the
# validation set, 2000 test images, cnn3, 30 epochs, one-cycle SGD (lr 0.05, momentum 0.9, weight
# decay 5e-4, batch 32), one thread. Configurations (CONFIGS, default all), seeds (SEEDS, default 0 1 2):
#   single          the primary task alone
#   equal           + rotation (one random rotation per image) + colourisation, every weight 1
#   rotation        + rotation only
#   colourisation   + colourisation only
#   auto-lambda     + both, Auto-λ (weights from 1, Adam lr 0.01, 200 of the 1600 training images
#                   held out for the weights' outer loss, exact jvp meta-gradient)
#   ol-aux          + both, OL-AUX at its defaults
#   auxilearn       + both, AuxiLearn (linear) at its defaults, 200 images held out
#   rotation-W      + rotation only, its weight W (the validation grid: W in 0.1 0.3 1 3)
#   colourisation-W + colourisation only, its weight W
#   both-WR-WC      + both, weights WR (rotation) and WC (colourisation)
# Then: python experiments/task_weights_report.py RUNS figures/task-weights-cifar10-30ep.md --protocol 30-epoch
#
#   mkdir -p /tmp/data && tar xzf /work/shared/data/cifar10-jpeg.tar.gz -C /tmp/data
#   bash experiments/task_weights_calibrate.sh /tmp/data/cifar10-jpeg runs/task-weights-30ep
set -euo pipefail
root=${1:?the cifar10-jpeg folder, holding train/ and test/}
out=${2:-runs/task-weights-30ep}
read -r -a configs <<< "${CONFIGS:-single equal rotation colourisation auto-lambda ol-aux}"
read -r -a seeds <<< "${SEEDS:-0 1 2}"
common=(--dataset imagefolder --data-root "$root" --backbone cnn3 --train-subset 2000 --val-subset 400
  --test-subset 2000 --epochs 30 --lr 0.05 --momentum 0.9 --weight-decay 5e-4 --lr-schedule onecycle
  --batch-size 32 --threads 1 --no-progress)
both=(--aux rotation --aux colourisation --rotation-mode random)
for seed in "${seeds[@]}"; do
  for config in "${configs[@]}"; do
    dir="$out/$config/seed$seed"
    [[ -f "$dir/summary.json" ]] && continue
    case $config in
      single) extra=() ;;
      equal) extra=("${both[@]}") ;;
      rotation) extra=(--aux rotation --rotation-mode random) ;;
      colourisation) extra=(--aux colourisation) ;;
      auto-lambda) extra=("${both[@]}" --weighting auto-lambda --weight-init 1 --weight-lr 0.01 --weight-split 200) ;;
      ol-aux) extra=("${both[@]}" --weighting ol-aux) ;;
      auxilearn) extra=("${both[@]}" --weighting auxilearn --weight-split 200) ;;
      rotation-*) extra=(--aux rotation --rotation-mode random --aux-weight "rotation=${config#rotation-}") ;;
      colourisation-*) extra=(--aux colourisation --aux-weight "colourisation=${config#colourisation-}") ;;
      both-*-*) w=${config#both-}
        extra=("${both[@]}" --aux-weight "rotation=${w%-*}" --aux-weight "colourisation=${w#*-}") ;;
      *) echo "unknown configuration: $config" >&2; exit 2 ;;
    esac
    python -m maxl train "${common[@]}" --method single --seed "$seed" "${extra[@]}" --out "$dir"
  done
done
