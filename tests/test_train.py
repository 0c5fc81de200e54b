"""The training program end to end (subprocesses on 1 CPU device) and its host-side pieces.

Every subprocess run uses configs/cpu_debug.py with dummy data and the same total_steps, so they
share one compiled train step through a session-wide compilation cache.
"""

import json
import math
import os
import shutil
import signal
from unittest import mock

import chex
import jax
import numpy as np
import pytest
import test_train_runner as runner

from configs import cpu_debug
from wavlejepa import cli, model, pretrained, reporting, stopping


@pytest.fixture(scope="session")
def env(tmp_path_factory):
    return runner.subprocess_env(tmp_path_factory.getbasetemp() / "jax_cache")


def test_cli_trains_logs_checkpoints_and_a_rerun_of_the_finished_run_does_nothing(tmp_path, env):
    workdir = tmp_path / "run"
    args = runner.DEBUG + [f"--workdir={workdir}"]  # The README's command.
    log = runner.run(args, env, tmp_path / "first.log", main_module=True)

    assert "ETA" in log and "steps/s" in log  # CLU ReportProgress.
    assert list(workdir.glob("events.out.tfevents.*"))  # TensorBoard.
    train_rows, eval_rows = runner.records(workdir, "train"), runner.records(workdir, "eval")
    assert [r["step"] for r in train_rows] == [5, 10, 15, 20]
    assert [r["step"] for r in eval_rows] == [0, 10, 20]  # 0: the initial params.
    for key in ("loss", "invariance", "sigreg", "grad_norm", "learning_rate", "context_frames"):
        assert all(math.isfinite(r[key]) for r in train_rows), key
    assert "eval_loss" in eval_rows[0]
    for r in eval_rows:  # Effective ranks: at least 1, at most the width (64 and 64 at tiny).
        assert 1.0 <= r["eval_encoder_rank"] <= 64 and 1.0 <= r["eval_projected_rank"] <= 64
    assert runner.committed_steps(workdir / "checkpoints") == [10, 20]
    assert len(runner.committed_steps(workdir / "best")) == 1  # config.keep_best.

    before = (workdir / "metrics.jsonl").read_text()
    log = runner.run(args, env, tmp_path / "second.log", main_module=True)
    assert "already holds step 20 of total_steps=20: the run is complete" in log
    assert (workdir / "metrics.jsonl").read_text() == before  # Nothing left to train.

    # What the embedding API reads: params and config from the workdir (its best checkpoint).
    params, config = pretrained.load(str(workdir))
    expected = jax.eval_shape(lambda k: model.init(k, config.model), jax.random.PRNGKey(0))
    chex.assert_trees_all_equal_shapes_and_dtypes(params, expected)
    assert config.model.to_dict() == cpu_debug.get_config().model.to_dict()


def test_resume_after_kill_9_is_bit_exact(tmp_path, env):
    flags = runner.DEBUG + ["--config.log_every_steps=1", "--config.checkpoint_every_steps=5"]
    reference = tmp_path / "reference"
    runner.run(flags + [f"--workdir={reference}"], env, tmp_path / "reference.log")

    # Killed mid-run, as batch 13 is drawn (once checkpoint 10 is committed).
    killed = tmp_path / "killed"
    kill = ["--fault=sigkill", "--fault_at=13", "--kill_after_checkpoint=10"]
    runner.run(
        flags + kill + [f"--workdir={killed}"],
        env,
        tmp_path / "killed.log",
        expect_rc=-signal.SIGKILL,
    )
    assert runner.committed_steps(killed / "checkpoints") == [5, 10]
    assert runner.records(killed)[-1]["step"] == 11  # Past the checkpoint (read one step late).
    # What a kill during a save leaves: steps under orbax's tmp names, one complete but for the
    # rename (a resume must not take it: it would skip steps 11-14).
    shutil.copytree(killed / "checkpoints/10", killed / "checkpoints/15.orbax-checkpoint-tmp-99")
    (killed / "checkpoints/20.orbax-checkpoint-tmp-1234").mkdir()

    # Resumed, then stopped by a SIGTERM that also ended the data workers as batch 14 was due.
    stop = ["--fault=sigterm_workers_died", "--fault_at=4"]
    log = runner.run(flags + stop + [f"--workdir={killed}"], env, tmp_path / "resumed.log")
    assert "Resuming from the checkpoint of step 10" in log
    assert "The data workers stopped too; saving step 13." in log
    assert runner.committed_steps(killed / "checkpoints") == [5, 10, 13]

    log = runner.run(flags + [f"--workdir={killed}"], env, tmp_path / "resumed_again.log")
    assert "Resuming from the checkpoint of step 13" in log
    assert runner.records(killed) == runner.records(reference)  # Every value, bit for bit.
    assert runner.committed_steps(killed / "checkpoints") == [13, 15, 20]


def test_sigterm_finishes_the_step_saves_and_exits_0(tmp_path, env):
    workdir = tmp_path / "run"
    args = runner.DEBUG + [f"--workdir={workdir}", "--fault=sigterm", "--fault_at=7"]
    log = runner.run(args, env, tmp_path / "run.log")  # Exit code 0.
    assert "Got SIGTERM: stopping after this step" in log
    assert "Stopped at step 7; its checkpoint is saved." in log
    assert runner.committed_steps(workdir / "checkpoints") == [7]  # The step in flight.
    assert max(r["step"] for r in runner.records(workdir)) <= 7


def test_ctrl_c_with_data_workers_saves_and_exits_0(tmp_path, env):
    # SIGINT to the whole process group, as a terminal sends it: grain's worker processes die
    # with it, and the trainer saves the last step it took instead.
    workdir = tmp_path / "run"
    args = runner.DEBUG + [f"--workdir={workdir}", "--config.dataset.num_workers=1",
                           "--fault=ctrl_c", "--fault_at=7"]  # fmt: skip
    log = runner.run(args, env, tmp_path / "run.log")  # Exit code 0.
    assert "Got SIGINT: stopping after this step" in log
    (saved,) = runner.committed_steps(workdir / "checkpoints")
    assert saved in (6, 7)  # 6 if batch 7 was lost with the workers, 7 if it was already in.
    assert max(r["step"] for r in runner.records(workdir)) <= saved


def test_nan_loss_stops_without_overwriting_the_good_checkpoint(tmp_path, env):
    workdir = tmp_path / "run"
    args = runner.DEBUG + [
        f"--workdir={workdir}",
        "--config.checkpoint_every_steps=5",
        "--fault=nan",
        "--fault_at=10",
    ]
    log = runner.run(args, env, tmp_path / "run.log", expect_rc=cli.NON_FINITE)
    assert "error: Non-finite" in log and "loss=nan" in log and "at step 10" in log
    assert "Traceback" not in log
    # Step 10 was due a checkpoint and an eval: neither happened.
    assert runner.committed_steps(workdir / "checkpoints") == [5]
    assert runner.committed_steps(workdir / "best") == []
    params, _ = pretrained.load(str(workdir / "checkpoints"))
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))


def test_health_warnings_name_the_cause():
    # 8 crops x 50 frames: a collapsed batch scores 160 (test_sigreg), the warning 0.25 of it.
    config = cpu_debug.get_config()
    assert reporting.health_warnings(6, {"loss": 1.0, "sigreg": 3.0}, 0.9, config) == []
    (spike,) = reporting.health_warnings(6, {"loss": 1.0, "sigreg": 100.0}, None, config)
    assert "config.health.sigreg_collapse_fraction" in spike and "optimizer.peak_lr" in spike
    # During warm-up (5 steps) the projector's first outputs are near collapse by construction.
    assert reporting.health_warnings(5, {"loss": 1.0, "sigreg": 100.0}, None, config) == []
    (jump,) = reporting.health_warnings(7, {"loss": 4.0, "sigreg": 3.0}, 1.0, config)
    assert "at step 7" in jump and "optimizer.peak_lr" in jump


def test_rank_warning_names_the_baseline_and_the_fix():
    config = cpu_debug.get_config()
    config.health.min_rank_fraction = 0.25
    assert reporting.rank_warnings(10, 10.0, 40.0, config) == []  # Exactly the share: fine.
    (warning,) = reporting.rank_warnings(10, 9.9, 40.0, config)
    assert "9.9 at step 10" in warning and "first eval's 40" in warning
    assert "config.health.min_rank_fraction=0.25" in warning and "optimizer.peak_lr" in warning
    assert "\n" not in warning


def test_rank_baseline_is_the_first_eval_even_after_resume(tmp_path):
    config = cpu_debug.get_config()
    config.health.min_rank_fraction = 0.25
    with mock.patch.object(reporting.logging, "warning") as warn:
        reporter = reporting.Reporter(tmp_path, config, start_step=0)
        reporter.write_eval(0, {"loss": 1.0, "encoder_rank": 40.0})
        reporter.write_eval(10, {"loss": 1.0, "encoder_rank": 11.0})
        reporter.close()
        assert warn.call_count == 0
        # Resumed at step 10: the baseline is step 0's rank, read back from metrics.jsonl.
        reporter = reporting.Reporter(tmp_path, config, start_step=10)
        reporter.write_eval(20, {"loss": 1.0, "encoder_rank": 9.0})
        reporter.close()
    (call,) = warn.call_args_list
    assert "9 at step 20" in call.args[0] and "first eval's 40" in call.args[0]
    first = runner.records(tmp_path, "eval")[0]
    assert first["step"] == 0 and first["eval_encoder_rank"] == 40.0


def test_check_finite_names_the_step_and_the_metric():
    reporting.check_finite(3, {"loss": 1.0, "grad_norm": 2.0})
    with pytest.raises(FloatingPointError, match=r"grad_norm=inf at step 3"):
        reporting.check_finite(3, {"loss": 1.0, "grad_norm": float("inf")})


def test_rewind_keeps_steps_up_to_the_checkpoint_and_drops_cut_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"step": s, "split": "train"}) for s in (5, 10, 15)]
    path.write_text("\n".join(lines) + '\n{"step": 2')
    reporting._rewind(path, 10)
    assert path.read_text() == "\n".join(lines[:2]) + "\n"


def test_second_sigint_exits_at_once():
    exits = []
    with stopping.Stopper() as stop:
        assert signal.getsignal(signal.SIGTERM).__self__ is stop
        with mock.patch.object(os, "_exit", exits.append):
            stop._handle(signal.SIGTERM, None)
            assert stop.requested and exits == []
            stop._handle(signal.SIGINT, None)
    assert exits == [128 + signal.SIGINT]
    assert getattr(signal.getsignal(signal.SIGTERM), "__self__", None) is not stop


def test_wandb_is_optional(tmp_path):
    config = cpu_debug.get_config()
    assert reporting._wandb_run(config, tmp_path) is None  # No project set.
    config.wandb.project = "wavlejepa"
    with mock.patch.dict("sys.modules", {"wandb": None}):  # Not installed: a warning, no error.
        assert reporting._wandb_run(config, tmp_path) is None
