#!/usr/bin/env bash
# The committed figures of figures/mnist-even-odd/ and figures/cifar10-animal-vehicle/:
# two small CPU runs (MAXL and single-task), then `maxl visualise` and `maxl compare` on them.
#
#   experiments/generated_labels.sh [DATA_ROOT] [RUNS]
#
# DATA_ROOT holds MNIST/raw and cifar10-jpeg/{train,test}/<class>/*.jpg (default /tmp/data);
# run folders go to RUNS (default /tmp/runs/issue6), outside git; only PNGs and agreement.json
# are copied into figures/. One thread per process: on a shared 2-core machine that is several
# times faster than oversubscribed OpenMP threads.
set -euo pipefail
DATA=${1:-/tmp/data}
RUNS=${2:-/tmp/runs/issue6}
PYTHON=${PYTHON:-python}
export OMP_NUM_THREADS=1
cd "$(dirname "$0")/.."

collect() {  # collect RUN_DIR FIGURE_DIR: copy the figures worth committing
    mkdir -p "$2"
    cp "$1"/figures/{topk-0,topk-1,embedding,contingency,label-usage,curves}.png "$1"/figures/agreement.json "$2"/
}

# MNIST: even / odd digits primary, 5 generated auxiliary classes per primary class (psi = [5, 5]),
# the digits as the human auxiliary labels for NMI / ARI / purity.
$PYTHON -m maxl train --dataset mnist --data-root "$DATA" --hierarchy even-odd --method maxl single --psi 5 \
    --train-subset 10000 --backbone tiny-cnn --epochs 5 --momentum 0.9 --gen-lr 0.01 --out "$RUNS/mnist"
$PYTHON -m maxl visualise "$RUNS/mnist/maxl" --against "$RUNS/mnist/single" --threads 1
$PYTHON -m maxl compare "$RUNS/mnist/maxl" "$RUNS/mnist/single" --out figures/mnist-even-odd/compare.png
collect "$RUNS/mnist/maxl" figures/mnist-even-odd
