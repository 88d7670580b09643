#!/usr/bin/env bash
# Calibration and comparison of auxiliary-task weights (issue 23): does any fixed combination of the
# auxiliary tasks beat the primary task alone once single-task is trained out, and then which weighting
# finds it? Two protocols (PROTOCOL, default cifar10):
#
#   cifar10     CIFAR-10 JPEGs, 10-class primary task, 2000 stratified training images of which 400 are
#               carved off as the validation set, 2000 test images, cnn3, 30 epochs, one-cycle SGD (lr
#               0.05, momentum 0.9, weight decay 5e-4, batch 32). Auxiliary tasks: rotation (one random
#               rotation per image) and colourisation.
#   mnist-long  MNIST, even / odd primary task, 1800 stratified training images of which 1000 are carved
#               off as the validation set, 2000 test images, cnn3, 60 epochs, one-cycle SGD (lr 0.1, no
#               momentum, batch 100), cross-entropy: the generated-labels protocol `protocol-mnist-long`
#               (maxl/grids/protocol-mnist-long.toml), in which the digits help. Auxiliary tasks: the digits
#               (the human hierarchy, psi = [5, 5], task `human`) and rotation (one random rotation per
#               image).
#   animal-vehicle  CIFAR-10 JPEGs, animal / vehicle primary task, 3000 stratified training images of which
#               1000 are carved off as the validation set, 2000 test images, cnn3, 30 epochs, one-cycle SGD
#               (lr 0.1, no momentum, batch 100), cross-entropy (the architectures table's optimiser,
#               experiments/architectures.py). Auxiliary tasks: the ten CIFAR-10 classes (the human
#               hierarchy, psi = [6, 4], task `human`) and rotation (one random rotation per image).
#
# BACKBONE (default cnn3) replaces the protocol's backbone (e.g. BACKBONE=resnet20: the residual backbone
# the issue asks for beside cnn3); keep its runs in their own RUNS folder.
# One thread per run. Configurations (CONFIGS), seeds (SEEDS, default 0 1 2); A and B below are the
# protocol's two auxiliary tasks (cifar10: rotation, colourisation; mnist-long, animal-vehicle: human, rotation):
#   single          the primary task alone
#   equal           + A + B, every weight 1
#   A, B            + that task alone (rotation, colourisation, human)
#   A-W, B-W        + that task alone at weight W (the validation grid: W in 0.1 0.3 1 3)
#   both-WA-WB      + A + B at weights WA and WB
#   auto-lambda     + A + B, Auto-λ (weights from 1, Adam lr 0.01, 200 of the training images held out
#                   for the weights' outer loss, fused step)
#   auxilearn       + A + B, AuxiLearn (linear) at its defaults, 200 images held out
#   auxilearn-nonlinear, ol-aux, uncertainty, dwa, gradnorm, pcgrad, gcs, mgda, dtp, ...
#                   + A + B with that weighting at its defaults
#   maxl            the primary task + MAXL's generated labels (psi of the protocol), equal weights
#   maxl-auto-lambda  the same with Auto-λ on the generated-labels task
#   NAME-s0         a meta-learned config NAME with --weight-split 0: no images held out, the weights'
#                   outer loss on the training images (Auto-λ's reference practice)
#   NAME-lrX        a meta-learned config NAME with --weight-lr X (before -s0: auto-lambda-lr0.001-s0)
#   NAME-initX      the auxiliary tasks' weights start at X (--weighting-option init=X; after -lrX, before
#                   -s0: ol-aux-sgd-lr0.3-init3)
#   NAME-sgd        the weights take plain gradient steps, not Adam's (before -lrX: ol-aux-sgd-lr0.3)
# Then: python experiments/task_weights_report.py RUNS OUT.md --protocol 30-epoch | mnist-long | animal-vehicle
#
#   mkdir -p /tmp/data && tar xzf /work/shared/data/cifar10-jpeg.tar.gz -C /tmp/data
#   bash experiments/task_weights_calibrate.sh /tmp/data/cifar10-jpeg runs/task-weights-30ep
#   mkdir -p /tmp/data && cp -r /work/shared/data/MNIST /tmp/data/
#   PROTOCOL=mnist-long bash experiments/task_weights_calibrate.sh /tmp/data runs/task-weights-mnist-long
#   PROTOCOL=animal-vehicle bash experiments/task_weights_calibrate.sh /tmp/data/cifar10-jpeg runs/task-weights-av
set -euo pipefail
root=${1:?the data folder: cifar10-jpeg (holding train/ and test/) or the folder holding MNIST/}
protocol=${PROTOCOL:-cifar10}
backbone=${BACKBONE:-cnn3}
out=${2:-runs/task-weights-$protocol}
read -r -a seeds <<< "${SEEDS:-0 1 2}"
case $protocol in
  cifar10)
    common=(--dataset imagefolder --data-root "$root" --backbone "$backbone" --train-subset 2000 --val-subset 400
      --test-subset 2000 --epochs 30 --lr 0.05 --momentum 0.9 --weight-decay 5e-4 --lr-schedule onecycle
      --batch-size 32 --threads 1 --no-progress)
    a=rotation b=colourisation
    with_a=(--aux rotation --rotation-mode random) with_b=(--aux colourisation)
    default_configs="single equal rotation colourisation auto-lambda ol-aux" ;;
  mnist-long)
    common=(--dataset mnist --hierarchy even-odd --data-root "$root" --train-subset 1800 --val-subset 1000
      --test-subset 2000 --epochs 60 --preset paper --normalisation 0.5 0.25 --padding-mode reflect
      --backbone "$backbone" --hidden 0 --batch-size 100 --lr 0.1 --momentum 0 --lr-schedule onecycle --warmup 0.15
      --loss ce --threads 1 --no-progress)
    a=human b=rotation
    with_a=() with_b=(--aux rotation --rotation-mode random)
    default_configs="single human rotation equal" ;;
  animal-vehicle)
    common=(--dataset imagefolder --hierarchy animal-vehicle --data-root "$root" --train-subset 3000 --val-subset 1000
      --test-subset 2000 --epochs 30 --backbone "$backbone" --hidden 0 --normalisation 0.5 0.25 --padding-mode reflect
      --batch-size 100 --lr 0.1 --momentum 0 --lr-schedule onecycle --warmup 0.15 --loss ce --threads 1 --no-progress)
    a=human b=rotation
    with_a=() with_b=(--aux rotation --rotation-mode random)
    default_configs="single human rotation equal" ;;
  *) echo "unknown PROTOCOL: $protocol (cifar10, mnist-long or animal-vehicle)" >&2; exit 2 ;;
esac
read -r -a configs <<< "${CONFIGS:-$default_configs}"
# the method that carries task A (mnist-long: the human hierarchy is a method, rotation an --aux task)
method_a=single; [[ $a == human ]] && method_a=human
for seed in "${seeds[@]}"; do
  for config in "${configs[@]}"; do
    dir="$out/$config/seed$seed"
    [[ -f "$dir/summary.json" ]] && continue
    method=$method_a name=$config split=() lr=() opt=() init=()
    [[ $name == *-s0 ]] && name=${name%-s0} split=(--weight-split 0)
    [[ $name == *-init* ]] && init=(--weighting-option "init=${name##*-init}") name=${name%-init*}
    [[ $name == *-lr* ]] && lr=(--weight-lr "${name##*-lr}") name=${name%-lr*}
    [[ $name == *-sgd ]] && opt=(--weighting-option optimizer=sgd) name=${name%-sgd}
    case $name in
      single) method=single extra=() ;;
      equal) extra=("${with_a[@]}" "${with_b[@]}") ;;
      "$a") extra=("${with_a[@]}") ;;
      "$b") method=single extra=("${with_b[@]}") ;;
      "$a"-*) extra=("${with_a[@]}" --aux-weight "$a=${config#"$a"-}") ;;
      "$b"-*) method=single extra=("${with_b[@]}" --aux-weight "$b=${config#"$b"-}") ;;
      both-*-*) w=${config#both-}
        extra=("${with_a[@]}" "${with_b[@]}" --aux-weight "$a=${w%-*}" --aux-weight "$b=${w#*-}") ;;
      auto-lambda) extra=("${with_a[@]}" "${with_b[@]}" --weighting auto-lambda --weight-init 1 --weight-lr 0.01
        --weight-split 200) ;;
      auxilearn | auxilearn-nonlinear) extra=("${with_a[@]}" "${with_b[@]}" --weighting "$name" --weight-split 200) ;;
      maxl) method=maxl extra=() ;;
      maxl-auto-lambda) method=maxl extra=(--weighting auto-lambda --weight-init 1 --weight-lr 0.01 --weight-split 200) ;;
      *) extra=("${with_a[@]}" "${with_b[@]}" --weighting "$name") ;;
    esac
    [[ $protocol == cifar10 && $method == "$method_a" ]] && method=single
    python -m maxl train "${common[@]}" --method "$method" --seed "$seed" "${extra[@]}" "${split[@]}" "${lr[@]}" "${opt[@]}" "${init[@]}" --out "$dir"
  done
done
