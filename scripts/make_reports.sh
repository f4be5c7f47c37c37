#!/usr/bin/env bash
# Regenerate every example report checked into reports/ (see reports/README.md).
# Usage: scripts/make_reports.sh            (from the repository root, dualsim installed)
# Outputs are deterministic: rerunning on an unchanged tree gives byte-identical files.
set -euo pipefail
cd "$(dirname "$0")/.."
out=reports
command -v dualsim > /dev/null || { echo "dualsim not found: install it (pip install -e .) or activate its venv" >&2; exit 1; }

# 1. DeepSeek's DualPipe README figure: abstract costs F=I=W=1, B=2, F&B=3, R=8, M=20,
#    with DualPipeV, ZB-V and 1F1B at the same R, M and costs for comparison.
rm -rf "$out/dualpipe-r8-m20"
dualsim compare dualpipe dualpipev zb-v 1f1b --ranks 8 --microbatches 20 \
  --costs F=1,I=1,W=1,B=2,FB=3 --out "$out/dualpipe-r8-m20" > /dev/null

# 2. DeepSeek-V3 on H800 (PP16, EP64, 2048 GPUs), hardware mode. 32 micro-batches per step
#    keep the checked-in traces and CSVs small; drop --microbatches for the preset's 120.
rm -rf "$out/deepseek-v3-h800"
dualsim compare dualpipe dualpipev zb-v 1f1b --profile h800 --model deepseek-v3 \
  --microbatches 32 --out "$out/deepseek-v3-h800" > /dev/null

# 3. The planner on DeepSeek-V3, 2048 H800s: ranking CSV, Pareto chart, best plan.
rm -rf "$out/plan-deepseek-v3-h800"; mkdir -p "$out/plan-deepseek-v3-h800"
dualsim plan --profile h800 --model deepseek-v3 --gpus 2048 \
  --out "$out/plan-deepseek-v3-h800" --emit "$out/plan-deepseek-v3-h800/best_plan.json" \
  --json > "$out/plan-deepseek-v3-h800/plan.json"
echo "reports written to $out/" >&2
