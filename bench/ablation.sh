#!/usr/bin/env bash
# Issue 14's ablations: one training flag, with and without, on clean and plant-background data
# of several seeds; the statistics detector (and the DCASE autoencoder) beside them.
#
#   bench/ablation.sh                  # NAME=spectrum FLAGS="--spectrum-branch" SEEDS="0 1 2"
#                                      # CONDITIONS="clean 0" (0 = plant background at 0 dB)
#
# Per condition and seed: `asd-edge synth` (default sizes: 3 sections, 100 + 10 training clips,
# 40 test clips per section and domain), `train` (the default network, and with FLAGS),
# `evaluate` for both runs and for `--system stats` (and `autoencoder` with AE=1). Every step is
# skipped when its output exists, so a cut run continues and shared steps (data, the default
# network, stats) are reused by the next ablation in the same WORK. Ends with
# bench/ablation_table.py: $WORK/ablation_$NAME.md and .json (mean +- sd over the seeds).
set -euo pipefail

WORK=${WORK:-/tmp/ablation-work}
NAME=${NAME:-spectrum}
FLAGS=${FLAGS:---spectrum-branch}
SEEDS=${SEEDS:-"0 1 2"}
CONDITIONS=${CONDITIONS:-"clean 0"}
MACHINES=${MACHINES:-fan,gearbox,valve}
EPOCHS=${EPOCHS:-12}
THREADS=${THREADS:-2}
AE=${AE:-0}                        # 1: the DCASE autoencoder too
AE_EPOCHS=${AE_EPOCHS:-20}         # its epochs, as in docs/RESULTS.md
PY=${PY:-"$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/python"}
cd "$(dirname "$0")/.."
asd() { "$PY" -m edge.cli "$@"; }

for condition in $CONDITIONS; do
    base="$WORK/$condition"
    mkdir -p "$base/runs" "$base/eval"
    for seed in $SEEDS; do
        data="$base/data$seed"
        snr=(); [ "$condition" != clean ] && snr=(--snr "$condition")
        [ -d "$data" ] || asd synth "$data" --machines "$MACHINES" --seed "$seed" "${snr[@]}"
        for variant in default "$NAME"; do
            run="$base/runs/${variant}_$seed"
            extra=(); [ "$variant" != default ] && read -r -a extra <<< "$FLAGS"
            if [ ! -f "$run/.done" ]; then
                rm -rf "$run"
                asd train --data "$data" --machines "$MACHINES" --out "$run" --epochs "$EPOCHS" \
                    --seed "$seed" --threads "$THREADS" --cache-dir "$base/cache" --no-progress \
                    "${extra[@]}"
                touch "$run/.done"
            fi
            [ -f "$base/eval/${variant}_$seed/results.json" ] || \
                asd evaluate --data "$data" --run "$run" --out "$base/eval/${variant}_$seed" --no-plots
        done
        systems=(stats); [ "$AE" = 1 ] && systems+=(autoencoder)
        for system in "${systems[@]}"; do
            [ -f "$base/eval/${system}_$seed/results.json" ] || \
                asd evaluate --data "$data" --system "$system" --seed "$seed" \
                    --epochs "$AE_EPOCHS" --out "$base/eval/${system}_$seed" --no-plots
        done
    done
done
"$PY" bench/ablation_table.py --work "$WORK" --name "$NAME" --flags="$FLAGS"
