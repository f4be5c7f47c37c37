#!/usr/bin/env bash
# Regenerate the example plans in this folder (one per family, R=4, M=8; interleaved v=2)
# with the installed dualsim. tests/test_golden_schedules.py checks them byte for byte.
set -euo pipefail
cd "$(dirname "$0")"
for s in gpipe 1f1b 1f1b-overlap interleaved interleaved-overlap zb-h1 zb-h2 zb-v dualpipe dualpipev; do
  dualsim emit "$s" --ranks 4 --microbatches 8 -o "$s.json"
done
