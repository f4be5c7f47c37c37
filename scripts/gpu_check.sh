#!/usr/bin/env bash
# The runtime's GPU check (issue #11): run it on a machine with one or more NVIDIA GPUs and
# torch with CUDA (pip install -e '.[runtime]' with a CUDA build of torch 2.13).
#
#   bash scripts/gpu_check.sh            # about 2-4 minutes on a GPU machine
#
# Checks, one summary line each ("ok" or "FAIL"), exit code 1 if any failed:
#   1. cpu: a 2 x 2 expert-parallel DualPipe run on gloo matches the reference (always runs);
#   2. cuda dualpipe / zb-v / 1f1b: 2 pipeline ranks x 2 expert-parallel processes on the GPUs
#      (NCCL with one GPU per process; with fewer GPUs they share them over gloo), fp32
#      gradients and weights against the single-process reference (1e-5 relative);
#   3. cuda overlap: DualPipe's FB units on two CUDA streams: from a torch.profiler trace, the
#      share of all-to-all kernel time that ran while a compute kernel ran on another stream;
#   4. cuda profiler trace: valid Chrome trace JSON with GPU kernels, action and piece ranges.
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

# run_ep FAMILY MB DEVICE [extra run options...]: a 2 x 2 run, checked against the reference
run_ep() {
    local family=$1 mb=$2 device=$3
    shift 3
    $PY -m dualsim.cli emit "$family" --ranks 2 --microbatches "$mb" -o "$work/$family.json" \
        >/dev/null || return 1
    $PY -m dualsim.cli run "$work/$family.json" --ep 2 --device "$device" --dtype float32 \
        --steps 3 --json "$@" >"$work/$family-$device.out" || return 1
    $PY - "$work/$family-$device.out" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
ok = r["matches_reference"] and r["max_rel_grad_diff"] <= 1e-5 and r["a2a_bytes_per_step"] > 0
print(f"{r['schedule']} {r['ranks']}x{r['ep']} on {r['device']}/{r['backend']}: grad rel diff "
      f"{r['max_rel_grad_diff']:.2g}, step {r['step_time_s'] * 1e3:.1f} ms, all-to-all "
      f"{r['a2a_hidden_fraction'] * 100:.0f}% hidden")
sys.exit(0 if ok else 1)
EOF
}

check "torch" $PY -c 'import torch, dualsim; print(f"torch {torch.__version__}, cuda {torch.cuda.is_available()}")'
check "cpu dualpipe ep" run_ep dualpipe 4 cpu

gpus=$($PY -c 'import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)' 2>/dev/null || echo 0)
if [ "$gpus" = "0" ]; then
    echo "skipped: no GPU (cuda dualpipe, zb-v and 1f1b with EP, overlap on two streams, profiler trace)"
    exit $failed
fi
echo "info  $gpus GPU(s): $($PY -c 'import torch; print(torch.cuda.get_device_name(0))')"

check "cuda dualpipe ep" run_ep dualpipe 4 cuda --profile-trace "$work/trace.json" \
    --hidden 256 --expert-hidden 512 --heads 4 --seq 128 --microbatch-size 4
check "cuda zb-v ep" run_ep zb-v 4 cuda
check "cuda 1f1b ep" run_ep 1f1b 4 cuda

trace_check() {
    $PY - "$work/trace.json" "$1" <<'EOF'
import json, sys
trace = json.load(open(sys.argv[1]))  # valid JSON, as Perfetto's importer needs
events = trace["traceEvents"]
assert trace["dualsimEp"] == 2 and all("ph" in e and "pid" in e for e in events)
kernels = [e for e in events if e.get("ph") == "X" and e.get("cat") == "kernel"]
ranges = {e["name"] for e in events if e.get("ph") == "X" and e.get("cat") == "user_annotation"}
if sys.argv[2] == "trace":
    need = {"attn(F)", "dispatch(F)", "mlp(B)", "combine(B)", "attn(W)"}
    missing = need - ranges
    assert kernels and not missing, f"kernels {len(kernels)}, missing ranges {missing}"
    print(f"{len(events)} events, {len(kernels)} GPU kernels, {len(ranges)} range names, "
          f"processes {sorted({e['pid'] for e in events})}")
    sys.exit(0)
# overlap: per process, the time of all-to-all kernels (launched inside an all-to-all piece's
# range: dispatch(F), combine(F), combine(B), dispatch(B)) that ran while a compute kernel ran
# on another stream (FB units post the all-to-all on the communication stream)
A2A = {"dispatch(F)", "combine(F)", "combine(B)", "dispatch(B)"}
launch = {(e["pid"], e["args"]["correlation"]): e["ts"] for e in events
          if e.get("cat") in ("cuda_runtime", "cuda_driver") and "correlation" in e.get("args", {})}
hidden = total = 0.0
for pid in sorted({e["pid"] for e in kernels}):
    spans = [(e["ts"], e["ts"] + e["dur"]) for e in events if e["pid"] == pid
             and e.get("cat") == "user_annotation" and e.get("name") in A2A]
    mine = [e for e in kernels if e["pid"] == pid]

    def in_a2a(e):
        t = launch.get((pid, e.get("args", {}).get("correlation")))
        return t is not None and any(a <= t <= b for a, b in spans)

    comm = [(e["ts"], e["ts"] + e["dur"], e["tid"]) for e in mine if in_a2a(e)]
    comp = [(e["ts"], e["ts"] + e["dur"], e["tid"]) for e in mine if not in_a2a(e)]
    for s, t, stream in comm:
        total += t - s
        spans_c = sorted((max(s, a), min(t, b)) for a, b, st in comp
                         if st != stream and a < t and b > s)
        covered, end = 0.0, s
        for a, b in spans_c:
            a = max(a, end)
            if b > a:
                covered, end = covered + b - a, b
        hidden += covered
if total == 0:
    print("no all-to-all kernels on the GPU (processes share GPUs over gloo: the all-to-all "
          "runs on the host, nothing to overlap on the GPU)")
    sys.exit(0)
streams = {e["tid"] for e in kernels}
print(f"{hidden / total * 100:.0f}% of all-to-all kernel time overlapped compute on another "
      f"stream ({len(streams)} streams)")
sys.exit(0 if hidden > 0 else 1)
EOF
}
check "cuda profiler trace" trace_check trace
check "cuda overlap on two streams" trace_check overlap
exit $failed
