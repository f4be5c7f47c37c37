#!/usr/bin/env bash
# The runtime's GPU check (issue #11): run it on a machine with one or more NVIDIA GPUs and
# torch with CUDA (pip install -e '.[runtime]' with a CUDA build of torch 2.13).
#
#   bash scripts/gpu_check.sh            # about 2-4 minutes on a GPU machine
#   PYTHON=path/to/python bash scripts/gpu_check.sh
#
# Checks, one summary line each ("ok" or "FAIL"), exit code 1 if any failed:
#   1. torch, and every dualsim module compiles and every runtime module imports (the CUDA
#      code paths included: a CPU-only machine catches their syntax and import errors here);
#   2. cpu: a 2 x 2 expert-parallel DualPipe run on gloo matches the reference, and its
#      torch.profiler trace is Chrome trace JSON as Perfetto reads it (always run);
#   3. cuda dualpipe / zb-v / 1f1b: 2 pipeline ranks x 2 expert-parallel processes on the GPUs
#      (NCCL with one GPU per process; with fewer GPUs they share them over gloo, staging the
#      all-to-all through host memory), fp32 gradients and weights against the single-process
#      reference (1e-5 relative);
#   4. cuda profiler trace: the DualPipe run's trace, with GPU kernels, action and piece ranges;
#   5. cuda overlap on two streams: from that trace, the share of the all-to-all's GPU work
#      (launched inside an all-to-all piece's range: NCCL kernels, or the staging copies when
#      processes share a GPU) that ran while a compute kernel ran; it fails unless that work
#      ran on a stream of its own and some of it overlapped compute.
# The line checks are python -m dualsim.runtime.gpu_check (torch-free, tested on the CPU).
# On a machine without a GPU the CUDA checks print "skipped: no GPU" and the script exits 0.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=0

# check NAME COMMAND...: runs COMMAND; its last output line is the summary
check() {
    local name=$1
    shift
    local out
    if out=$("$@" 2>&1); then
        echo "ok    $name: $(tail -n 1 <<<"$out")"
    else
        echo "FAIL  $name: $(tail -n 3 <<<"$out" | tr '\n' ' ')"
        failed=1
    fi
}

modules() {
    $PY -m compileall -q dualsim >/dev/null || return 1
    $PY - <<'PYEOF'
import importlib, pkgutil
import dualsim.runtime as runtime
names = [m.name for m in pkgutil.iter_modules(runtime.__path__)]
for name in names:
    importlib.import_module(f"dualsim.runtime.{name}")
print(f"dualsim compiles; {len(names)} runtime modules import")
PYEOF
}

# run_ep FAMILY MB DEVICE [extra run options...]: a 2 x 2 run, checked against the reference
run_ep() {
    local family=$1 mb=$2 device=$3
    shift 3
    $PY -m dualsim.cli emit "$family" --ranks 2 --microbatches "$mb" -o "$work/$family.json" \
        >/dev/null || return 1
    $PY -m dualsim.cli run "$work/$family.json" --ep 2 --device "$device" --dtype float32 \
        --steps 3 --json "$@" >"$work/$family-$device.out" || return 1
    $PY -m dualsim.runtime.gpu_check run "$work/$family-$device.out"
}

check "torch" $PY -c 'import torch, dualsim; print(f"torch {torch.__version__}, cuda {torch.cuda.is_available()}")'
check "modules" modules
check "cpu dualpipe ep" run_ep dualpipe 4 cpu --profile-trace "$work/cpu-trace.json"
check "cpu profiler trace" $PY -m dualsim.runtime.gpu_check trace "$work/cpu-trace.json"

gpus=$($PY -c 'import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)' 2>/dev/null || echo 0)
if [ "$gpus" = "0" ]; then
    echo "skipped: no GPU (cuda dualpipe, zb-v and 1f1b with EP, profiler trace, overlap on two streams)"
    exit $failed
fi
if [ "$gpus" -ge 4 ]; then how="NCCL, one GPU per process"; else how="shared round-robin over gloo, all-to-all staged through host memory"; fi
echo "info  $gpus GPU(s) ($($PY -c 'import torch; print(torch.cuda.get_device_name(0))')) for 4 processes: $how"

check "cuda dualpipe ep" run_ep dualpipe 4 cuda --profile-trace "$work/trace.json" \
    --hidden 256 --expert-hidden 512 --heads 4 --seq 128 --microbatch-size 4
check "cuda zb-v ep" run_ep zb-v 4 cuda
check "cuda 1f1b ep" run_ep 1f1b 4 cuda
check "cuda profiler trace" $PY -m dualsim.runtime.gpu_check trace "$work/trace.json" --gpu
check "cuda overlap on two streams" $PY -m dualsim.runtime.gpu_check overlap "$work/trace.json"
exit $failed
