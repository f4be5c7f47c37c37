"""--global-batch N (sequences per step) fixes the tokens per step: M follows from the GPUs."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from dualsim.cli import app
from dualsim.errors import ProfileError
from dualsim.workload.layout import microbatches_for_global_batch

runner = CliRunner()


def test_microbatches_per_pipeline() -> None:
    kw = dict(sequence=4096, microbatch_tokens=4096, ranks=16)
    assert microbatches_for_global_batch(15360, gpus=2048, **kw) == 120  # DeepSeek-V3
    assert microbatches_for_global_batch(15360, gpus=1024, **kw) == 240
    # two sequences per micro-batch halve M
    assert microbatches_for_global_batch(15360, sequence=4096, microbatch_tokens=8192,
                                         ranks=16, gpus=2048) == 60


def test_not_dividing_names_the_values_that_would() -> None:
    with pytest.raises(ProfileError) as e:
        microbatches_for_global_batch(1000, sequence=4096, microbatch_tokens=4096, ranks=16,
                                      gpus=2048)
    assert e.value.message == (
        "--global-batch 1000 (1000 x 4096 tokens) does not split into whole micro-batches of "
        "4096 tokens on each of the 128 pipelines (2048 GPUs / 16 ranks): use a multiple of 128 "
        "sequences, e.g. 896 or 1024")
    with pytest.raises(ProfileError, match="multiple of 64 sequences, e.g. 64$"):
        microbatches_for_global_batch(10, sequence=4096, microbatch_tokens=4096, ranks=16,
                                      gpus=1024)


def test_a_presets_batch_and_gpus_are_named_as_such() -> None:
    with pytest.raises(ProfileError) as e:
        microbatches_for_global_batch(1000, sequence=4096, microbatch_tokens=4096, ranks=16,
                                      gpus=2048, preset=("global_batch",))
    assert e.value.message == (
        "the model preset's global batch 1000 (1000 x 4096 tokens) does not split into whole "
        "micro-batches of 4096 tokens on each of the 128 pipelines (2048 GPUs / 16 ranks): pass "
        "--global-batch with a multiple of 128 sequences, e.g. 896 or 1024")
    with pytest.raises(ProfileError) as e:
        microbatches_for_global_batch(1024, sequence=4096, microbatch_tokens=4096, ranks=6,
                                      gpus=2048, preset=("gpus",))
    assert e.value.message == ("the model preset's GPU count 2048 is not divisible by the 6 "
                               "pipeline ranks; pass --gpus with a multiple of 6, or other --ranks")


def test_a_rule_broken_by_m_names_the_global_batches_that_keep_it() -> None:
    """M came from --global-batch, so the fix is a global batch: the nearest ones whose M the
    family takes (DualPipe: even, M >= 2R); a rule on R alone keeps its own fix."""
    from dualsim.errors import ScheduleError
    from dualsim.generators import accepts, check
    from dualsim.workload.layout import global_batch_rule

    kw = dict(sequence=4096, microbatch_tokens=4096, ranks=16, gpus=2048)  # 128 pipelines
    with pytest.raises(ScheduleError) as e:
        check("dualpipe", 16, 33)
    err = global_batch_rule(e.value, lambda m: accepts("dualpipe", 16, m), 4224, **kw)
    assert isinstance(err, ScheduleError) and err.cli == (
        "dualpipe needs an even number of micro-batches, got 33 (M from --global-batch 4224 on "
        "128 pipelines): use --global-batch 4096 (M=32) or 4352 (M=34)")
    with pytest.raises(ScheduleError) as e:
        check("zb-v", 16, 3)
    err = global_batch_rule(e.value, lambda m: accepts("zb-v", 16, m), 384, **kw)
    assert err.cli == ("zb-v needs M >= 2R-1 micro-batches (R=16 needs at least 31), got 3 (M "
                       "from --global-batch 384 on 128 pipelines): use --global-batch 3968 (M=31)")
    # two sequences per micro-batch on half the pipelines: again 128 sequences per micro-batch
    err = global_batch_rule(e.value, lambda m: accepts("zb-v", 16, m), 384,
                            **dict(kw, microbatch_tokens=8192, gpus=1024), preset=["global_batch"])
    assert err.cli == ("zb-v needs M >= 2R-1 micro-batches (R=16 needs at least 31), got 3 (M "
                       "from the model preset's global batch 384 on 64 pipelines): pass "
                       "--global-batch 3968 (M=31)")
    with pytest.raises(ScheduleError) as e:
        check("dualpipe", 7, 14)
    assert global_batch_rule(e.value, lambda m: accepts("dualpipe", 7, m), 4096, **kw) is e.value


def test_simulate_with_it_names_the_global_batch_not_microbatches() -> None:
    out = runner.invoke(app, ["simulate", "dualpipe", "--model", "small-moe", "--ranks", "4",
                              "--global-batch", "144"])
    assert (out.exit_code, out.stdout) == (1, "")
    assert out.stderr == ("error: dualpipe needs an even number of micro-batches, got 9 (M from "
                          "--global-batch 144 on 16 pipelines): use --global-batch 128 (M=8) or "
                          "160 (M=10)\n")
    out = runner.invoke(app, ["simulate", "1f1b", "--model", "small-moe", "--ranks", "3",
                              "--global-batch", "144"])
    assert out.stderr == ("error: the model preset's GPU count 64 is not divisible by the 3 "
                          "pipeline ranks; pass --gpus with a multiple of 3, or other --ranks\n")


def test_fixed_batch_scaling_keeps_the_tokens_per_step() -> None:
    """Done-when check of issue #8: half the GPUs, the same 62,914,560 tokens, M doubles."""
    out = runner.invoke(app, ["simulate", "dualpipe", "--profile", "h800", "--model",
                              "deepseek-v3", "--global-batch", "15360", "--gpus", "1024",
                              "--json"])
    assert out.exit_code == 0, out.stderr
    d = json.loads(out.stdout)
    assert d["tokens_per_step"] == 62_914_560 == 15360 * 4096
    assert d["microbatches"] == 240 and d["global_batch"] == 15360


def test_without_it_m_stays_the_presets() -> None:
    out = runner.invoke(app, ["simulate", "1f1b", "--profile", "h800", "--model", "small-moe",
                              "--gpus", "32", "--ep", "8", "--json"])
    d = json.loads(out.stdout)
    assert d["microbatches"] == 32  # the preset's 512 / (64 / 4), not re-derived for 32 GPUs
    assert d["global_batch"] == 256


@pytest.mark.parametrize("args,needle", [
    (["--global-batch", "1000"], "use a multiple of 16 sequences, e.g. 992 or 1008"),
    (["--global-batch", "512", "-m", "8"], "give one of them"),
    (["--global-batch", "0"], "must be a positive number of sequences"),
])
def test_cli_errors(args: list[str], needle: str) -> None:
    out = runner.invoke(app, ["simulate", "1f1b", "--model", "small-moe", *args])
    assert out.exit_code == 1 and out.stdout == ""
    first = out.stderr.splitlines()[0]
    assert first.startswith("error: ") and needle in first, first


def test_compare_takes_it_and_a_plan_must_agree(tmp_path) -> None:
    out = runner.invoke(app, ["compare", "1f1b", "gpipe", "--model", "small-moe",
                              "--global-batch", "256", "-o", str(tmp_path / "c"), "--json"])
    assert out.exit_code == 0, out.stderr
    d = json.loads(out.stdout)
    assert d["config"]["global_batch"] == 256 and d["config"]["microbatches"] == 16
    plan = tmp_path / "p.json"
    assert runner.invoke(app, ["emit", "1f1b", "-r", "4", "-m", "8", "-o", str(plan)]).exit_code == 0
    bad = runner.invoke(app, ["simulate", str(plan), "--model", "small-moe",
                              "--global-batch", "256"])
    assert bad.exit_code == 1
    assert "gives M=16 micro-batches per pipeline at R=4, but the plan file has M=8" in bad.stderr
    ok = runner.invoke(app, ["simulate", str(plan), "--model", "small-moe",
                             "--global-batch", "128", "--json"])
    assert ok.exit_code == 0, ok.stderr
    assert json.loads(ok.stdout)["global_batch"] == 128


def test_gpus_the_ranks_do_not_divide_read_the_same_with_or_without_global_batch() -> None:
    line = ("error: --gpus 3 is not divisible by the 16 pipeline ranks; use a multiple of 16, "
            "or other --ranks\n")
    for extra in ([], ["--global-batch", "128"]):
        res = runner.invoke(app, ["simulate", "dualpipe", "--model", "deepseek-v3", "--gpus", "3",
                                  *extra])
        assert res.exit_code == 1 and res.stderr == line, extra
