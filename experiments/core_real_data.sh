#!/usr/bin/env bash
# Single task vs MAXL on real data, CPU-sized (the MAXL core issue's real-input check).
#   bash experiments/core_real_data.sh DATA_ROOT OUT
# DATA_ROOT holds MNIST/raw/*.gz and cifar10-jpeg/{train,test}/<class>/*.jpg (writable: MNIST is
# unzipped in place, the decoded JPEGs are cached there), e.g.
#   mkdir -p /tmp/data && cp -r ../shared/data/MNIST /tmp/data/ && tar xzf ../shared/data/cifar10-jpeg.tar.gz -C /tmp/data
set -euo pipefail
root=${1:?DATA_ROOT}; out=${2:-runs/core}
python -m maxl train --dataset mnist --data-root "$root" --method single maxl --train-subset 20000 --epochs 3 \
    --no-progress --out "$out/mnist"
python -m maxl train --dataset imagefolder --data-root "$root/cifar10-jpeg" --hierarchy animal-vehicle \
    --method single maxl --backbone small-cnn --train-subset 10000 --epochs 5 --no-progress \
    --out "$out/cifar10-animal-vehicle"
