#!/usr/bin/env bash
# The runs behind benchmarks/RESULTS.md (about 45 minutes on 2 CPU cores).
#
#   bash benchmarks/run_all.sh [RESULTS_DIR] [CACHE_DIR]
#
# 1. the comparison (all methods, all groups, 2 synthetic pairs per source x modality x magnitude, CLI start-up
#    and the full-resolution FIRE memory check);
# 2. drmime_pl's sensitivity to torch threads (1, 2, 2 with OMP_WAIT_POLICY=PASSIVE) on the BIRL pairs;
# 3. drmime_pl with model.init=identity instead of the default initialisation search (model.init=search).
# SimpleITK and ECC settings come from benchmarks/tune_peers.py (separate tuning pairs); run it first to redo them.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benchmarks/results}
CACHE=${2:-benchmarks/cache}
python benchmarks/compare.py --syn-seeds 2 --out "$OUT" --cache "$CACHE"
python benchmarks/compare.py --methods drmime-affine@1,drmime-affine@2,drmime-affine@2p --groups birl-multi,birl-mono \
    --no-extras --out "$OUT/threads" --cache "$CACHE"
python benchmarks/compare.py --methods drmime-affine,drmime-perspective --groups birl-multi,syn-multi --syn-seeds 2 \
    --no-extras --drmime-overrides model.init=identity --out "$OUT/init_identity" --cache "$CACHE"
