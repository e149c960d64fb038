#!/usr/bin/env bash
# The one script a GPU session runs, in one device call of at most ~9 minutes:
#   bash bench/gpu_wheels.sh          # here, with PyPI: .whl/ (~50 MiB)
#   run: bash bench/gpu_all.sh        # on the card, carry [".whl"], timeout_s 570
#   DEVICE=cpu bash bench/gpu_all.sh  # the same, small, on a CPU (Ray/MLflow installed)
# 1. bench/gpu_sweep.py: the real sweep (Ray Tune on the card's slots, MLflow in SQLite),
#    --gpus-per-trial 1 then 0.5, at the grid's batches; installs the carried wheels.
# 2. bench/gpu.py's parts profile, batches, pack, llama16 (+ the sweep's JSON and the summary).
# Each part has its own time limit, the whole ends by GPU_ALL_SECONDS (default 530).
# JSON and logs go to $OUT (the device's return folder; else /tmp/gpu_all) and
# on a card the two JSON files to bench/results/ too, named by the card.
set -uo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
TOTAL=${GPU_ALL_SECONDS:-530}
OUT=${OUT:-/tmp/gpu_all}
mkdir -p "$OUT" bench/results
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export VLA_TUNE_CACHE=${VLA_TUNE_CACHE:-/tmp/vla-tune-cache}
if [ "$DEVICE" = cuda ]; then
    CARD=$(python3 -c "import torch; print(torch.cuda.get_device_name(0))")
    GRID=(--episodes 58 --frame-size 144x256)
    SWEEP=(--pass-limit 170) SWEEP_LIMIT=380
else  # a check that the script runs: smaller batches and data than the grid's
    CARD=cpu GRID=() SWEEP=(--batches 16,32,64 --episodes 12 --pass-limit 400) SWEEP_LIMIT=900
fi
NAME=$(echo "$CARD" | tr 'A-Z ' 'a-z_' | tr -cd 'a-z0-9_' | sed 's/^nvidia_//')
echo "card: $CARD; results in $OUT"

timeout -k 15 "$SWEEP_LIMIT" python3 bench/gpu_sweep.py --device "$DEVICE" --wheels .whl \
    "${SWEEP[@]}" --total-limit $((SWEEP_LIMIT - 10)) --out "$OUT/gpu_sweep.json" \
    >"$OUT/gpu_sweep.log" 2>&1
echo "gpu_sweep.py: exit $? after $SECONDS s"
tail -n 14 "$OUT/gpu_sweep.log"

LEFT=$((TOTAL - SECONDS))
[ "$DEVICE" = cpu ] && LEFT=900
timeout -k 15 "$LEFT" python3 bench/gpu.py --device "$DEVICE" --quick \
    --only profile,batches,pack,llama16 "${GRID[@]}" --sweep-json "$OUT/gpu_sweep.json" \
    --out "$OUT/gpu.json" >"$OUT/gpu.log" 2>&1
echo "gpu.py: exit $? after $SECONDS s"
tail -n 40 "$OUT/gpu.log"
if [ "$DEVICE" = cuda ]; then  # a CPU run's figures are a check, not results
    cp "$OUT/gpu.json" "bench/results/gpu_grid_$NAME.json" 2>/dev/null
    cp "$OUT/gpu_sweep.json" "bench/results/gpu_sweep_$NAME.json" 2>/dev/null
fi
exit 0
