"""Hardware profiles: load and validate a GPU cluster description (TOML), list the built-ins.

A profile is data, never constants in code (docs/hardware-mode.md). Every number in a profile
file is a table ``{ value = ..., unit = "...", source = "..." }``; loading checks that every
section and key is known, that required keys are present, that the unit is the expected one and
that a source is given, and that bandwidths, peaks and sizes are positive. Any problem raises
ProfileError naming the file and the field. Built-in profiles live in the package
(``dualsim/data/profiles``, also reachable as ``hardware_profiles/`` in the repository), so
they are found after a non-editable install; a user's own file path is accepted wherever a name
is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from dualsim.cluster.gemm import GemmParams
from dualsim.datafiles import (builtin_files, check_description, check_name, read_toml,
                               resolve)
from dualsim.errors import ProfileError

#: section -> key -> (unit, rule, required). Rules: "pos" > 0, "int" integer > 0,
#: "frac" in (0, 1], "share" in [0, 1), "nonneg" >= 0.
PROFILE_SCHEMA: dict[str, dict[str, tuple[str, str, bool]]] = {
    "gpu": {
        "sms": ("SM", "int", True),
        "hbm": ("GB", "pos", True),
        "hbm_bandwidth": ("TB/s", "pos", True),
        "bf16_peak": ("TFLOPS", "pos", True),
        "fp8_peak": ("TFLOPS", "pos", False),  # absent: no FP8 (A100)
        "workspace": ("GB", "nonneg", True),
        "fragmentation": ("fraction", "nonneg", True),
    },
    "node": {
        "gpus_per_node": ("GPU", "int", True),
        "nvlink_bandwidth": ("GB/s", "pos", True),
        "ib_bandwidth": ("GB/s", "pos", True),
    },
    "comm": {  # the communication law: dualsim/cluster/comm.py, fit in cluster/comm_fit.py
        "sms": ("SM", "int", True),  # SMs of the all-to-all kernels (DeepEP num_sms)
        "a2a_per_sm": ("GB/s/SM", "pos", True),
        "dispatch_latency": ("ms", "nonneg", True),
        "combine_latency": ("ms", "nonneg", True),
        "a2a_peer_latency": ("us", "nonneg", True),
        "a2a_overlap_rate": ("fraction", "frac", True),
        "interference": ("fraction", "share", True),
        "pp_sms": ("SM", "int", True),
        "dp_sms": ("SM", "int", True),
        "nccl_per_sm": ("GB/s/SM", "pos", True),
        "nccl_latency": ("us", "nonneg", True),
    },
    "gemm": {  # the shape-aware GEMM model (dualsim/cluster/gemm.py)
        "fp8_mainloop": ("fraction", "frac", False),  # required with gpu.fp8_peak
        "fp8_wgrad_mainloop": ("fraction", "frac", False),
        "bf16_mainloop": ("fraction", "frac", True),
        "bf16_wgrad_mainloop": ("fraction", "frac", True),
        "hbm_fraction": ("fraction", "frac", True),
        "sm_load_bandwidth": ("GB/s", "pos", True),
        "launch": ("us", "nonneg", True),
    },
    "efficiency": {
        "attention_fwd": ("fraction", "frac", True),
        "attention_bwd": ("fraction", "frac", True),
        "elementwise": ("fraction", "frac", True),
    },
}


#: the range a value of each unit may take: anything outside is a typo or hostile (a peak of
#: 5e-324 TFLOPS gives an infinite step, an SM scale of 2**62 divides by zero downstream). A
#: field's rule tightens it ("nonneg" and "share" let 0 in; "share" stays below 1); FIELD_RANGES
#: overrides it for one field. Every unit in PROFILE_SCHEMA needs an entry here.
UNIT_RANGES: dict[str, tuple[float, float]] = {
    "SM": (1, 10_000),
    "GPU": (1, 1024),
    "GB": (1e-3, 1e6),
    "TB/s": (1e-3, 1e3),
    "TFLOPS": (1e-3, 1e6),
    "GB/s": (1e-3, 1e6),
    "GB/s/SM": (1e-6, 1e4),
    "fraction": (1e-3, 1.0),
    "ms": (1e-6, 1e6),
    "us": (1e-3, 1e9),
}
#: "section.key" -> (lo, hi) for a field whose unit's range does not fit it
FIELD_RANGES: dict[str, tuple[float, float]] = {}


def field_range(section: str, key: str) -> tuple[float, float]:
    """The (lo, hi) a profile field's value must lie in (inclusive), after its rule."""
    unit, rule = PROFILE_SCHEMA[section][key][:2]
    lo, hi = FIELD_RANGES.get(f"{section}.{key}", UNIT_RANGES[unit])
    return (0.0 if rule in ("nonneg", "share") else lo), hi


def check_range(what: str, value: float, lo: float, hi: float, unit: str = "") -> None:
    """ProfileError naming ``what`` and the range unless lo <= value <= hi."""
    if not lo <= value <= hi:
        unit = "" if unit in ("", "fraction") else f" {unit}"
        raise ProfileError(f"{what} must be between {lo:g} and {hi:g}{unit}, got {value!r}")


@dataclass(frozen=True)
class Profile:
    """One GPU cluster: per-GPU compute, memory and links, comm-kernel behaviour, efficiencies.

    Units: bandwidths in bytes/s, peaks in FLOP/s, sizes in bytes, times in seconds.
    """

    name: str
    description: str
    source: str  # the file it came from
    sms: int
    hbm_bytes: float
    hbm_bandwidth: float
    bf16_flops: float
    fp8_flops: float | None
    gpus_per_node: int
    nvlink_bandwidth: float
    ib_bandwidth: float
    comm_sms: int  # SMs an all-to-all kernel holds while it runs
    a2a_per_sm: float  # bytes/s of token copies (IB sends + NVLink forwards) one a2a SM moves
    dispatch_latency: float  # fixed cost of a dispatch-type all-to-all kernel, no peers
    combine_latency: float
    a2a_peer_latency: float  # added to an all-to-all's fixed cost per EP peer
    a2a_overlap_rate: float  # all-to-all per-SM rate factor while compute runs beside it
    interference: float  # compute slowdown (beyond the lost SMs) while a comm kernel is resident
    pp_sms: int  # NCCL channels (SMs) of a PP send or receive
    dp_sms: int  # NCCL channels (SMs) of the gradient sync
    nccl_per_sm: float  # bytes/s one NCCL channel moves
    nccl_latency: float
    efficiency: dict[str, float]  # attention_fwd, attention_bwd, elementwise (of HBM bandwidth)
    gemm: GemmParams
    workspace_bytes: float  # CUDA context, library workspaces, communicator buffers
    fragmentation: float  # allocator overhead, as a share of the other memory

    def peak_flops(self, dtype: str) -> float:
        """Dense peak for ``dtype`` ("fp8" or "bf16"); FP8 falls back to BF16 where absent."""
        if dtype == "fp8" and self.fp8_flops is not None:
            return self.fp8_flops
        return self.bf16_flops

    def link_bandwidth(self, link: str) -> float:
        """Bytes/s of one GPU's ``link`` ("ib" or "nvlink"), one direction."""
        return self.ib_bandwidth if link == "ib" else self.nvlink_bandwidth

    def with_overrides(self, *, comm_sms: int | None = None, ib_gbps: float | None = None,
                       nvlink_gbps: float | None = None) -> "Profile":
        """A copy with the CLI's what-if overrides applied (validated like the file)."""
        changes: dict[str, Any] = {}
        if comm_sms is not None:
            if not 0 < comm_sms < self.sms:
                raise ProfileError(
                    f"--comm-sms {comm_sms} is out of range: profile {self.name} has {self.sms} "
                    f"SMs; choose 1..{self.sms - 1}")
            changes["comm_sms"] = int(comm_sms)
        for flag, key, val in (("--ib-gbps", "ib_bandwidth", ib_gbps),
                               ("--nvlink-gbps", "nvlink_bandwidth", nvlink_gbps)):
            if val is not None:
                if not (val > 0 and math.isfinite(val)):
                    raise ProfileError(f"{flag} must be a positive number of GB/s, got {val:g}")
                check_range(flag, val, *field_range("node", key), "GB/s")
                changes[key] = float(val) * 1e9
        return replace(self, **changes) if changes else self


def _field(raw: dict[str, Any], section: str, key: str, unit: str, rule: str,
           file: str) -> float | None:
    where = f"{file}: field {section}.{key}"
    entry = raw.get(section, {}).get(key)
    if entry is None:
        return None
    if not isinstance(entry, dict):
        raise ProfileError(f"{where} must be a table {{ value = ..., unit = \"{unit}\", "
                           "source = \"...\" }")
    unknown = set(entry) - {"value", "unit", "source"}
    if unknown:
        raise ProfileError(f"{where} has unknown key(s) {', '.join(sorted(unknown))}; "
                           "allowed: value, unit, source")
    for part in ("value", "unit", "source"):
        if part not in entry:
            raise ProfileError(f"{where} is missing its {part}")
    if entry["unit"] != unit:
        raise ProfileError(f"{where} has unit {entry['unit']!r}; expected {unit!r}")
    if not isinstance(entry["source"], str) or not entry["source"].strip():
        raise ProfileError(f"{where} needs a non-empty source")
    v = entry["value"]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ProfileError(f"{where} value must be a number, got {v!r}")
    if rule == "int" and not isinstance(v, int):
        raise ProfileError(f"{where} must be a positive integer, got {v!r}")
    check_range(where, v, *field_range(section, key), unit)
    if rule == "pos" and v <= 0:
        raise ProfileError(f"{where} must be positive, got {v!r}")
    if rule == "nonneg" and v < 0:
        raise ProfileError(f"{where} must not be negative, got {v!r}")
    if rule == "frac" and not 0 < v <= 1:
        raise ProfileError(f"{where} must be a fraction in (0, 1], got {v!r}")
    if rule == "share" and not 0 <= v < 1:
        raise ProfileError(f"{where} must be a fraction in [0, 1), got {v!r}")
    return float(v)


def parse_profile(raw: dict[str, Any], file: str) -> Profile:
    """Validate a parsed profile table (see PROFILE_SCHEMA) and build a Profile."""
    top = set(raw) - {"name", "description", *PROFILE_SCHEMA}
    if top:
        raise ProfileError(f"{file}: unknown field {sorted(top)[0]!r}; allowed sections: "
                           f"{', '.join(PROFILE_SCHEMA)} (plus name, description)")
    vals: dict[str, float | None] = {}
    for section, keys in PROFILE_SCHEMA.items():
        sec = raw.get(section)
        if sec is None:
            raise ProfileError(f"{file}: missing section [{section}]")
        if not isinstance(sec, dict):
            raise ProfileError(f"{file}: field {section} must be a table [{section}]")
        extra = set(sec) - set(keys)
        if extra:
            raise ProfileError(f"{file}: unknown field {section}.{sorted(extra)[0]}; allowed: "
                               f"{', '.join(keys)}")
        for key, (unit, rule, required) in keys.items():
            v = _field(raw, section, key, unit, rule, file)
            if v is None and required:
                raise ProfileError(f"{file}: missing field {section}.{key}")
            vals[f"{section}.{key}"] = v
    name = check_name(raw["name"], file) if "name" in raw else Path(file).stem
    sms, comm_sms = int(vals["gpu.sms"] or 0), int(vals["comm.sms"] or 0)
    for key in ("sms", "pp_sms", "dp_sms"):
        if int(vals[f"comm.{key}"] or 0) >= sms:
            raise ProfileError(f"{file}: field comm.{key} ({int(vals[f'comm.{key}'] or 0)}) "
                               f"must be below gpu.sms ({sms})")
    c = {k: float(vals[f"comm.{k}"] or 0) for k in PROFILE_SCHEMA["comm"]}
    fp8 = vals["gpu.fp8_peak"]
    mainloop = {"bf16": float(vals["gemm.bf16_mainloop"] or 0)}
    wgrad = {"bf16": float(vals["gemm.bf16_wgrad_mainloop"] or 0)}
    if fp8 is not None:
        for key, into in (("fp8_mainloop", mainloop), ("fp8_wgrad_mainloop", wgrad)):
            if vals[f"gemm.{key}"] is None:
                raise ProfileError(f"{file}: missing field gemm.{key} (needed with gpu.fp8_peak)")
            into["fp8"] = float(vals[f"gemm.{key}"] or 0)
    gemm = GemmParams(mainloop, float(vals["gemm.hbm_fraction"] or 0),
                      float(vals["gemm.sm_load_bandwidth"] or 0) * 1e9,
                      float(vals["gemm.launch"] or 0) * 1e-6, wgrad)
    return Profile(
        name=name, description=check_description(raw.get("description", ""), file), source=file,
        sms=sms, hbm_bytes=float(vals["gpu.hbm"] or 0) * 1e9,
        hbm_bandwidth=float(vals["gpu.hbm_bandwidth"] or 0) * 1e12,
        bf16_flops=float(vals["gpu.bf16_peak"] or 0) * 1e12,
        fp8_flops=None if fp8 is None else fp8 * 1e12,
        gpus_per_node=int(vals["node.gpus_per_node"] or 0),
        nvlink_bandwidth=float(vals["node.nvlink_bandwidth"] or 0) * 1e9,
        ib_bandwidth=float(vals["node.ib_bandwidth"] or 0) * 1e9,
        comm_sms=comm_sms, a2a_per_sm=c["a2a_per_sm"] * 1e9,
        dispatch_latency=c["dispatch_latency"] * 1e-3, combine_latency=c["combine_latency"] * 1e-3,
        a2a_peer_latency=c["a2a_peer_latency"] * 1e-6, a2a_overlap_rate=c["a2a_overlap_rate"],
        interference=c["interference"], pp_sms=int(c["pp_sms"]), dp_sms=int(c["dp_sms"]),
        nccl_per_sm=c["nccl_per_sm"] * 1e9, nccl_latency=c["nccl_latency"] * 1e-6,
        efficiency={k: float(vals[f"efficiency.{k}"] or 0) for k in PROFILE_SCHEMA["efficiency"]},
        gemm=gemm, workspace_bytes=float(vals["gpu.workspace"] or 0) * 1e9,
        fragmentation=float(vals["gpu.fragmentation"] or 0),
    )


def load_profile(name_or_path: str) -> Profile:
    """A built-in profile by name (h800, h100, h20, a100) or a user's TOML file."""
    path = resolve(name_or_path, "profiles", "hardware profile")
    return parse_profile(read_toml(path, "hardware profile"), str(path))


def list_profiles() -> list[tuple[str, str]]:
    """(name, one-line description) of the built-in profiles."""
    out = []
    for name, path in builtin_files("profiles").items():
        raw = read_toml(path, "hardware profile")
        out.append((name, str(raw.get("description", ""))))
    return out
