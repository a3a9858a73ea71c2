#!/usr/bin/env bash
# Every GPU path in one call of the device tool: build the CUDA extension for sm_90, run the
# CUDA tests and each method preset's compiled step against its eager one (CUDA graphs
# too), then the benchmarks at fixed small repetition counts. Each stage has its own time
# budget and a failed or timed-out stage does not stop the next; the whole run stops
# starting stages when --deadline seconds are spent (default 570: one device call is 10 min).
# The dry run (a shared, noisy CPU; it shows the script works, not how fast) gives each stage
# 3x its budget and defaults to a deadline of 800 s.
#
#   bench/gpu_check.sh                    # on the GPU machine; results under $OUT
#   bench/gpu_check.sh --dry-run          # here, on CPU, tiny sizes (CI runs this)
#   bench/gpu_check.sh --stages steps,bench-step --out DIR
#   bench/gpu_check.sh --stages checks; bench/gpu_check.sh --stages bench   # two calls
#
# Stages, in order (budget in seconds on the GPU): env 30, build 150, triton-sm90 60,
# cuda-tests 150, steps 200, agreement 300 | op-evidence 150, bench-infonce, bench-attn-pool,
# bench-augment, bench-adagn 60 each, bench-step 200, profile 120, decode 60. All of them may
# not fit one 10-minute call: the groups `checks` (up to agreement) and `bench` (env, build and
# the rest) split them in two.
#
# Writes at most 8 files into the output folder (--out, else $OUT, else a new temporary
# folder): summary.md (the stage table and the results), summary.json (the same with the
# environment), log.txt (every stage's output), steps.jsonl (bench/gpu_steps.py, step and op
# evidence), ops.csv (InfoNCE, attention pool, augmentation, AdaGN), step.csv (the training step), profile.json
# (the profiler's top kernels, MFU), data.csv (decoding). Exit status: 0 when every stage
# that ran passed (skipped ones included), else 1.
#
# GPU_CHECK_STEP_CONFIG: the config of bench-step and profile (default ffhq; dry run
# quickstart at 16 px).
#
# Missing pure-Python packages travel as wheels in .whl/ (the device tool's README); when
# that folder exists they are installed to /tmp/site first. None is needed at present: every
# dependency of pyproject.toml is in the GPU image's package list.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

DRY=0
STAGES_WANTED=all
DEADLINE=
OUTDIR=${OUT:-}
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --stages) STAGES_WANTED=$2; shift ;;
    --out) OUTDIR=$2; shift ;;
    --deadline) DEADLINE=$2; shift ;;
    -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[ -n "$DEADLINE" ] || { [ $DRY = 1 ] && DEADLINE=800 || DEADLINE=570; }
SCALE=1; [ $DRY = 1 ] && SCALE=3  # the stage budgets' factor
[ -n "$OUTDIR" ] || OUTDIR=$(mktemp -d /tmp/gpu_check.XXXXXX)
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
LOG=$OUTDIR/log.txt
TABLE=$(mktemp /tmp/gpu_check_stages.XXXXXX)  # folded into summary.json at the end
: > "$LOG"

if [ -x "$ROOT/.venv/bin/python" ]; then PY=${PYTHON:-$ROOT/.venv/bin/python}; else PY=${PYTHON:-python3}; fi
export PYTHONUNBUFFERED=1
if [ -d "$ROOT/.whl" ] && ls "$ROOT"/.whl/*.whl > /dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$ROOT"/.whl/*.whl >> "$LOG" 2>&1 && export PYTHONPATH=/tmp/site
fi

if [ $DRY = 1 ]; then
  DEV=cpu
  export TRITON_INTERPRET=1  # the Triton kernels run, slowly, under the interpreter
else
  DEV=cuda
  if ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>> "$LOG"; then
    echo "gpu_check.sh: torch sees no CUDA device here; use --dry-run on CPU" >&2
    exit 2
  fi
fi
START=$(date +%s)

# two groups, for a check split over two device calls (each at most 10 minutes)
expanded=""
for s in ${STAGES_WANTED//,/ }; do
  case $s in
    checks) s=env,build,triton-sm90,cuda-tests,steps,agreement ;;
    bench) s=env,build,op-evidence,bench-infonce,bench-attn-pool,bench-augment,bench-adagn,bench-step,profile,decode ;;
  esac
  expanded=$expanded,$s
done
STAGES_WANTED=${expanded#,}
ALL=",env,build,triton-sm90,cuda-tests,steps,agreement,op-evidence,bench-infonce,bench-attn-pool,bench-augment,bench-adagn,bench-step,profile,decode,"
for s in ${STAGES_WANTED//,/ }; do
  if [ "$s" != all ] && [[ "$ALL" != *",$s,"* ]]; then
    echo "gpu_check.sh: unknown stage $s; stages: ${ALL:1:-1} (groups: checks, bench)" >&2
    exit 2
  fi
done
wanted() { [ "$STAGES_WANTED" = all ] || [[ ",$STAGES_WANTED," == *",$1,"* ]]; }

record() {  # name status seconds note
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >> "$TABLE"
  printf '== %-16s %-8s %5ss  %s\n' "$1" "$2" "$3" "$4" | tee -a "$LOG"
}

# stage NAME BUDGET_S COMMAND: runs COMMAND (a bash string) under its budget, output to the log
stage() {
  local name=$1 budget=$(($2 * SCALE)) cmd=$3
  wanted "$name" || return 0
  local left=$((DEADLINE - ($(date +%s) - START)))
  if [ "$left" -lt 15 ]; then record "$name" skipped 0 "no time left (--deadline $DEADLINE s)"; return 0; fi
  [ "$budget" -le "$left" ] || budget=$left
  echo "== $name (budget ${budget}s): $cmd" >> "$LOG"
  local t0 rc
  t0=$(date +%s)
  timeout --signal=INT --kill-after=15 "$budget" bash -c "$cmd" >> "$LOG" 2>&1
  rc=$?
  local dt=$(($(date +%s) - t0))
  case $rc in
    0) record "$name" ok "$dt" "" ;;
    124|137) record "$name" timeout "$dt" "over its ${budget}s budget" ;;
    *) record "$name" failed "$dt" "exit $rc (log.txt)" ;;
  esac
}

skip() { wanted "$1" && record "$1" skipped 0 "$2"; return 0; }

cuda_only() {  # name budget gpu_command: on CPU reported as skipped
  if [ $DRY = 1 ]; then skip "$1" "needs CUDA (dry run)"; else stage "$@"; fi
}

# --- environment ---------------------------------------------------------------------------
stage env 30 "'$PY' -m arcdae_fast.info; command -v nvidia-smi > /dev/null && nvidia-smi; command -v nvcc > /dev/null && nvcc --version | tail -2; true"

# --- the CUDA extension, built for sm_90 ---------------------------------------------------
cuda_only build 150 "ARCDAE_FAST_CUDA_ARCHS=9.0 '$PY' -m pip install --no-build-isolation --no-deps --no-index -e . && '$PY' -c 'import json, arcdae_fast; from importlib.resources import files; info = json.loads(files(\"arcdae_fast\").joinpath(\"_build_info.json\").read_text()); print(info); assert info.get(\"cuda\"), info'"

# --- every Triton kernel compiles for sm_90 with its launch configs (no GPU needed) --------
stage triton-sm90 60 "env -u TRITON_INTERPRET '$PY' tests/compile_sm90.py"

# --- the CUDA tests: every op and backend against the reference (fp32/bf16), the GPU
# self-checks, InfoNCE at N = 262144, the compiled ops; on CPU only collected -------------
TESTS="tests/test_infonce.py tests/test_attn_pool.py tests/test_augment.py tests/test_adagn.py tests/test_backends.py tests/test_compile.py tests/test_primitives.py tests/test_op_inputs.py"
if [ $DRY = 1 ]; then  # collected; the Triton attention pool's tests run under the interpreter
  stage cuda-tests 120 "'$PY' -m pytest -q -p no:cacheprovider --collect-only $TESTS | tail -1 && '$PY' -m pytest -q -p no:cacheprovider -o addopts='' tests/test_attn_pool.py -k 'triton and shape0'"
else
  stage cuda-tests 150 "'$PY' -m pytest -q -p no:cacheprovider -n 4 -o addopts='' -rfE $TESTS"
fi

# --- each method preset's compiled step against the eager one; bf16 and CUDA graphs -------
if [ $DRY = 1 ]; then
  stage steps 300 "'$PY' bench/gpu_steps.py --device cpu --compile-backend eager --batch 2 --resolution 16 --bf16-steps 2 --out '$OUTDIR/steps.jsonl'"
else
  stage steps 200 "'$PY' bench/gpu_steps.py --device cuda --batch 16 --bf16-steps 8 --out '$OUTDIR/steps.jsonl'"
fi

# --- step agreement on CUDA: every method's quickstart, 20 steps, fp32 / bf16 / CUDA graphs
# against the eager step. Its rows join steps.jsonl (8 files at most); back here,
# `python bench/step_agreement.py --record-from steps.jsonl` writes them into
# arcdae_fast/evidence.json for this GPU class (train.step=auto reads it)
cuda_only agreement 300 "'$PY' bench/step_agreement.py --device cuda --steps 20 --batch 16 --seeds 1 --out '$OUTDIR/steps.jsonl'"

# --- op evidence: which fused backends beat the reference on this GPU, from which size ----
# (one line in steps.jsonl; back here, `python bench/op_evidence.py --record-from steps.jsonl`)
if [ $DRY = 1 ]; then
  stage op-evidence 60 "'$PY' bench/op_evidence.py --device cpu --quick --rounds 1 --min-time 0.01 --dtypes float32 --ops augment --out '$OUTDIR/steps.jsonl'"
else
  stage op-evidence 150 "'$PY' bench/op_evidence.py --device cuda --rounds 3 --out '$OUTDIR/steps.jsonl'"
fi

# --- op benchmarks (fixed small repetition counts: do_bench's defaults) --------------------
# (dry run: the eager baselines and the C++ kernels; Inductor's compiles cost minutes on CPU)
declare -A DRY_PROVIDERS=([infonce]=naive-eager,cpp [attn_pool]=sdpa,cpp [augment]=reference-eager,cpp [adagn]=eager-gn-silu,cpp)
for op in infonce attn_pool augment adagn; do
  if [ $DRY = 1 ]; then args="--device cpu --quick --no-memory --providers ${DRY_PROVIDERS[$op]}"; else args="--device cuda"; fi
  stage "bench-${op//_/-}" 60 "'$PY' bench/bench_$op.py $args --out '$OUTDIR/ops.csv'"
done

# --- the training step: eager fp32 / eager bf16 channels_last / compiled -----------------
if [ $DRY = 1 ]; then
  STEP_CFG="--config ${GPU_CHECK_STEP_CONFIG:-quickstart} --batch-size 2 data.resolution=16"
  stage bench-step 120 "'$PY' bench/bench_step.py $STEP_CFG --variants eager-fp32,eager-bf16-cl --rounds 1 --steps 1 --warmup 1 --data synthetic --out '$OUTDIR/step.csv'"
  stage profile 90 "'$PY' -m arcdae_fast.profile $STEP_CFG --steps 1 --warmup 1 --data synthetic --json '$OUTDIR/profile.json' --variant eager"
else
  STEP_CFG="--config ${GPU_CHECK_STEP_CONFIG:-ffhq} --batch-size 64"
  stage bench-step 200 "'$PY' bench/bench_step.py $STEP_CFG --variants eager-fp32,eager-bf16-cl,compiled --rounds 3 --steps 5 --warmup 3 --data synthetic --out '$OUTDIR/step.csv'"
  stage profile 120 "'$PY' -m arcdae_fast.profile $STEP_CFG --steps 5 --warmup 3 --data synthetic --json '$OUTDIR/profile.json' --variant compiled"
fi

# --- decoding: DALI when importable, else torchvision.io.decode_jpeg on CUDA -------------
if [ $DRY = 1 ]; then
  stage decode 60 "'$PY' bench/bench_data.py --device cpu --images 64 --batch 8 --steps 2 --size 32 --threads 1 --out '$OUTDIR/data.csv'"
else
  stage decode 60 "'$PY' bench/bench_data.py --device cuda --images 1024 --batch 64 --steps 12 --out '$OUTDIR/data.csv'"
fi

# --- summary -------------------------------------------------------------------------------
"$PY" bench/gpu_summary.py --stages "$TABLE" --out "$OUTDIR" --dry-run "$DRY" --seconds $(($(date +%s) - START)) 2>> "$LOG"
rc=$?  # 1: a stage or check failed; anything else: the summary itself broke (log.txt)
rm -f "$TABLE"
cat "$OUTDIR/summary.md" 2> /dev/null
echo "results: $OUTDIR"
exit $rc
