"""The headline numbers README.md and docs/ print are what the model computes now.

One hardware-mode run per schedule on the defaults (DeepSeek-V3 on h800, the preset's published
layout), through the same path as `dualsim compare --profile h800 --model deepseek-v3`, shared by
every test here. Each number is formatted as the docs print it (same rounding) and looked up in
the text, so a change to the model that moves a printed figure fails here until the docs move
with it. Numbers from slow sweeps (bench/bench_hardware.py's link and comm-SM panels) are not
recomputed here; tests/test_whatif.py checks their mechanism.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from dualsim.cli.simulation import Config, load_schedule, run
from dualsim.sim.result import SimResult

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
HARDWARE_MODE = ROOT / "docs" / "hardware-mode.md"
VALIDATION = ROOT / "docs" / "validation.md"
SCHEDULES = ["dualpipe", "dualpipev", "zb-v", "1f1b", "1f1b-overlap", "interleaved-overlap"]
FB_SCHEDULES = ["dualpipe", "dualpipev", "1f1b-overlap", "interleaved-overlap"]
HEADLINE_HEADER = ["schedule", "step (s)", "tokens/s/GPU", "MFU (BF16 peak)",
                   "peak memory (GB, max rank)", "all-to-all hidden"]
# DeepSeek-V3 report: 180K H800 GPU-hours per trillion training tokens
PUBLISHED_TOKENS_PER_S_PER_GPU = 1e12 / (180e3 * 3600)


def _config(**overrides) -> Config:
    """The CLI's configuration for `--profile h800 --model deepseek-v3` plus ``overrides``."""
    args = dict(ranks=None, microbatches=None, chunks=None, costs=None, comm=0.0, profile="h800",
                model="deepseek-v3", ep=None, gpus=None, comm_sms=None, microbatch_tokens=None,
                ib_gbps=None, nvlink_gbps=None)
    return Config.make(**{**args, **overrides})


@pytest.fixture(scope="module")
def runs() -> dict[str, SimResult]:
    """Every schedule of the headline table on the defaults, and DualPipe with a static SM split."""
    cfg = _config()
    out = {name: run(load_schedule(name, cfg, strict_chunks=False), cfg) for name in SCHEDULES}
    static = _config(sm_sharing="static")
    out["dualpipe static"] = run(load_schedule("dualpipe", static, strict_chunks=False), static)
    return out


def _tables(path: Path) -> list[list[list[str]]]:
    """Every markdown table in ``path``: rows of stripped cells, header first, rule dropped."""
    tables: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in path.read_text(encoding="utf-8").splitlines() + [""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                current.append(cells)
        elif current:
            tables.append(current)
            current = []
    return tables


def _table(path: Path, header: list[str]) -> list[list[str]]:
    found = [t for t in _tables(path) if t[0] == header]
    assert len(found) == 1, f"{path.name}: expected one table with header {header}"
    return found[0][1:]


def _prose(path: Path) -> str:
    """The file's text with every run of whitespace one space (docs wrap lines anywhere)."""
    return " ".join(path.read_text(encoding="utf-8").replace("×", "x").split())


def _layers(counts: list[int]) -> str:
    """A layer list as the docs write it: runs of one count as "count x run", e.g. [3, 4 x 14, 2]."""
    parts: list[str] = []
    i = 0
    while i < len(counts):
        j = i
        while j < len(counts) and counts[j] == counts[i]:
            j += 1
        parts.append(str(counts[i]) if j - i == 1 else f"{counts[i]} x {j - i}")
        i = j
    return "[" + ", ".join(parts) + "]"


def headline_row(name: str, r: SimResult) -> list[str]:
    x = r.extra
    return [name, f"{x['step_time_s']:.2f}", f"{x['tokens_per_s_per_gpu']:.0f}", f"{x['mfu']:.1%}",
            f"{x['peak_memory_gb']:.1f}", f"{x['comm_hidden_fraction']:.0%}"]


def test_runs_are_the_published_layout(runs):
    r = runs["dualpipe"]
    assert (r.ranks, r.microbatches) == (16, 120)
    assert r.extra["tokens_per_step"] == 15360 * 4096
    assert r.extra["comm_sms"] == 20 and r.extra["gpus"] == 2048 and r.extra["ep"] == 64


@pytest.mark.parametrize("path", [README, HARDWARE_MODE], ids=lambda p: p.name)
def test_headline_table(runs, path):
    expected = [headline_row(name, runs[name]) for name in SCHEDULES]
    assert _table(path, HEADLINE_HEADER) == expected


def test_what_changed_now_column(runs):
    rows = {r[0]: r[1:] for r in _table(HARDWARE_MODE, ["number", "before", "now", "cause"])}
    for name in SCHEDULES:
        now, cause = rows[f"{name} step"][1:]
        step = runs[name].extra["step_time_s"]
        assert now.startswith(f"{step:.2f} s"), (name, now)
        assert f"(d) {step:.2f}" in cause, (name, cause)   # the last stage of the change is now
    dp, zbv, f1b = runs["dualpipe"].extra, runs["zb-v"].extra, runs["1f1b"].extra
    assert rows["dualpipe step"][1] == f"{dp['step_time_s']:.2f} s ({dp['tokens_per_s_per_gpu']:.0f})"
    assert rows["1f1b all-to-all hidden"][1] == f"{f1b['comm_hidden_fraction']:.0%}"
    assert rows["dualpipe peak memory"][1] == f"{dp['peak_memory_gb']:.1f} GB"
    assert rows["1f1b peak memory"][1] == f"{f1b['peak_memory_gb']:.1f} GB"
    workspace = max(p.memory_breakdown_gb["workspace"] for p in runs["dualpipe"].per_rank
                    if p.peak_memory_gb == dp["peak_memory_gb"])
    assert f"workspace {workspace:.1f} GB" in rows["dualpipe peak memory"][2]
    static = runs["dualpipe static"].extra["tokens_per_s_per_gpu"]
    published = rows["DeepSeek-V3 vs the published 1543 tokens/s/GPU"][1]
    assert published == (f"{dp['tokens_per_s_per_gpu'] / PUBLISHED_TOKENS_PER_S_PER_GPU - 1:+.0%} "
                         f"(static partition: {static / PUBLISHED_TOKENS_PER_S_PER_GPU - 1:+.1%})")
    gap = zbv["step_time_s"] - dp["step_time_s"]
    assert rows["ZB-V − DualPipe, same defaults"][1] == f"{gap:.2f} s ({gap / dp['step_time_s']:.0%})"


def test_published_throughput_comparison(runs):
    dp, static = runs["dualpipe"].extra, runs["dualpipe static"].extra
    published = PUBLISHED_TOKENS_PER_S_PER_GPU

    def vs(x: dict, fmt: str) -> str:
        return format(x["tokens_per_s_per_gpu"] / published - 1, fmt)

    doc = _prose(HARDWARE_MODE)
    assert f"≈ {published:.0f} tokens/s/GPU over the whole run" in doc
    assert f"2048 GPUs, {dp['peak_memory_gb']:.1f} GB per GPU" in doc
    assert (f"the model gives {dp['tokens_per_s_per_gpu']:.0f} tokens/s/GPU ({vs(dp, '+.0%')})"
            in doc)
    assert (f"the same step is {static['step_time_s']:.2f} s, "
            f"**{static['tokens_per_s_per_gpu']:.0f} tokens/s/GPU ({vs(static, '+.1%')})**" in doc)
    readme = _prose(README)
    assert f"about {published:.0f} tokens/s/GPU over the whole run" in readme
    assert f"the model gives {static['tokens_per_s_per_gpu']:.0f} for DualPipe" in readme
    v3 = [row for row in _table(VALIDATION, ["model, layout", "published", "dualsim", "error"])
          if row[0].startswith("DeepSeek-V3: DualPipe PP16, EP64, 2048 H800")]
    assert [row[2:] for row in v3] == [[f"{dp['tokens_per_s_per_gpu']:.0f}", vs(dp, "+.1%")]]


def test_where_the_step_goes(runs):
    """docs/hardware-mode.md's reading of the what-if chart's left panel (bench_hardware.chart)."""
    def part(name: str) -> dict[str, float]:
        r = runs[name]
        busy, exposed = r.extra["compute_stream_s"], r.extra["comm_exposed_s"]
        return {"work": float(r.ideal), "sharing": busy - float(r.ideal), "exposed": exposed,
                "rest": r.makespan - busy - exposed}

    def span(key: str, names: list[str]) -> str:
        lo, hi = (f"{f(part(n)[key] for n in names):.1f}" for f in (min, max))
        return lo if lo == hi else f"{lo}-{hi}"

    doc = _prose(HARDWARE_MODE)
    assert f"the same {span('work', SCHEDULES)} s of compute on all SMs per rank" in doc
    assert f"{span('exposed', FB_SCHEDULES)} s stays exposed" in doc
    assert f"compute pays {span('sharing', FB_SCHEDULES)} s for sharing SMs" in doc
    assert f"nearly all its all-to-all is exposed ({part('zb-v')['exposed']:.1f} s)" in doc
    f1b = part("1f1b")
    assert f"({f1b['exposed']:.1f} s exposed, {f1b['sharing']:.1f} s of sharing)" in doc
    assert (f"{part('dualpipe')['rest']:.1f} s for DualPipe, "
            f"{span('rest', ['1f1b', '1f1b-overlap'])} s for 1F1B and 1F1B-overlap" in doc)
    io = runs["interleaved-overlap"]
    assert (f"{part('interleaved-overlap')['rest']:.1f} s for interleaved-overlap (its 32 stages "
            f"are unevenly filled: `{_layers(io.extra['layers_per_stage'])}` layers)" in doc)


def test_layers_per_stage(runs):
    doc = _prose(HARDWARE_MODE)
    lay = {n: _layers(runs[n].extra["layers_per_stage"]) for n in SCHEDULES}
    assert lay["zb-v"] == lay["dualpipev"]
    assert (f"DualPipe R=16: `{lay['dualpipe']}` layers; 1F1B: `{lay['1f1b']}`; ZB-V / DualPipeV "
            f"(32 slices): `{lay['zb-v']}`" in doc)
    assert f"interleaved-overlap: `{lay['interleaved-overlap']}`" in doc
    assert f"(`{lay['1f1b']}`: the head and MTP weigh about four layers)" in doc


def test_memory_entries(runs):
    ranks = runs["dualpipe"].per_rank
    doc = _prose(HARDWARE_MODE)
    buffers = {p.memory_breakdown_gb["a2a_buffers"] for p in ranks}
    assert len(buffers) == 1
    assert f"{buffers.pop():.2f} GB for DeepSeek-V3 (EP64, 20 SMs)" in doc
    logits_grad = max(p.memory_breakdown_gb["logits_grad"] for p in ranks)
    assert f"tokens x vocab x 4 B ({logits_grad:.1f} GB)" in doc


def test_memory_figure_caption(runs):
    peaks = [p.peak_memory_gb for p in runs["dualpipe"].per_rank]
    assert peaks[0] == peaks[-1] < min(peaks[1:-1]) == max(peaks[1:-1])   # what the caption says
    assert (f"the middle ranks peak at {peaks[1]:.1f} GB, the first and last (embedding, head and "
            f"MTP, and the logits and their FP32 gradient) at {peaks[0]:.1f} GB") in _prose(HARDWARE_MODE)


def test_overlap_families_do_not_fit(runs):
    """The README: the two -overlap families do not fit in 80 GB on the defaults; the others do."""
    hbm = _config().profile.hbm_bytes / 1e9
    assert hbm == 80.0
    assert f"The two -overlap families do not fit in {hbm:.0f} GB here" in _prose(README)
    over = {n for n in SCHEDULES if runs[n].extra["peak_memory_gb"] > hbm}
    assert over == {"1f1b-overlap", "interleaved-overlap"}


def test_planner_default_space():
    """docs/planner.md's table of default axes and its count for DeepSeek-V3 on 2048 H800s."""
    from dualsim.planner import candidates, default_axes

    cfg = _config()
    axes = default_axes(cfg.model, cfg.profile)
    rows = {r[1]: r[2] for r in _table(ROOT / "docs" / "planner.md", ["axis", "option", "default"])}
    assert rows["`--ranks`"] == ", ".join(map(str, axes["ranks"]))
    assert rows["`--ep`"].startswith(", ".join(map(str, axes["eps"])) + " ")
    assert rows["`--comm-sms`"] == ", ".join(map(str, axes["comm_sms"]))
    assert axes["precisions"] == ["fp8", "bf16"]
    n = len(candidates(**axes))
    assert n == math.prod(len(v) for v in axes.values())   # the axes' cross product
    assert f"For DeepSeek-V3 on 2048 H800s that is {n} configurations" in _prose(ROOT / "docs" / "planner.md")


def test_validation_deepseek_v2_throughput(runs):
    """docs/validation.md's DeepSeek-V2 row, computed as bench/validation.py does: ZB-H1 PP16, EP8,
    BF16 GEMMs, 9216 sequences per step on an assumed 1024 H800s, DeepSeek-V3's recomputation."""
    from dualsim.generators import generate
    from dualsim.sim.hardware_mode import simulate_hardware
    from dualsim.workload.hf_config import load_hf_config

    v2 = load_hf_config(ROOT / "dualsim" / "data" / "hf_configs" / "deepseek-v2.json",
                        precision="bf16", recompute=["rmsnorm", "mla_up_proj", "swiglu_output"])
    m = 9216 // (1024 // 16)
    got = simulate_hardware(generate("zb-h1", 16, m), "h800", v2, ep=8, gpus=1024)
    v2_published = 1e12 / (172.8e3 * 3600)
    v2_gap = got.extra["tokens_per_s_per_gpu"] / v2_published - 1
    rows = [r for r in _table(VALIDATION, ["model, layout", "published", "dualsim", "error"])
            if r[0].startswith("DeepSeek-V2: zero-bubble PP16 (ZB-H1 here), EP8, BF16, 9216")]
    assert [r[1:] for r in rows] == [[
        f"{v2_published:.0f} tokens/s/GPU (172.8K GPU-hours per trillion tokens, V2 report)",
        f"{got.extra['tokens_per_s_per_gpu']:.0f}", f"{v2_gap:+.1%}"]]
    v3_gap = runs["dualpipe"].extra["tokens_per_s_per_gpu"] / PUBLISHED_TOKENS_PER_S_PER_GPU - 1
    assert f"Both are optimistic, by {v3_gap * 100:.0f}-{v2_gap * 100:.0f}%" in _prose(VALIDATION)


def test_per_moe_layer_times():
    """docs/hardware-mode.md's per-MoE-layer table (cluster/layer_times.py) against DeepSeek's trace."""
    from dualsim.cluster.layer_times import moe_layer_times
    from dualsim.generators import generate
    from dualsim.sim.hardware_mode import hardware_setup

    profile, layout, _ = hardware_setup(generate("dualpipe", 16, 120), "h800", "deepseek-v3")
    t = moe_layer_times(layout, profile)
    table = _table(HARDWARE_MODE, ["per MoE layer, one micro-batch", "model (ms)",
                                   "DeepSeek measured (ms)", "error"])
    rows = {r[0]: [c.replace("−", "-") for c in r[1:]] for r in table}

    def ms(x: float) -> str:
        return f"{x * 1e3:.2f}"

    for name, model, parts in (("F (attention + MLP)", t.f, (t.attn_f, t.mlp_f)),
                               ("I, input gradient (attention + MLP)", t.i, (t.attn_i, t.mlp_i)),
                               ("W, weight gradient", t.w, ())):
        cell, measured, error = rows[name]
        assert cell == ms(model) + (f" ({ms(parts[0])} + {ms(parts[1])})" if parts else "")
        assert error == f"{model * 1e3 / float(measured.split()[0]) - 1:+.0%}"


def test_fb_against_deepseeks_trace(runs):
    """docs/hardware-mode.md: the median FB unit of DualPipe's rank 5 (4 + 4 MoE layers), static
    and dynamic SM sharing, against the 129 ms of DeepSeek's trace."""
    import statistics

    rows = {r[0]: [c.replace("−", "-") for c in r[1:]] for r in _table(
        HARDWARE_MODE, ["per MoE layer, one micro-batch", "model (ms)", "DeepSeek measured (ms)",
                        "error"])}
    for key, name in (("dualpipe static", "one FB of 4 + 4 layers, simulated (rank 5 of DualPipe "
                                          "R=16, the median of its FBs), `--sm-sharing static`"),
                      ("dualpipe", "the same FB with dynamic SM sharing (the default)")):
        r = runs[key]
        assert r.extra["layers_per_stage"][5] + r.extra["layers_per_stage"][10] == 8
        tl = r.timeline
        fb = tl[(tl["rank"] == 5) & tl["action"].str.startswith("(")]
        spans = fb.groupby("action").agg(start=("start", "min"), end=("end", "max"))
        median_ms = statistics.median((spans.end - spans.start) * 1e3)
        model, measured, error = rows[name]
        assert model == f"{median_ms:.1f}"
        assert error == f"{median_ms / float(measured) - 1:+.0%}"


def test_readme_quotes_the_runtimes_measurements():
    """The runtime's measured prediction errors the README and docs/validation.md quote are
    docs/runtime.md's tables."""
    runtime = ROOT / "docs" / "runtime.md"

    def pct(cell: str) -> float:
        return float(cell.replace("−", "-").rstrip("%"))

    def fmt(x: float, digits: int) -> str:
        return f"{x:+.{digits}f}%".replace("-", "−")

    same = {r[0]: pct(r[2]) for r in _table(runtime, ["schedule", "measured step", "error"])}
    lo, hi = min(same, key=same.get), max(same, key=same.get)
    readme = _prose(README)
    assert (f"between {fmt(same[lo], 1)} ({lo}) and {fmt(same[hi], 1)} ({hi}) across "
            f"{['eight', 'nine', 'ten'][len(same) - 8]} families") in readme
    cross = _table(runtime, ["launch", "measured step", "predicted from 1F1B's launch", "error",
                             "from its own calibration"])
    other, own = [pct(r[3]) for r in cross], [pct(r[4]) for r in cross]
    assert (f"cross-run error was {fmt(min(other), 1)} to {fmt(max(other), 1)} over "
            f"{['five', 'six', 'seven'][len(cross) - 5]} launches") in readme
    assert f"against {fmt(min(own), 1)} to {fmt(max(own), 1)} for each run predicted" in readme
    # bench_runtime's ratios against torch: the README quotes docs/runtime.md's table
    bench = _table(runtime, ["plan", "step time ratio", "CPU per step (dualsim / torch)"])
    for ep in (False, True):
        rows = [r for r in bench if ("--ep 2" in r[0]) == ep]
        quote = ", ".join(f"{r[0].split(',')[0]} {r[1]}" for r in rows)
        assert [r[0].split(",")[0] for r in rows] == ["1F1B", "ZB-V", "DualPipeV"]
        assert quote in readme
    for r in bench:  # "612 / 531 ms (1.15)": the ratio is the two CPU times'
        ours, theirs, ratio = (float(x) for x in re.findall(r"[\d.]+", r[2]))
        assert round(ours / theirs, 2) == ratio, r
    cpu = [float(r[2].split("(")[1].rstrip(")")) for r in bench if "--ep 2" in r[0]]
    extra = f"{round((min(cpu) - 1) * 100)}–{round((max(cpu) - 1) * 100)}% more CPU"
    assert extra in readme and extra in _prose(runtime)
    assert (f"with errors from {fmt(min(other), 1)} to {fmt(max(other), 1)}, against "
            f"{fmt(min(own), 1)} to {fmt(max(own), 1)} for each launch predicted from its own "
            "calibration") in _prose(VALIDATION)


def test_planner_bound_on_the_published_layout(runs):
    """docs/planner.md: the planner's step bound for DeepSeek-V3's published layout (unit_model)
    against the simulated step."""
    from dualsim.generators import generate
    from dualsim.sim.hardware_mode import hardware_setup
    from dualsim.sim.unit_model import ScheduleIndex, StepModel

    s = generate("dualpipe", 16, 120)
    profile, layout, _ = hardware_setup(s, "h800", "deepseek-v3")
    bound = StepModel(ScheduleIndex.of(s), profile, layout).lower_bound()
    step = runs["dualpipe"].extra["step_time_s"]
    assert bound <= step
    assert (f"the step's bound is {1 - bound / step:.1%} under the step ({bound:.2f} s vs "
            f"{step:.2f} s)") in _prose(ROOT / "docs" / "planner.md")


def test_half_the_link_bandwidth(runs):
    """docs/hardware-mode.md's reading of the what-if chart's middle panel at 0.5x: IB 25 and
    NVLink 80 GB/s (half the h800 profile's usable 50 and 160)."""
    cfg = _config(ib_gbps=25.0, nvlink_gbps=80.0)
    assert (cfg.profile.ib_bandwidth, cfg.profile.nvlink_bandwidth) == (25e9, 80e9)
    cost = {n: run(load_schedule(n, cfg, strict_chunks=False), cfg).extra["step_time_s"]
            - runs[n].extra["step_time_s"] for n in SCHEDULES}

    def span(names: list[str]) -> str:
        return f"{min(cost[n] for n in names):.1f}-{max(cost[n] for n in names):.1f}"

    assert (f"half the bandwidth (IB 25, NVLink 80 GB/s) costs ZB-V and 1F1B "
            f"{span(['zb-v', '1f1b'])} s and the FB schedules {span(FB_SCHEDULES)} s"
            in _prose(HARDWARE_MODE))
