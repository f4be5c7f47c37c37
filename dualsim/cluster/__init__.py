"""The modelled cluster: hardware profiles (profile.py) and what work costs on them.

``compute.py`` turns a piece's kernels into seconds (GEMMs by shape through ``gemm.py``, whose
parameters ``gemm_fit.py`` fits to DeepGEMM's measured table), ``comm.py`` turns all-to-all and
pipeline transfers into flows on a GPU's links, ``layer_times.py`` gives one MoE layer's
per-piece times (the quantities DeepSeek's trace measures).
"""
