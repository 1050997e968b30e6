#!/usr/bin/env bash
# benchmarks/gpu_suite.sh on a GPU machine that reaches no package index, from the kit that
# benchmarks/gpu_kit.py built (wheels the machine lacks, the pair's config and tokenizer, the data
# files). Run from a checkout of the repository there (the project itself is not installed: it
# runs from the checkout on PYTHONPATH):
#
#   bash benchmarks/gpu_kit_run.sh KIT [RESULTS]
#
# RESULTS (default: $OUT/gpu_suite.jsonl where OUT is set, else ./gpu_suite.jsonl) receives the
# suite's JSON lines, cuda_tests.log beside it the CUDA tests' output; the progress goes to stderr. GPU_SUITE_SMOKE=1 runs the suite's CPU smoke
# mode from the kit instead (to check a kit without a GPU).
set -euo pipefail

KIT=$(cd "$1" && pwd)
RESULTS=${2:-${OUT:-.}/gpu_suite.jsonl}
REPO=$(cd "$(dirname "$0")/.." && pwd)
SITE=${GPU_KIT_SITE:-/tmp/gpu-kit-site}
PYTHON=${PYTHON:-python3}

start=$(date +%s)
"$PYTHON" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" "$KIT"/wheels/*.whl
export PYTHONPATH="$REPO:$SITE:$KIT/data${PYTHONPATH:+:$PYTHONPATH}"
export PYTHON INTERP="$PYTHON -m interp.cli.main" GPU_SUITE_PAIR_SOURCE="$KIT/pair-source"
"$PYTHON" -c 'import interp.cli.main, crosscoders.trainer, steering.evaluate, interp.datasets as d
d.build_manifest()'  # every module the suite runs imports, every data file is readable
echo "gpu_kit_run: installed and checked in $(( $(date +%s) - start )) s" >&2
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
    --format=csv,noheader >&2 || true

# the CUDA tests first (cache, TuCo, LinEAS and training on CUDA equal or match their CPU
# results; they skip without a GPU): their log beside RESULTS, a failure does not stop the suite
TESTS_LOG=$(dirname "$RESULTS")/cuda_tests.log
(cd "$REPO" && "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_trainer.py \
    -k cuda > "$TESTS_LOG" 2>&1) || true
echo "gpu_kit_run: CUDA tests: $(tail -1 "$TESTS_LOG")" >&2

bash "$REPO/benchmarks/gpu_suite.sh" | tee "$RESULTS"
