#!/usr/bin/env bash
# `make gpu-rehearsal`: the offline GPU run, rehearsed on this CPU machine, end to end.
#
# 1. a tiny FER2013 folder (a few images per class, from ../shared/fer2013 or synthetic) in a temporary folder;
# 2. a bundle for THIS machine's Python ($PYTHON) from it, exactly as `make gpu-bundle` makes one for the GPU;
# 3. a fresh virtual environment standing in for the GPU machine: JAX (CPU) and the packages the bundle expects the
#    target to have (bundle.json), at the lock's versions for this Python (the bundle's lock-pins.txt, as
#    constraints), and nothing else: no TensorFlow, no Keras, no Jupyter (checked);
# 4. the bundle's run.sh --allow-cpu on it, with the options of the GPU run (README, Results) and tiny settings
#    (one epoch, both models, every stage), on JAX's 2 CPU devices: the paper stage and the bench's scaling rows
#    with the distribution over both (keras.distribution.DataParallel), the rest on one; then the tune stage: a
#    search of 3 trials of 2 epochs by 2 workers side by side over a tiny space (unpruned, so that both plots have
#    their 2 complete trials);
# 5. gpu/check_results.py on what came back (file count and sizes, each stage's records, backend jax, devices).
# Everything happens under one temporary folder, removed at the end unless KEEP=1.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python3}"            # the rehearsal target's interpreter
BUILDER="${BUILDER:-.venv/bin/python}" # the project's environment: builds the bundle
started=$SECONDS
log() { printf '\n==> [%4ds] rehearsal: %s\n' "$((SECONDS - started))" "$*"; }
tmp=$(mktemp -d /tmp/fer-study-rehearsal.XXXXXX)
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$tmp"' EXIT

log "tiny data in $tmp/data"
"$BUILDER" gpu/tiny_data.py "$tmp/data" --per-class-train 15 --per-class-test 5

version=$("$PYTHON" -c 'import platform; print(platform.python_version())')  # X.Y.Z: the lock's markers see it
log "bundle for CPython $version in $tmp/bundle"
"$BUILDER" gpu/make_bundle.py --out "$tmp/bundle" --data "$tmp/data" --python-version "$version"

log "stand-in for the GPU machine: a fresh venv with JAX (CPU) and the packages the bundle expects there, as locked"
grep -E '^jax==' "$tmp/bundle/lock-pins.txt" >/dev/null \
  || { echo "rehearsal: error: requirements/lock.txt pins no jax for CPython $version (make lock)" >&2; exit 1; }
"$PYTHON" -m venv "$tmp/target"
"$tmp/target/bin/python" -m pip install --quiet --disable-pip-version-check jax -r "$tmp/bundle/expected-on-target.txt" \
  -c "$tmp/bundle/lock-pins.txt" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
"$tmp/target/bin/python" -I - "$tmp/bundle/lock-pins.txt" <<'PY'  # -I: not the checkout's egg-info
import importlib.metadata, re, sys
pins = dict(line.strip().split("==") for line in open(sys.argv[1]) if "==" in line and not line.startswith("#"))
seen = {re.sub(r"[-_.]+", "-", d.metadata["Name"]).lower(): d.version for d in importlib.metadata.distributions()}
off = [f"{n} {v} (locked {pins.get(n, 'nowhere')})" for n, v in sorted(seen.items())
       if pins.get(n) != v and n not in ("pip", "setuptools")]  # those two come with the venv
if off:
    sys.exit(f"rehearsal: error: the stand-in environment left the lock: {', '.join(off)}")
print(f"    stand-in: jax {seen.get('jax')}; {sum(pins.get(n) == v for n, v in seen.items())} of its {len(seen)} "
      "distributions at the lock's versions, the rest the venv's own pip and setuptools")
PY
for absent in tensorflow keras jupyterlab notebook ipykernel papermill; do
  if "$tmp/target/bin/python" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$absent') is None)"; then
    echo "rehearsal: error: the stand-in environment has $absent, which the GPU machine lacks" >&2; exit 1
  fi
done

# JAX sees 2 CPU devices: distribution auto stays off on them (as on a one-GPU machine); the paper stage and the
# bench's scaling rows train with keras.distribution.DataParallel over both, as on a machine with 2 GPUs. The
# deadline leaves room for the tune stage after the study stages (it is skipped when one round does not fit): on 2
# busy cores, 750 s for everything.
# The strong stage with every part of the recipe on (strong.yaml leaves mixup and cutmix off). The tune stage's space:
# small, a dotted name among its keys.
cat > "$tmp/space.yaml" <<'YAML'
learning_rate: {low: 0.002, high: 0.05, log: true}
augmentation.erasing: {low: 0.0, high: 0.5}
label_smoothing: {choices: [0.0, 0.1]}
YAML
log "bash bundle/run.sh --allow-cpu, as on the GPU machine (tiny settings: 1 epoch in float32, two seeds, every stage; the paper stage and the bench's scaling rows on 2 CPU devices; a search of 3 trials of 2 epochs by 2 workers)"
env -u OUT -u KERAS_BACKEND -u PYTHONPATH -u JUPYTER_PATH JAX_NUM_CPU_DEVICES=2 \
  XLA_FLAGS=--xla_force_host_platform_device_count=2 bash "$tmp/bundle/run.sh" --allow-cpu \
  --python "$tmp/target/bin/python" --out "$tmp/out" --work "$tmp/work" --deadline "${REHEARSAL_DEADLINE:-1200}" \
  --stages bench,strong,paper,tune --parallel --bench-protocols strong --bench-min-steps 2 \
  -p epochs=1 -p warmup_epochs=0 -p batch_size=16 -p mixed_precision=false -p "seeds=[0,1]" \
  --bench-scaling data_parallel --stage-param paper:distribution=data_parallel \
  --stage-param strong:mixup_alpha=1.0 --stage-param strong:cutmix_alpha=1.0 \
  --stage-param tune:epochs=2 --stage-param tune:trials=3 --stage-param tune:workers=2 \
  --stage-param tune:pruner=none --stage-param "tune:space=$tmp/space.yaml"

log "checking what came back"
"$BUILDER" gpu/check_results.py "$tmp/out" --stages bench,paper,strong,tune --backend jax --devices paper=2 \
  --devices strong=1 --devices bench=2
ls -l "$tmp/out"
log "passed in $((SECONDS - started)) s"
