"""Typer options shared by several commands (simulate, compare), defined once."""

from __future__ import annotations

import typer

RanksOpt = typer.Option(None, "--ranks", "-r", help="Pipeline ranks R (hardware mode: default from the model's layout).")
MbsOpt = typer.Option(None, "--microbatches", "-m", help="Micro-batches M per step.")
ChunksOpt = typer.Option(None, "--chunks", "-v", help="Stages per rank for interleaved and interleaved-overlap (default 2).")
CostsOpt = typer.Option(None, "--costs", help="Abstract costs per rank-worth of layers, e.g. F=1,I=1,W=1[,B=2][,FB=3]: F forward, I backward for inputs, W backward for weights; B a full (unsplit) backward, default I+W, run by GPipe, 1F1B, interleaved and DualPipe; FB an overlapped forward+backward pair, default F+B, run by DualPipe, DualPipeV and the -overlap families. Bubble = 1 - mean busy time / step; a B or FB the schedule never runs, or FB > F+B, is a warning.")
CommOpt = typer.Option(0.0, "--comm", help="Abstract transfer latency added to every cross-rank dependency.")
JsonOpt = typer.Option(False, "--json", help="Print one JSON object on stdout instead of a table.")
ProfileOpt = typer.Option(None, "--profile", help="Hardware profile name or TOML file (enables hardware mode).")
ModelOpt = typer.Option(None, "--model", help="Workload preset name, TOML file, or Hugging Face config.json (enables hardware mode).")
EpOpt = typer.Option(None, "--ep", help="Expert-parallel degree.")
GpusOpt = typer.Option(None, "--gpus", help="Total GPUs (data parallel = gpus / ranks).")
CommSmsOpt = typer.Option(None, "--comm-sms", help="SMs of the all-to-all kernels (DeepEP num_sms), held only while one runs.")
TokensOpt = typer.Option(None, "--microbatch-tokens", help="Tokens per micro-batch.")
IbOpt = typer.Option(None, "--ib-gbps", help="Usable InfiniBand bandwidth per GPU, GB/s.")
NvOpt = typer.Option(None, "--nvlink-gbps", help="Usable NVLink bandwidth per GPU, GB/s.")
PrecisionOpt = typer.Option(None, "--precision", help="GEMM precision fp8 or bf16 (default: the model preset's; a profile without FP8 runs bf16).")
GlobalBatchOpt = typer.Option(None, "--global-batch", help="Sequences per step; micro-batches per pipeline = N x sequence / (microbatch tokens x gpus / ranks). Default: the preset's M.")
SeqLenOpt = typer.Option(None, "--seq-len", help="Tokens per sequence, one sequence per micro-batch (default: the preset's; 4096 for a Hugging Face config).")
RecomputeOpt = typer.Option(None, "--recompute", help="Recomputation (and so what activations are stored): none, or a comma-separated list of rmsnorm, mla_up_proj, swiglu_output, full (default: the preset's; none for a Hugging Face config).")
ImbalanceOpt = typer.Option(None, "--routing-imbalance", help="Max/mean tokens received per GPU in the all-to-all (1 = balanced, the default).")
SmSharingOpt = typer.Option(None, "--sm-sharing", help="dynamic (default: comm kernels hold their SMs only while they run) or static (compute never gets the --comm-sms SMs, as DeepSeek's GEMMs).")
