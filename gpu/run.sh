#!/usr/bin/env bash
# Run the study on an offline GPU machine from a bundle made by `make gpu-bundle` (this file is its run.sh).
#
#   bash <bundle>/run.sh [--out DIR] [--deadline SECONDS] [--stages bench,paper,strong,tune] [--parallel] [--allow-cpu]
#                        [-p KEY=VALUE ...] [--bench-min-steps N] [--bench-protocols strong,paper] [--python PYTHON]
#                        [--work DIR] [--bench-scaling none,2] [--stage-param STAGE:KEY=VALUE ...]
#
# Offline: installs the bundle's wheels with pip --no-index --no-deps --target into a temporary site folder, unpacks
# the project, sets KERAS_BACKEND=jax, a persistent JAX compilation cache and XLA memory settings, checks that JAX
# sees a GPU (refuses otherwise, unless --allow-cpu), then runs the stages in the order given under one wall-clock
# deadline counted from this script's start (default 540 s):
#   bench   the throughput of both models in the study's own training step, for each protocol to run (or those of
#           --bench-protocols): the strong protocol in bf16, the paper's as it is; at least 200 timed steps
#   paper   params/paper.yaml: the paper's protocol, both models, 30 epochs
#   strong  params/strong.yaml: the strong protocol
#   tune    fer-study tune of params/strong.yaml over params/space-strong.yaml: 12 trials of the basic CNN, 20 epochs
#           each, by 3 workers side by side on the one GPU, pruned by successive halving; not a default stage (the
#           default deadline is the study stages'): e.g. --stages bench,tune
# A stage whose estimated time (from the bench stage) would not end before the deadline is skipped with a note; the
# tune stage runs alone, when one round of its trials fits, with fer-study tune --timeout so that no trial starts
# later than one round before the deadline.
# --parallel starts the study stages side by side after the bench stage (one GPU has room for both; their compile
# and notebook time overlap the other's training, but each one's images/s then count a shared GPU).
# Each stage's results are packed into one archive in the output folder ($OUT when set, else --out, default
# ./gpu-results) as soon as the stage ends: <n>-<stage>.tar.gz (run folders without model weights; the tune stage's:
# trials.csv, its two plots and best.yaml), beside summary.json (per stage: status, seconds, estimate, note) and
# run.log. At most 8 files, each at most 16 MiB.
# -p KEY=VALUE overrides a study parameter in every stage (e.g. -p epochs=1 for a rehearsal), --stage-param
# STAGE:KEY=VALUE in one; tune:trials=N, tune:workers=N, tune:model=M, tune:pruner=P and tune:space=FILE set the
# search's options instead (tune:epochs=30 is a study parameter of its trials). --bench-scaling also times the
# bench's models with these distribution settings (none: one GPU beside auto's every GPU), as the benchmark records'
# "scaling" rows.
set -uo pipefail

started=$(date +%s)
bundle="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${OUT:-}"
deadline=540
stages="bench,paper,strong"
allow_cpu=0
parallel=()
python="${PYTHON:-python3}"
work=""
bench_min_steps=200
bench_protocols=()
overrides=()

usage() { sed -n '2,32p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --deadline) deadline="$2"; shift 2 ;;
    --stages) stages="$2"; shift 2 ;;
    --allow-cpu) allow_cpu=1; shift ;;
    --parallel) parallel=(--parallel); shift ;;
    --python) python="$2"; shift 2 ;;
    --work) work="$2"; shift 2 ;;
    --bench-min-steps) bench_min_steps="$2"; shift 2 ;;
    --bench-protocols) bench_protocols=(--bench-protocols "$2"); shift 2 ;;
    -p|--param) overrides+=(-p "$2"); shift 2 ;;
    --bench-scaling) overrides+=(--bench-scaling "$2"); shift 2 ;;
    --stage-param) overrides+=(--stage-param "$2"); shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run.sh: error: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
out="${out:-$PWD/gpu-results}"
[[ "$deadline" =~ ^[0-9]+$ ]] || { echo "run.sh: error: --deadline must be a number of seconds, got '$deadline'" >&2; exit 2; }
for required in project.tar.gz wheels; do
  [ -e "$bundle/$required" ] || { echo "run.sh: error: $bundle/$required is missing: is this a bundle made by 'make gpu-bundle'?" >&2; exit 2; }
done
command -v "$python" >/dev/null 2>&1 || { echo "run.sh: error: no Python at '$python' (use --python)" >&2; exit 2; }
mkdir -p "$out"
exec > >(tee -a "$out/run.log") 2>&1
log() { printf '==> [%4ds] %s\n' "$(( $(date +%s) - started ))" "$*"; }

work="${work:-$(mktemp -d /tmp/fer-study-gpu.XXXXXX)}"
mkdir -p "$work"
log "bundle $bundle; work folder $work; output $out; deadline ${deadline}s; stages $stages"

log "installing $(ls "$bundle"/wheels/*.whl | wc -l) wheels into $work/site (pip --no-index --no-deps --target)"
"$python" -m pip install --quiet --no-index --no-deps --no-compile --disable-pip-version-check \
  --target "$work/site" "$bundle"/wheels/*.whl || { echo "run.sh: error: installing the bundle's wheels failed" >&2; exit 1; }
mkdir -p "$work/project" && tar -xzf "$bundle/project.tar.gz" -C "$work" || { echo "run.sh: error: cannot unpack project.tar.gz" >&2; exit 1; }

export PYTHONPATH="$work/project:$work/site${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$work/site/bin:$PATH"
export JUPYTER_PATH="$work/site/share/jupyter${JUPYTER_PATH:+:$JUPYTER_PATH}"  # nbconvert's templates, the kernelspec
export KERAS_BACKEND=jax
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-$work/jax-cache}"  # notebooks reuse the bench's compiles
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="${JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS:-0.5}"
export JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="${JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES:-0}"
# One training process holds the GPU at a time, but the runner and the notebook kernels all import JAX: allocate
# on demand instead of each grabbing 75% of the memory up front.
export XLA_PYTHON_CLIENT_PREALLOCATE="${XLA_PYTHON_CLIENT_PREALLOCATE:-false}"
export TF_CPP_MIN_LOG_LEVEL=2 MPLBACKEND=Agg PYTHONUNBUFFERED=1 JUPYTER_PLATFORM_DIRS=1 PYDEVD_DISABLE_FILE_VALIDATION=1
export FER_STUDY_CACHE="$work/cache"

log "checking JAX and the accelerator"
platform=$("$python" -c 'import jax; d = jax.devices(); print(d[0].platform, "|", ", ".join(x.device_kind for x in d))' 2>"$work/jax-check.err") \
  || { echo "run.sh: error: JAX does not start here: $(tail -3 "$work/jax-check.err")" >&2; exit 1; }
log "JAX devices: $platform"
if [ "${platform%% *}" != "gpu" ] && [ "${platform%% *}" != "cuda" ] && [ "$allow_cpu" -ne 1 ]; then
  echo "run.sh: error: JAX sees no GPU (devices: $platform); this script is for a GPU machine. Pass --allow-cpu to run on the CPU anyway (a rehearsal)." >&2
  exit 3
fi

data_args=()
if [ -f "$bundle/data/fer2013.npz" ]; then data_args=(--data "$bundle/data/fer2013.npz"); fi
log "running the stages"
"$python" "$work/project/gpu/stages.py" --project "$work/project" --work "$work" --out "$out" \
  --deadline-at $(( started + deadline )) --stages "$stages" --bench-min-steps "$bench_min_steps" \
  "${parallel[@]}" "${bench_protocols[@]}" "${data_args[@]}" "${overrides[@]}"
status=$?
log "done (exit $status); results in $out: $(ls "$out" | tr '\n' ' ')"
exit $status
