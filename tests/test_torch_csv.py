"""torch CSV export: torch 2.13's private loader reads it, and training on it matches the reference.

``_PipelineScheduleRuntime._load_csv`` and ``_Action.from_str`` are private torch APIs: these
tests pin the behaviour dualsim relies on.
"""

from __future__ import annotations

import pytest

from dualsim.errors import ScheduleError
from dualsim.generators import generate
from dualsim.lower import lower
from dualsim.torch_csv import to_torch_csv

SINGLE_CHAIN = [("1f1b", 4), ("zb-h1", 4), ("zb-h2", 4), ("interleaved", 4), ("zb-v", 4),
                ("dualpipev", 4), ("1f1b-overlap", 4), ("interleaved-overlap", 4)]


def test_rows_cells_and_overlapped_pairs() -> None:
    text = to_torch_csv(generate("dualpipev", 2, 4))
    rows = [line.split(",") for line in text.strip().split("\n")]
    assert len(rows) == 2
    assert rows[0][:3] == ["0F0", "0F1", "0F2"]
    assert "(0F3;3B1)OVERLAP_F_B" in rows[0]
    assert not any("SEND" in c or "RECV" in c for r in rows for c in r)


def test_lowered_plan_exports_its_compute_actions_only() -> None:
    plan = generate("zb-h1", 2, 4)
    assert to_torch_csv(lower(plan)) == to_torch_csv(plan)


def test_dualpipe_is_refused_with_the_reason() -> None:
    with pytest.raises(ScheduleError, match="2 chains.*dualpipev"):
        to_torch_csv(generate("dualpipe", 2, 4))


@pytest.mark.parametrize("family,m", SINGLE_CHAIN)
def test_torch_parses_every_cell_back(family: str, m: int) -> None:
    schedules = pytest.importorskip("torch.distributed.pipelining.schedules")
    plan = generate(family, 2, m)
    rows = [line.split(",") for line in to_torch_csv(plan).strip().split("\n")]
    assert [len(r) for r in rows] == [len(actions) for actions in plan.actions]
    for row, actions in zip(rows, plan.actions):
        for cell, a in zip(row, actions):
            t = schedules._Action.from_str(cell)
            if a.pair is None:
                assert (t.stage_index, t.computation_type.value, t.microbatch_index) == \
                    (a.stage, a.op.value, a.microbatch)
            else:
                assert t.computation_type.value == "OVERLAP_F_B"
                assert [str(x) for x in t.sub_actions] == [str(a.forward), str(a.backward)]


@pytest.mark.runtime
def test_torch_trains_the_csv_to_the_reference_gradients() -> None:
    pytest.importorskip("torch")
    from dualsim.runtime.options import RunOptions
    from dualsim.runtime.supervisor import launch_local
    from dualsim.runtime.verify import check_against_reference

    families = [("1f1b", 4), ("zb-v", 4), ("dualpipev", 4), ("interleaved", 4),
                ("1f1b-overlap", 4), ("interleaved-overlap", 4)]
    plans = [lower(generate(f, 2, m)) for f, m in families]
    options = RunOptions(steps=2, engine="torch")
    for (name, _), plan, reports in zip(families, plans, launch_local(plans, options)):
        r = check_against_reference(plan, options, reports)
        assert r["max_abs_grad_diff"] <= 1e-12, name
        assert r["max_abs_weight_diff"] <= 1e-12, name
        assert abs(r["loss"] - r["reference_loss"]) <= 1e-12, name


@pytest.mark.runtime
def test_torch_with_expert_parallelism_trains_to_the_reference_gradients() -> None:
    """The benchmark's torch baseline with --ep 2: all-to-alls inside the stage modules, one
    pipeline group per expert-parallel index, dense gradients summed over the rank. DualPipeV
    and interleaved hung or aborted while a process whose experts got no rows skipped a
    backward all-to-all that its peer ran."""
    pytest.importorskip("torch")
    from dualsim.runtime.net import NetConfig
    from dualsim.runtime.options import RunOptions
    from dualsim.runtime.supervisor import launch_local
    from dualsim.runtime.verify import check_against_reference

    families = [("1f1b", 4), ("zb-v", 4), ("dualpipev", 4), ("interleaved", 4)]
    plans = [lower(generate(f, 2, m)) for f, m in families]
    # torch's first step infers shapes from a real forward and backward; on this model's
    # inference data one process's experts get no rows (the hang's trigger)
    cfg = NetConfig(dtype="float64", hidden=128, expert_hidden=128, heads=4, seq=64,
                    microbatch_size=4, vocab=128)
    options = RunOptions(cfg, steps=2, engine="torch", ep=2)
    for (name, _), plan, reports in zip(families, plans, launch_local(plans, options)):
        r = check_against_reference(plan, options, reports)
        # 4 processes, each its slices' dense tensors and half the experts (1F1B: 4 x 13)
        assert r["tensors_checked"] == (52 if name == "1f1b" else 96), name
        assert r["max_abs_grad_diff"] <= 1e-12, name
        assert r["max_abs_weight_diff"] <= 1e-12, name
        assert abs(r["loss"] - r["reference_loss"]) <= 1e-12, name
