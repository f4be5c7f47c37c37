"""The runtime: executes a plan on torch.distributed and checks it against a reference.

- :mod:`model`       the MoE transformer, cut into seeded layer slices
- :mod:`wgrad`       the I/W split (weight gradients deferred, nothing recomputed)
- :mod:`reference`   the single-process reference step and the shared optimizer
- :mod:`comm`        point-to-point transfers (on NCCL, one process group per direction)
- :mod:`interpreter` one rank's action loop and its timeline records
- :mod:`launcher`    local spawn with a watchdog, or one rank under torchrun
- :mod:`verify`      gradients / weights / loss against the reference
- :mod:`measure`     Timeline, step times, and the calibrated sim-vs-measured comparison
- :mod:`session`     plan + options -> the result of ``dualsim run``

torch is imported only inside this package (and by the torch CSV test), never by planning code.
"""
