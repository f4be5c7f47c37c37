"""Make the trimmed copy of DeepSeek's trace that the tests use (run from the repository root).

    python tests/data/traces/trim_trace.py ../shared/data/deepseek-v3-train-trace.json \
        tests/data/traces/deepseek-v3-train-trace.trimmed.json.gz

Keeps what calibration reads: the annotated ranges, every GPU kernel/memcpy/memset, the launch
call of each (same correlation id) and its ac2g flow, the first device's properties and the
distributed info. Drops CPU ops and launch calls of nothing. `dualsim calibrate` gives the same
numbers on both files (tests/test_calibrate_trace.py checks it when ../shared is present).
"""

from __future__ import annotations

import gzip
import json
import sys


def trim(src: str, dst: str) -> None:
    with open(src) as f:
        doc = json.load(f)
    events = doc["traceEvents"]
    gpu = {e["args"]["correlation"] for e in events
           if e.get("ph") == "X" and e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")}
    keep = []
    for e in events:
        cat = e.get("cat")
        if cat in ("kernel", "gpu_memcpy", "gpu_memset", "user_annotation"):
            keep.append(e)
        elif cat in ("cuda_runtime", "cuda_driver") and e["args"].get("correlation") in gpu:
            keep.append(e)
        elif cat == "ac2g" and e.get("id") in gpu:
            keep.append(e)
    out = {k: v for k, v in doc.items() if k != "traceEvents"}
    out["deviceProperties"] = doc["deviceProperties"][:1]
    out["traceEvents"] = keep
    text = json.dumps(out, separators=(",", ":"), sort_keys=True)
    with gzip.GzipFile(dst, "wb", mtime=0) as f:  # mtime 0: byte-identical output
        f.write(text.encode())


if __name__ == "__main__":
    trim(sys.argv[1], sys.argv[2])
