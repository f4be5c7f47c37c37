#!/usr/bin/env bash
# Regenerate the example reports in reports/ (see reports/README.md: git keeps only report.md,
# summary.json, the plan files and the charts the docs show; this script writes the full folders).
# Usage: scripts/make_reports.sh            (from anywhere, dualsim installed)
#        DUALSIM="python -m dualsim" scripts/make_reports.sh   (any command that runs the CLI)
# Outputs are deterministic: rerunning on an unchanged tree gives byte-identical files.
set -euo pipefail
cd "$(dirname "$0")/.."
out=reports
read -r -a dualsim <<< "${DUALSIM:-dualsim}"
command -v "${dualsim[0]}" > /dev/null || {
  echo "error: ${dualsim[0]} not found: install dualsim (pip install -e .), activate its venv, or set DUALSIM=\"python -m dualsim\"" >&2
  exit 1
}

# 1. DeepSeek's DualPipe README figure: abstract costs F=I=W=1, B=2, F&B=3, R=8, M=20,
#    with DualPipeV, ZB-V and 1F1B at the same R, M and costs for comparison.
rm -rf "$out/dualpipe-r8-m20"
"${dualsim[@]}" compare dualpipe dualpipev zb-v 1f1b --ranks 8 --microbatches 20 \
  --costs F=1,I=1,W=1,B=2,FB=3 --out "$out/dualpipe-r8-m20" > /dev/null

# 2. DeepSeek-V3 on H800 in hardware mode, the preset's published layout (PP16, EP64, 2048 GPUs,
#    M=120): the README's headline table, with charts, traces and CSVs (about 200 MB).
rm -rf "$out/deepseek-v3-h800"
"${dualsim[@]}" compare dualpipe dualpipev zb-v 1f1b 1f1b-overlap interleaved-overlap \
  --profile h800 --model deepseek-v3 --out "$out/deepseek-v3-h800" > /dev/null

# 3. The planner on DeepSeek-V3, 2048 H800s: ranking CSV, Pareto chart, best plan.
rm -rf "$out/plan-deepseek-v3-h800"; mkdir -p "$out/plan-deepseek-v3-h800"
"${dualsim[@]}" plan --profile h800 --model deepseek-v3 --gpus 2048 \
  --out "$out/plan-deepseek-v3-h800" --emit "$out/plan-deepseek-v3-h800/best_plan.json" \
  --json > "$out/plan-deepseek-v3-h800/plan.json"
echo "reports written to $out/" >&2
