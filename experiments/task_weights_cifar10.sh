#!/usr/bin/env bash
# A small CPU calibration of meta-learned task weights (issue 23, stage 6): CIFAR-10 JPEGs, 10-class
# primary task, 2000 stratified training images of which 400 are carved off as the validation set,
# cnn3, rotation (one random rotation per image) + colourisation, 6 epochs, seeds 0 1 2, one thread:
#   single        the primary task alone
#   equal         + rotation + colourisation, every weight 1
#   auto-lambda   + rotation + colourisation, Auto-λ (weights from 1, Adam lr 0.01, 200 of the 1600
#                 training images held out for the weights' outer loss, exact jvp meta-gradient)
# Then: python experiments/task_weights_report.py RUNS figures/task-weights-cifar10.md
#
#   mkdir -p /tmp/data && tar xzf /work/shared/data/cifar10-jpeg.tar.gz -C /tmp/data
#   bash experiments/task_weights_cifar10.sh /tmp/data/cifar10-jpeg runs/task-weights-cifar10
set -euo pipefail
root=${1:?the cifar10-jpeg folder, holding train/ and test/}
out=${2:-runs/task-weights-cifar10}
common=(--dataset imagefolder --data-root "$root" --backbone cnn3 --train-subset 2000 --val-subset 400
  --test-subset 2000 --epochs 6 --lr 0.05 --momentum 0.9 --batch-size 32
  --threads 1 --no-progress)
aux=(--aux rotation --aux colourisation --rotation-mode random)
for seed in 0 1 2; do
  for config in single equal auto-lambda; do
    dir="$out/$config/seed$seed"
    [[ -f "$dir/summary.json" ]] && continue
    case $config in
      single) extra=() ;;
      equal) extra=("${aux[@]}") ;;
      auto-lambda) extra=("${aux[@]}" --weighting auto-lambda --weight-init 1 --weight-lr 0.01 --weight-split 200) ;;
    esac
    python -m maxl train "${common[@]}" --method single --seed "$seed" "${extra[@]}" --out "$dir"
  done
done
