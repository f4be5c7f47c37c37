"""The runtime: executes a plan on torch.distributed and checks it against a reference.

Model and maths
- :mod:`net`         the MoE transformer, cut into seeded layer slices (experts shardable)
- :mod:`moe`         routing (top-k, capacity rule or dropless) and expert-parallel dispatch plans
- :mod:`wgrad`       the I/W split (weight gradients deferred, nothing recomputed)
- :mod:`reference`   the single-process reference step and the shared optimizer

One process
- :mod:`interpreter` a process's action loop, data flow and timeline records
- :mod:`stages`      how a unit computes: whole slices, or pieces with all-to-all (EP)
- :mod:`pieces`      one (stage, micro-batch) pass run piece by piece
- :mod:`chains`      a slice's forward and backward piece chains (no torch)
- :mod:`overlap`     a unit's pieces on compute and communication streams (shared order)
- :mod:`a2a`         the expert-parallel all-to-all (gloo threads, or a CUDA stream + events)
- :mod:`p2p`         pipeline transfers and the launch's process groups
- :mod:`clock`       step-relative times on the host or on CUDA events
- :mod:`profiling`   torch.profiler capture of the last step, merged over processes

A run
- :mod:`options`     RunOptions and the tests' Fault option (shared types)
- :mod:`records`     what processes report (no torch import)
- :mod:`progress`    process layout (ranks x ep) and the states the watchdog reads (no torch)
- :mod:`supervisor`  local spawn and the watchdog (no torch import)
- :mod:`worker`      one process: process group, plans, reports; the torchrun entry
- :mod:`engines`     dualsim's interpreter or torch.distributed.pipelining (:mod:`torch_baseline`)
- :mod:`budget`      the up-front memory estimate
- :mod:`verify`      gradients / weights / loss against the reference
- :mod:`measure`     Timeline, step times, all-to-all figures, sim vs measured (no torch)
- :mod:`session`     plan + options -> the result of ``dualsim run``
- :mod:`gpu_check`   scripts/gpu_check.sh's line checks from a run's files (no torch)

torch is imported only inside this package (and by the torch CSV test), never by planning code.
"""
