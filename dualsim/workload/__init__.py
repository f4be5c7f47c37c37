"""Workloads: model presets (model.py), their per-token work (units.py) and their placement on a
pipeline (layout.py). The names most callers need are re-exported here."""

from dualsim.workload.layout import (LayerSlice, Layout, assign_layers, build_layout,
                                     check_parallel)
from dualsim.workload.model import (FP8_WITH_SCALES, MODEL_SCHEMA, RECOMPUTE_OPTIONS, Model,
                                    default_layout, list_models, load_model, parse_model)
from dualsim.workload.units import FLASH_BWD_FACTOR, Gemm, Piece, Unit, model_units

__all__ = ["FLASH_BWD_FACTOR", "FP8_WITH_SCALES", "Gemm", "LayerSlice", "Layout", "MODEL_SCHEMA",
           "Model", "Piece", "RECOMPUTE_OPTIONS", "Unit", "assign_layers", "build_layout",
           "check_parallel", "default_layout", "list_models", "load_model", "model_units",
           "parse_model"]
