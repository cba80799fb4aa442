#!/usr/bin/env bash
# Does a convergence description measured on one configuration predict the time to a target loss on
# another? The measurement behind the README's "Does a description carry over?" (root, Linux, ~25 min on
# 2 cores): gpt-tiny, 150 steps, held-out loss every 10 steps, the same global batch of 32 samples.
#
#   A  2 ranks x 16 samples, loopback            -> description "2 workers"
#   C  4 ranks x  8 samples, loopback            -> with A: description "2 and 4 workers"
#   D  2 ranks x 16 samples, emulated 200 Mbit/s, 5 ms (each rank its own host), on its calibrated profile
#   B  4 ranks x  8 samples, the same network, on its calibrated profile
#
# Then `palsgd time-to-target RUN --convergence FILE` prints, per algorithm, the measured time to the
# loss, the prediction from the run's own curves (the step-time error alone) and the prediction from the
# description (step-time and convergence error together).
#
#   scripts/convergence_transfer.sh OUT [LOSS...]     # default losses: 3.05 3.15
set -euo pipefail
OUT="$(realpath -m "${1:?usage: $0 OUT [LOSS...]}")"
shift
LOSSES=("$@")
[[ ${#LOSSES[@]} -gt 0 ]] || LOSSES=(3.05 3.15)
P="${PALSGD:-palsgd}"
NET="rate=200mbit,delay=5ms"
COMMON=(--workload gpt-tiny --steps 150 --set train.eval_every=10)
mkdir -p "$OUT"

"$P" run "${COMMON[@]}" --nproc-per-node 2 --out "$OUT/A"
"$P" run "${COMMON[@]}" --nproc-per-node 4 --set workload.batch_per_worker=8 --out "$OUT/C"
"$P" calibrate --workload gpt-tiny --nproc-per-node 2 --emulate-network "$NET" --out "$OUT/P2/profile.toml"
"$P" run "${COMMON[@]}" --nproc-per-node 2 --emulate-network "$NET" --cluster "$OUT/P2/profile.toml" --out "$OUT/D"
"$P" calibrate --workload gpt-tiny --nproc-per-node 4 --set workload.batch_per_worker=8 --emulate-network "$NET" \
    --out "$OUT/P4/profile.toml"
"$P" run "${COMMON[@]}" --nproc-per-node 4 --set workload.batch_per_worker=8 --emulate-network "$NET" \
    --cluster "$OUT/P4/profile.toml" --out "$OUT/B"

for loss in "${LOSSES[@]}"; do
    "$P" time-to-target "$OUT/A" --loss "$loss" --export "$OUT/from-2-workers-$loss.toml"
    "$P" time-to-target "$OUT/A" "$OUT/C" --loss "$loss" --export "$OUT/from-2-and-4-workers-$loss.toml"
    for case in "D from-2-workers" "B from-2-workers" "B from-2-and-4-workers"; do
        read -r run description <<< "$case"
        echo "== loss $loss: run $run, description $description"
        "$P" time-to-target "$OUT/$run" --loss "$loss" --convergence "$OUT/$description-$loss.toml" \
            | tee "$OUT/$run-$description-$loss.txt"
    done
done
