"""Calibration from PyTorch profiler traces (`dualsim calibrate`).

- :mod:`trace`   read a Chrome trace JSON (torch.profiler / Kineto), link every GPU kernel to
  the CPU call that launched it, and attribute kernels to the annotated ranges (record_function)
  whose time span holds that launch
- :mod:`pieces`  per-layer GPU time of each model piece (attn, mlp, dispatch, combine; F, B, W)
  from the piece ranges, split by kernel class (attention core, all-to-all data, ...)
- :mod:`fit`     rows measured vs. modelled, the bounded least-squares fit of a profile's
  parameters on the fitted rows, and the held-out (predicted) rows
- :mod:`profile_toml`  a complete profile TOML with the fitted numbers and their sources
- :mod:`runtime_trace`  per-stage abstract costs (F, I, W, B, FB, latency) from a trace written
  by ``dualsim run --profile-trace``

Nothing here imports torch; the trace is plain JSON.
"""
