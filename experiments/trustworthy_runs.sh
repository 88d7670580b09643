#!/usr/bin/env bash
# Trustworthy runs on real data (issue 8), CPU-sized: MNIST, 2000 training images.
#   bash experiments/trustworthy_runs.sh DATA_ROOT OUT [PARTS]
# PARTS (default "resume torchrun"):
#   resume:   a MAXL run killed with SIGKILL during epoch 2 of 3 and resumed with --resume, and a
#             rerun with the same seed and --deterministic, both against the uninterrupted run;
#   torchrun: --method single --no-batchnorm over 2 gloo processes against 1 process, and, as the
#             yardstick of float rounding, 1 process with 2 threads against 1 process with 1 thread.
# experiments/compare_runs.py prints one JSON line per pair.
set -euo pipefail
root=${1:?DATA_ROOT}; out=${2:-runs/trustworthy}; parts=${3:-resume torchrun}
export OMP_NUM_THREADS=1  # small tensors: one thread per process is faster, and kind to a shared machine
common=(train --dataset mnist --data-root "$root" --train-subset 2000 --test-subset 1000 --batch-size 50
        --momentum 0.9 --hidden 64 --lr-step 2 --no-progress --device cpu)

if [[ " $parts " == *" resume "* ]]; then
    maxl=("${common[@]}" --lr 0.05 --method maxl --epochs 3 --deterministic)
    /usr/bin/time -f "uninterrupted: %e s" python -m maxl "${maxl[@]}" --out "$out/full"
    /usr/bin/time -f "rerun: %e s" python -m maxl "${maxl[@]}" --out "$out/rerun"
    # kill -9 once the checkpoint of epoch 1 exists (the process is then inside epoch 2)
    python -m maxl "${maxl[@]}" --out "$out/killed" & pid=$!
    until python -c "import sys, torch; sys.exit(torch.load('$out/killed/checkpoint.pt', weights_only=True)['epoch'] < 1)" 2>/dev/null; do
        sleep 1
    done
    sleep 5; kill -9 $pid; wait $pid || echo "killed with status $?"
    echo "metrics lines after the kill: $(wc -l < "$out/killed/metrics.jsonl")"
    /usr/bin/time -f "resumed: %e s" python -m maxl train --resume "$out/killed" --no-progress
    python -m experiments.compare_runs "$out/full" "$out/rerun" "$out/full" "$out/killed"
fi

if [[ " $parts " == *" torchrun "* ]]; then
    # lr 0.01: at 0.05 this BatchNorm-free network trains chaotically, and last-bit differences
    # (another thread count as much as another process count) grow to different networks
    single=("${common[@]}" --lr 0.01 --method single --no-batchnorm --epochs 2)
    /usr/bin/time -f "1 process: %e s" python -m maxl "${single[@]}" --out "$out/one"
    OMP_NUM_THREADS=2 /usr/bin/time -f "1 process, 2 threads: %e s" python -m maxl "${single[@]}" --out "$out/one-2threads"
    /usr/bin/time -f "2 processes: %e s" python -m torch.distributed.run --standalone --nproc_per_node 2 \
        -m maxl "${single[@]}" --out "$out/two"
    python -m experiments.compare_runs "$out/one" "$out/two" "$out/one" "$out/one-2threads"
fi
