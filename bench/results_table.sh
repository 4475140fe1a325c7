#!/usr/bin/env bash
# The comparison table of docs/RESULTS.md: synthetic data per seed, the four trained objectives
# per seed, then every system side by side (python -m training.evaluate.compare).
#
#   bench/results_table.sh            # WORK=/tmp/results-work SEEDS="0 1 2" EPOCHS=12 ...
#
# Every step is skipped when its output exists (a data folder, a finished run), so an
# interrupted run continues. Sizes and seeds are environment variables; the defaults are the
# ones docs/RESULTS.md reports. Writes $WORK/results.md and $WORK/results.json.
set -euo pipefail

WORK=${WORK:-/tmp/results-work}
SEEDS=${SEEDS:-"0 1 2"}
MACHINES=${MACHINES:-fan,gearbox,valve}
SECTIONS=${SECTIONS:-3}
TRAIN=${TRAIN:-100}                # source-domain normal training clips per section
TARGET_TRAIN=${TARGET_TRAIN:-10}   # target-domain normal training clips per section
TEST=${TEST:-30}                   # test clips per section, domain and label
EPOCHS=${EPOCHS:-12}               # surrogate-task training epochs
FRONT_END=${FRONT_END:-log-mel}    # or log-linear (use another WORK: runs are reused by name)
AE_EPOCHS=${AE_EPOCHS:-20}         # DCASE autoencoder epochs
OBJECTIVES=${OBJECTIVES:-"disentangled mtl arcface sections"}
SNR=${SNR:-}                       # e.g. SNR=0 (issue 14's noisy sets: 6, 0, -6; use one WORK each)
THREADS=${THREADS:-2}
SPLITS=${SPLITS:-5}                # development/held-out splits per data set (selection check)
PY=${PY:-"$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/python"}

cd "$(dirname "$0")/.."
mkdir -p "$WORK/runs"
data_args=()
run_args=()
i=0
for seed in $SEEDS; do
    data="$WORK/data$seed"
    if [ ! -d "$data" ]; then
        "$PY" -m edge.cli synth --machines "$MACHINES" --sections "$SECTIONS" --train "$TRAIN" \
            --target-train "$TARGET_TRAIN" --test "$TEST" --seed "$seed" ${SNR:+--snr "$SNR"} "$data"
    fi
    for objective in $OBJECTIVES; do
        run="$WORK/runs/${objective}_$i"
        if [ ! -f "$run/.done" ]; then  # checkpoint.pt is saved every epoch: resume a cut run
            resume=(); [ -f "$run/checkpoint.pt" ] && resume=(--resume)
            "$PY" -m edge.cli train --data "$data" --machines "$MACHINES" --out "$run" \
                --objective "$objective" --epochs "$EPOCHS" --seed "$seed" --threads "$THREADS" \
                --front-end "$FRONT_END" --cache-dir "$WORK/cache" --no-progress "${resume[@]}"
            touch "$run/.done"
        fi
    done
    data_args+=(--data "$data")
    i=$((i + 1))
done
for objective in $OBJECTIVES; do
    run_args+=(--run "$objective=$WORK/runs/${objective}_{i}")
done
"$PY" -m training.evaluate.compare "${data_args[@]}" --systems stats,bandenergy,autoencoder \
    "${run_args[@]}" --epochs "$AE_EPOCHS" --splits "$SPLITS" --out "$WORK/results.md"
