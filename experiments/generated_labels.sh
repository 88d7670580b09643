#!/usr/bin/env bash
# The committed figures of figures/mnist-even-odd/ and figures/cifar10-animal-vehicle/:
# two small CPU runs (MAXL and single-task), then `maxl visualise` and `maxl compare` on them.
#
#   experiments/generated_labels.sh [DATA_ROOT] [RUNS]
#
# DATA_ROOT holds MNIST/raw and cifar10-jpeg/{train,test}/<class>/*.jpg (default /tmp/data);
# run folders go to RUNS (default /tmp/runs/issue6), outside git; only PNGs and agreement.json
# are copied into figures/. One thread per process: on a shared 2-core machine that is several
# times faster than oversubscribed OpenMP threads. SKIP_TRAIN=1 only re-draws the figures.
set -euo pipefail
DATA=${1:-/tmp/data}
RUNS=${2:-/tmp/runs/issue6}
PYTHON=${PYTHON:-python}
export OMP_NUM_THREADS=1
cd "$(dirname "$0")/.."

train() {  # SKIP_TRAIN=1 re-draws the figures from existing run folders
    if [ -z "${SKIP_TRAIN:-}" ]; then $PYTHON -m maxl train "$@"; fi
}

collect() {  # collect RUN_DIR FIGURE_DIR: copy the figures worth committing
    mkdir -p "$2"
    cp "$1"/figures/{topk-0,topk-1,embedding,contingency,label-usage,curves}.png "$1"/figures/agreement.json "$2"/
}

# MNIST: even / odd digits primary, 5 generated auxiliary classes per primary class (psi = [5, 5]),
# the digits as the human auxiliary labels for NMI / ARI / purity.
train --dataset mnist --data-root "$DATA" --hierarchy even-odd --method maxl single --psi 5 \
    --train-subset 10000 --backbone tiny-cnn --epochs 5 --momentum 0.9 --gen-lr 0.01 --out "$RUNS/mnist"
$PYTHON -m maxl visualise "$RUNS/mnist/maxl" --against "$RUNS/mnist/single" --threads 1
collect "$RUNS/mnist/maxl" figures/mnist-even-odd

# CIFAR-10 as JPEG files: animal / vehicle primary, psi = [6, 4] (the human hierarchy),
# the ten classes as the human auxiliary labels.
train --dataset imagefolder --data-root "$DATA/cifar10-jpeg" --hierarchy animal-vehicle \
    --method maxl single --train-subset 5000 --backbone tiny-cnn --epochs 5 --momentum 0.9 --gen-lr 0.01 \
    --out "$RUNS/cifar10-av"
$PYTHON -m maxl visualise "$RUNS/cifar10-av/maxl" --against "$RUNS/cifar10-av/single" --threads 1
collect "$RUNS/cifar10-av/maxl" figures/cifar10-animal-vehicle

# All four runs on one figure, and the untrained-generator control.
$PYTHON -m maxl compare "$RUNS/mnist/maxl" "$RUNS/mnist/single" "$RUNS/cifar10-av/maxl" "$RUNS/cifar10-av/single" \
    --out figures/compare-mnist-cifar10.png
PYTHONPATH=. $PYTHON experiments/init_generator_agreement.py "$RUNS/mnist/maxl" "$RUNS/cifar10-av/maxl" \
    --out figures/init-generator-agreement.json
