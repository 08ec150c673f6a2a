#!/usr/bin/env bash
# The GPU check: everything that needs an NVIDIA GPU, in one command (`make gpu-check`).
#
#   environment   the GPU, driver, torch and triton it runs with;
#   resources     registers, spills and shared memory of every kernel, compiled by this Triton for this GPU (the
#                 one-kernel step trains only the nets whose step fits here: FusedCoordMLP.step_unsupported_reason);
#   kernel-tests  tests/test_kernels.py and test_cuda_graph.py -k Compiled, each test in a process of its own (a kernel that
#                 faults poisons its process's CUDA context, and would fail every later test);
#   bench-goal    the goal's shape (width 64, 3 hidden layers, 2^16 points, a full step with Adam):
#                 eager, torch.compile, the fused kernels at each precision and the one-kernel step side by side, each
#                 also with the loss read back every step, with fused Adam, and as one CUDA graph;
#   precision     python -m steer.bench precision: the quick study's nets at each precision;
#   study         a short study on the triton backend, steered once while a trial runs, then replayed;
#   trainer-step  python -m steer.bench step: Trainer.step at the goal's shape, with and without CUDA graphs;
#   bench-sweep   widths 32/64/128 at 2^14..2^20 points, every backend (its JSON is kept current, so a
#                 sweep stopped by its time limit keeps the rows it measured).
#
# Each step runs under a time limit (together under 15 minutes) and a failing step
# does not stop the others; the exit status is the first failure's. Into $OUT (default ./gpu-check):
# gpu-report.md (each step's status and its tables), gpu-check-full.log (every step's whole output),
# and the figures as JSON and PNG. GPU_CHECK_STEPS="study precision" runs only the steps named.
#
# GPU_CHECK_DRY=1 runs every step on the CPU at toy sizes (torch backend, no timing worth reading):
# tests/test_gpu_check.py does, so the script is known to work before a GPU is at hand.
# Run it with the project installed (`pip install -e '.[test,bench]'`).
set -u
out=${OUT:-gpu-check}
mkdir -p "$out"
py=${PYTHON:-python3}
dry=${GPU_CHECK_DRY:-}
export PYTHONUNBUFFERED=1 TRITON_DEFAULT_FP_FUSION=${TRITON_DEFAULT_FP_FUSION:-1}
status=0
report="$out/gpu-report.md"
full="$out/gpu-check-full.log"
logs=$(mktemp -d)
{ echo "# GPU check, $(date -u '+%Y-%m-%d %H:%M UTC')${dry:+ (dry run on the CPU)}"; echo; } > "$report"
: > "$full"

step() {  # step NAME LIMIT_S COMMAND...: run it under a time limit, log it, report it
    local name=$1 limit=$2 start rc
    shift 2
    case " ${GPU_CHECK_STEPS:-$name} " in *" $name "*) ;; *) return 0 ;; esac
    start=$(date +%s)
    timeout --kill-after=5 "$limit" "$@" > "$logs/$name.log" 2>&1
    rc=$?
    local line="exit $rc after $(( $(date +%s) - start )) s (limit $limit s)"
    echo "== $name: $line" | tee -a "$full"
    { echo "## $name: $line"; echo; } >> "$report"
    # The markdown tables a step printed go in as they are; the rest of its last lines as a log.
    grep '^|' "$logs/$name.log" >> "$report" && echo >> "$report"
    { echo '```'; grep -v '^|' "$logs/$name.log" | tail -n "${TAIL:-25}"; echo '```'; echo; } >> "$report"
    cat "$logs/$name.log" >> "$full"
    if [ "$rc" != 0 ] && [ "$status" = 0 ]; then status=$rc; fi
}

environment() {
    if command -v nvidia-smi > /dev/null; then nvidia-smi; else echo "no nvidia-smi"; fi
    "$py" -c '
import platform, torch
try:
    import triton
    triton_version = triton.__version__
except ImportError:
    triton_version = "not installed"
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
print(f"GPU: {gpu}; torch {torch.__version__} (CUDA {torch.version.cuda}); triton {triton_version}; "
      f"python {platform.python_version()}; {platform.processor() or platform.machine()}")'
}

kernel_tests() {
    local dir i id failed=0
    dir=$(mktemp -d)
    "$py" -m pytest tests/test_kernels.py tests/test_cuda_graph.py -k Compiled --collect-only -q -p no:cacheprovider | grep '::' \
        | head -n "${KERNEL_TESTS:-1000}" | nl -ba > "$dir/ids"
    # CUDA_LAUNCH_BLOCKING: a kernel that faults is named at its launch, not at a later sync.
    CUDA_LAUNCH_BLOCKING=1 DIR=$dir xargs -P "${JOBS:-12}" -L1 bash -c \
        '"$py" -m pytest -q -p no:cacheprovider "$1" > "$DIR/$0.log" 2>&1; echo $? > "$DIR/$0.rc"' < "$dir/ids"
    while read -r i id; do
        if [ "$(cat "$dir/$i.rc")" = 0 ]; then
            if grep -q "1 skipped" "$dir/$i.log"; then echo "SKIP $id"; else echo "PASS $id"; fi
            continue
        fi
        failed=1
        echo "FAIL $id"
        grep -E '^E  |(kernels|tests)/[a-z_]+\.py:[0-9]+' "$dir/$i.log" | head -n 8 | sed 's/^/    /'
    done < "$dir/ids"
    echo "$(grep -c . "$dir/ids") tests: $(cat "$dir"/*.rc | grep -cx 0) passed or skipped"
    return "$failed"
}

study() {  # a short study on the triton backend, steered once while its first trial runs, then replayed
    local dir db spec run t
    dir=$(mktemp -d)
    db="sqlite:///$dir/gpu.db"
    spec="$dir/gpu.toml"
    sed -e 's/^name = .*/name = "gpu-check"/' -e "s/^trials = .*/trials = $STUDY_TRIALS/" \
        -e "s/^size = .*/size = $STUDY_SIZE/" -e "s/^steps = .*/steps = $STUDY_STEPS/" \
        -e "s/^backend = .*/backend = \"$STUDY_BACKEND\"\\ndevice = \"$STUDY_DEVICE\"/" \
        studies/quick.toml > "$spec"
    grep -E '^(name|trials|size|steps|backend|device) ' "$spec"
    steer run "$spec" --storage "$db" &
    run=$!
    for t in $(seq 120); do  # the first trial runs once its kernels have compiled
        steer show --storage "$db" --json 2>/dev/null | grep -q '"RUNNING"' && break
        sleep 0.5
    done
    steer ctl set-lr --trial 0 5e-4 --storage "$db" --by gpu-check --wait --wait-timeout 30 || return 1
    if [ -n "$dry" ]; then  # the CPU's toy trial would outrun nothing: end it here
        steer ctl prune --trial 0 --storage "$db" --by gpu-check --reason "dry run: steered once" --wait || return 1
    fi
    wait "$run" || return 1
    steer show --storage "$db" || return 1
    steer show --trial 0 --storage "$db" || return 1
    steer replay --trial 0 --storage "$db" || return 1
    steer show --storage "$db" --json | "$py" -c '
import json, sys
trials = json.load(sys.stdin)
assert all(t["state"] in ("COMPLETE", "PRUNED") for t in trials), [t["state"] for t in trials]
assert any(t.get("steered") for t in trials), "no trial was steered"
print("study ok:", len(trials), "trials; best", round(max(t["psnr"] or 0 for t in trials), 2), "dB")'
}

if [ -n "$dry" ]; then
    KERNEL_TESTS=2 STUDY_TRIALS=1 STUDY_SIZE=16 STUDY_STEPS=100000 STUDY_BACKEND=torch STUDY_DEVICE=cpu
    goal=(--device cpu --points 256 --steps 2 --warmup 1 --backends torch triton:tf32 triton-step:tf32)
    precision=(--precision-size 16 --precision-steps 5 --precision-seeds 0)
    trainer_step=(--step-size 16 --step-steps 5)
    resources=(--widths 64 --precisions tf32 --activations relu --encodings none)
    sweep=(--device cpu --widths 32 --points 256 --steps 2 --warmup 1 --backends torch triton:tf32)
else
    STUDY_TRIALS=2 STUDY_SIZE=256 STUDY_STEPS=8000 STUDY_BACKEND=triton STUDY_DEVICE=cuda
    goal=(--widths 64 --points 65536 --backends torch compile triton:fp32 triton:tf32x3 triton:tf32 triton:bf16
          triton-step:tf32 triton-step:bf16)
    precision=(--precision-seeds 0 1)
    trainer_step=()
    resources=(--widths 16 32 64 --precisions tf32)
    sweep=(--backends torch compile triton:fp32 triton:tf32x3 triton:tf32 triton:bf16 triton-step:tf32 triton-step:bf16
           --points 16384 65536 262144 1048576)
fi
export -f environment kernel_tests study
export py dry KERNEL_TESTS STUDY_TRIALS STUDY_SIZE STUDY_STEPS STUDY_BACKEND STUDY_DEVICE

# The limits (and 5 s each to kill a step that overran) add up to 885 s, so the whole check ends within
# 15 minutes however a step goes (tests/test_gpu_check.py). Times on an H200 (Triton 3.6), 2026-11-26:
# environment 7 s, resources 61, kernel-tests 165 (then 8 jobs, now 12), bench-goal 32, study 100, trainer-step 75.
step environment 20 bash -c environment
step resources 80 "$py" -m steer.kernels.resources --arch auto "${resources[@]}" --json "$out/resources.json"
TAIL=60 step kernel-tests 165 bash -c kernel_tests
step bench-goal 80 "$py" -m steer.kernels.bench --hidden-layers 3 --variants read fused graph "${goal[@]}" \
    --json "$out/kernels-bench-goal.json"
step precision 125 "$py" -m steer.bench precision "${precision[@]}" --json "$out/precision.json"
step study 130 bash -c study
step trainer-step 95 "$py" -m steer.bench step "${trainer_step[@]}" --json "$out/trainer-step.json"
step bench-sweep 150 "$py" -m steer.kernels.bench "${sweep[@]}" \
    --json "$out/kernels-bench-gpu.json" --plot "$out/kernels-bench-gpu.png"
echo "report: $report"
exit "$status"
